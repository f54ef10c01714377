"""Turn a call's keys and patterns into a plan: exact keys, and the scan passes that cover the rest.

Pure logic, no I/O. The plan is where the engine's shortcuts are decided:

* a pattern with no metacharacter is an exact key (no scan);
* a pattern whose hash tag fixes its slot is scanned on that slot only;
* a pattern made redundant by a broader one (``user:*`` covers ``user:1:*``) is dropped;
* patterns sharing a literal prefix share one SCAN pass (``MATCH prefix*``, then the library's own
  Redis-exact glob decides per key), since one pass over a node's keyspace is cheaper than several.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice

from clusterinval._core.glob import Glob, common_literal_prefix, compile_pattern, escape, subsumes
from clusterinval._core.slots import SLOT_COUNT, SlotSet
from clusterinval.errors import (
    InvalidInputError,
    InvalidKeyError,
    InvalidOperationNameError,
    InvalidPatternError,
)

__all__ = [
    "MAX_PATTERNS_PER_CALL",
    "Plan",
    "ScanPass",
    "as_list",
    "is_short_identifier",
    "make_plan",
    "shared_passes",
    "to_bytes_key",
    "unique_keys",
    "validate_operation_name",
]

# Patterns one call may carry: each is matched against every scanned key of its pass.
MAX_PATTERNS_PER_CALL = 10_000

_OPERATION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")

# A shared pass is only worth it when its MATCH still narrows the scan to the patterns' area.
_MIN_SHARED_PREFIX = 2


@dataclass(frozen=True, slots=True)
class ScanPass:
    """One SCAN pass: what to send as MATCH, which globs decide per key, which slots it must cover.

    ``globs`` holds every pattern the pass serves; when it has exactly one glob and
    ``match == globs[0].pattern`` the server's MATCH is already exact and no client check is needed.
    """

    match: bytes
    globs: tuple[Glob, ...]
    slots: SlotSet = field(compare=False)
    # Index into the caller's pattern list for each glob (for per-pattern figures).
    origins: tuple[int, ...] = ()

    @property
    def server_exact(self) -> bool:
        """True when SCAN's MATCH alone decides membership."""
        return len(self.globs) == 1 and self.match == self.globs[0].pattern

    @property
    def single_slot(self) -> int | None:
        """The one slot this pass covers, when its patterns fix it."""
        if len(self.slots) == 1:
            return next(iter(self.slots))
        return None


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one invalidation will do."""

    keys: tuple[bytes, ...]
    passes: tuple[ScanPass, ...]
    patterns: tuple[bytes, ...]
    # Keys named by a literal pattern, with the pattern's index (for per-pattern figures).
    literal_origins: dict[bytes, int] = field(default_factory=dict, compare=False)

    @property
    def slots_to_cover(self) -> SlotSet:
        """Union of the slots the scan passes must cover."""
        out = SlotSet()
        for p in self.passes:
            out.update(p.slots)
        return out


def is_short_identifier(name: object) -> bool:
    """True for a short identifier usable as a metric label value."""
    return isinstance(name, str) and _OPERATION_NAME.fullmatch(name) is not None


def validate_operation_name(name: object) -> str:
    """``name`` if it is a short identifier usable as a metric label, else a clear error."""
    if not isinstance(name, str) or not is_short_identifier(name):
        raise InvalidOperationNameError(
            f"operation_name must be a short identifier (letters, digits, _ . : -, starting with a "
            f"letter or _, at most 64 characters), got {name!r}; put ids in keys, not in the name"
        )
    return name


def to_bytes_key(key: object) -> bytes:
    """A key as bytes (``str`` is UTF-8 encoded); anything else is an error."""
    if isinstance(key, bytes):
        out = key
    elif isinstance(key, str):
        try:
            # surrogateescape: a str decoded from non-UTF-8 bytes that way gets its bytes back.
            out = key.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise InvalidKeyError(
                f"key {key!r:.80} holds a lone surrogate and has no byte form; pass bytes"
            ) from None
    elif isinstance(key, bytearray | memoryview):
        out = bytes(key)
    else:
        raise InvalidKeyError(f"keys must be str or bytes, got {type(key).__name__}: {key!r:.80}")
    if not out:
        raise InvalidKeyError("empty key: Redis keys cannot be empty")
    return out


def unique_keys(raw: list[object]) -> dict[bytes, None]:
    """Every key as bytes, duplicates dropped, in order; fast passes for plain ``str``/``bytes``."""
    # Callers pass lists of hundreds of thousands of keys. A list of str (the usual case) is
    # encoded by one C-level map with strict UTF-8; anything else (bytes, mixed types, lone
    # surrogates) takes the per-key checks, which raise the precise error where one is due.
    try:
        return dict.fromkeys(map(str.encode, raw))  # type: ignore[arg-type]
    except (TypeError, UnicodeEncodeError):
        pass
    try:
        return dict.fromkeys(
            [k.encode() if type(k) is str else k if type(k) is bytes else to_bytes_key(k)
             for k in raw])
    except UnicodeEncodeError:
        return dict.fromkeys([to_bytes_key(k) for k in raw])


def as_list(name: str, value: object, limit: int) -> list[object]:
    """``value`` as a list; reading stops past ``limit`` items, so an endless iterator is safe."""
    if value is None:
        return []
    if isinstance(value, str | bytes):
        raise InvalidInputError(
            f"{name} must be a list of strings, not a single {type(value).__name__}; "
            f"wrap it: {name}=[{value!r:.60}]"
        )
    if not isinstance(value, Iterable):
        raise InvalidInputError(f"{name} must be a list, got {type(value).__name__}")
    if isinstance(value, list | tuple):
        return list(value)
    return list(islice(value, limit + 1))


def make_plan(
    keys: Iterable[object] | None,
    patterns: Iterable[object] | None,
    *,
    allow_match_all: bool = False,
    max_keys: int = 1_000_000,
    allow_empty: bool = False,
) -> Plan:
    """Validate a call's arguments and decide how to serve them."""
    if type(allow_match_all) is not bool:
        raise InvalidInputError(
            f"allow_match_all must be True or False, got {allow_match_all!r}")
    raw_keys = as_list("keys", keys, max_keys)
    raw_patterns = as_list("patterns", patterns, MAX_PATTERNS_PER_CALL)
    if not raw_keys and not raw_patterns and not allow_empty:
        raise InvalidInputError("nothing to invalidate: pass keys=[...] and/or patterns=[...]")
    if len(raw_keys) > max_keys:
        raise InvalidInputError(
            f"more than max_keys_per_call={max_keys} keys in one call; split the call"
        )
    if len(raw_patterns) > MAX_PATTERNS_PER_CALL:
        raise InvalidInputError(
            f"more than {MAX_PATTERNS_PER_CALL} patterns in one call; split the call, or use "
            "broader patterns"
        )
    exact = unique_keys(raw_keys)
    if b"" in exact:
        raise InvalidKeyError("empty key: Redis keys cannot be empty")
    if not raw_patterns:
        return Plan(keys=tuple(exact), passes=(), patterns=())  # keys only: the common call

    globs: list[tuple[int, Glob]] = []
    pattern_bytes: list[bytes] = []
    literal_origins: dict[bytes, int] = {}
    for i, raw in enumerate(raw_patterns):
        if not isinstance(raw, str | bytes):
            raise InvalidPatternError(
                f"patterns must be str or bytes, got {type(raw).__name__}: {raw!r:.80}"
            )
        glob = compile_pattern(raw)
        pattern_bytes.append(glob.pattern)
        if glob.unconstrained and not allow_match_all:
            shown = glob.pattern.decode("utf-8", "backslashreplace")
            raise InvalidPatternError(
                f"pattern {shown!r} has no literal part and matches every key in the cluster; "
                "pass allow_match_all=True if you really mean to empty it",
                glob.pattern,
            )
        if glob.is_literal and glob.literal is not None:
            literal_origins.setdefault(glob.literal, i)
            continue
        globs.append((i, glob))

    for literal in literal_origins:
        exact.pop(literal, None)  # served on its own, for an exact per-pattern figure
    return Plan(
        keys=tuple(exact),
        passes=tuple(_plan_passes(globs)),
        patterns=tuple(pattern_bytes),
        literal_origins=literal_origins,
    )


def _drop_subsumed(globs: Sequence[tuple[int, Glob]]) -> list[tuple[int, Glob]]:
    kept: list[tuple[int, Glob]] = []
    for i, g in globs:
        if any(g.pattern == k.pattern for _, k in kept):
            continue
        if any(subsumes(k, g) for _, k in kept):
            continue
        kept = [(j, k) for j, k in kept if not subsumes(g, k)]
        kept.append((i, g))
    return kept


def _plan_passes(globs: Sequence[tuple[int, Glob]]) -> list[ScanPass]:
    kept = _drop_subsumed(globs)
    passes: list[ScanPass] = []

    # Slot-fixed patterns: one pass per slot, on that slot only.
    by_slot: dict[int, list[tuple[int, Glob]]] = {}
    free: list[tuple[int, Glob]] = []
    for i, g in kept:
        if g.slot is not None:
            by_slot.setdefault(g.slot, []).append((i, g))
        else:
            free.append((i, g))
    for slot, members in sorted(by_slot.items()):
        passes.append(_pass(members, SlotSet([slot])))
    passes.extend(_prefix_groups(free))
    return passes


def _prefix_groups(free: Sequence[tuple[int, Glob]]) -> list[ScanPass]:
    """Full-keyspace passes for ``free``, patterns grouped by shared literal prefix."""
    groups: list[list[tuple[int, Glob]]] = []
    for item in sorted(free, key=lambda ig: ig[1].literal_prefix):
        if groups:
            candidate = groups[-1] + [item]
            prefix = common_literal_prefix([g for _, g in candidate])
            if len(prefix) >= _MIN_SHARED_PREFIX:
                groups[-1] = candidate
                continue
        groups.append([item])
    full = SlotSet.full()
    return [_pass(members, full.copy()) for members in groups]


def shared_passes(globs: Sequence[tuple[int, Glob]]) -> list[ScanPass]:
    """Full-keyspace passes serving several callers' patterns (none dropped as subsumed).

    Every prefix pattern joins one pass: a slot walk reads each slot whole whatever the prefixes,
    so one walk serves them all. The others are grouped by shared literal prefix, as in a plan.
    """
    prefixes = [ig for ig in globs if ig[1].prefix_only]
    others = [ig for ig in globs if not ig[1].prefix_only]
    passes = [_pass(prefixes, SlotSet.full())] if prefixes else []
    passes.extend(_prefix_groups(others))
    return passes


def _pass(members: Sequence[tuple[int, Glob]], slots: SlotSet) -> ScanPass:
    globs = tuple(g for _, g in members)
    origins = tuple(i for i, _ in members)
    # One pattern is sent as is; several share MATCH on their common prefix (then each key is
    # checked against each glob here).
    match = globs[0].pattern if len(globs) == 1 else escape(common_literal_prefix(globs)) + b"*"
    assert len(slots) in (1, SLOT_COUNT)
    return ScanPass(match=match, globs=globs, slots=slots, origins=origins)
