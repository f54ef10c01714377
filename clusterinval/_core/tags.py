"""Tags: an index of cache keys by tag, laid out so that it is correct on a cluster. Pure logic.

A tag's member set lives in one slot, fixed by a hash tag on the tag's name; its members live
anywhere. Invalidating a tag first *takes* the set: one script renames it to a per-run key in the
same slot (atomic: a key tagged after the take lands in a fresh set and survives), and registers
that key in the tag's *takes* set, so a run that dies half-way leaves its members where the next
run of the tag finds them. All three keys share the tag's hash tag, hence its slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from clusterinval._core.planning import as_list, to_bytes_key
from clusterinval._core.slots import key_slot
from clusterinval.errors import InvalidInputError

__all__ = [
    "MAX_TAGS_PER_CALL", "MAX_TAG_BYTES", "TAG_KEY_PREFIX", "merged_ttl", "set_key", "tag_slot",
    "taken_key", "takes_key", "validate_tags",
]

TAG_KEY_PREFIX = b"clusterinval:tag:"
MAX_TAG_BYTES = 256
MAX_TAGS_PER_CALL = 10_000


def validate_tags(tags: Iterable[object] | None) -> tuple[bytes, ...]:
    """Tags as bytes, duplicates dropped, in order; a clear error for anything unusable."""
    raw_tags = as_list("tags", tags, MAX_TAGS_PER_CALL)
    if len(raw_tags) > MAX_TAGS_PER_CALL:
        raise InvalidInputError(f"more than {MAX_TAGS_PER_CALL} tags in one call")
    out: dict[bytes, None] = {}
    for raw in raw_tags:
        if not isinstance(raw, str | bytes):
            raise InvalidInputError(f"tags must be str or bytes, got {type(raw).__name__}: "
                                    f"{raw!r:.80}")
        try:
            tag = to_bytes_key(raw)
        except InvalidInputError:
            raise InvalidInputError("a tag cannot be empty") from None
        if len(tag) > MAX_TAG_BYTES:
            raise InvalidInputError(f"tag {raw!r:.60} is {len(tag)} bytes; the limit is "
                                    f"{MAX_TAG_BYTES}")
        if b"{" in tag or b"}" in tag:
            # The tag is the hash tag of its index keys: a brace would cut it short, and tags
            # that differ after the brace would share one index.
            raise InvalidInputError(f"tag {raw!r:.60} contains '{{' or '}}'; tags cannot")
        out[tag] = None
    return tuple(out)


def set_key(tag: bytes) -> bytes:
    """The key of ``tag``'s member set."""
    return TAG_KEY_PREFIX + b"{" + tag + b"}"


def takes_key(tag: bytes) -> bytes:
    """The key listing ``tag``'s sets taken by runs that have not finished them."""
    return set_key(tag) + b":takes"


def taken_key(tag: bytes, run_id: bytes) -> bytes:
    """Where one run moves ``tag``'s member set."""
    return set_key(tag) + b":taken:" + run_id


def tag_slot(tag: bytes) -> int:
    """The slot of every index key of ``tag``."""
    return key_slot(set_key(tag))


def merged_ttl(ttls: Sequence[int]) -> int | None:
    """The TTL (ms) an index set needs for members with these PTTL replies.

    ``None``: a member lives forever, so must the set. Keys that do not exist (-2) need nothing;
    when none exists the result is 0 (nothing to index).
    """
    longest = 0
    for ttl in ttls:
        if ttl == -1:
            return None
        longest = max(longest, ttl)
    return longest
