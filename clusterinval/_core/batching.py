"""Group keys by hash slot into UNLINK-sized batches, holding no more than a fixed number of keys.

Pure logic. SCAN returns a node's keys in hash-table order, so consecutive keys rarely share a slot;
holding keys back per slot until a bucket fills makes each UNLINK carry many keys instead of one.
The cap on held keys keeps memory flat however many keys match.
"""

from __future__ import annotations

from binascii import crc_hqx
from collections import defaultdict
from collections.abc import Iterable
from itertools import repeat

from clusterinval._core.slots import key_slot

__all__ = ["SlotBatch", "SlotBatcher", "group_by_slot"]

SlotBatch = tuple[int, list[bytes]]


def group_by_slot(keys: Iterable[bytes], max_batch: int) -> list[SlotBatch]:
    """Keys grouped by slot, each group split into chunks of at most ``max_batch`` keys."""
    keys = keys if isinstance(keys, list) else list(keys)
    # This sees every exact key of a call and every key a plain scan deletes: the CRCs are taken
    # in one C-level map, and only key sets holding a '{' somewhere pay for the hash-tag check.
    if b"{" in b"".join(keys):
        slots: Iterable[int] = map(key_slot, keys)
    else:
        slots = map(crc_hqx, keys, repeat(0))
    groups: defaultdict[int, list[bytes]] = defaultdict(list)
    for s, k in zip(slots, keys, strict=False):  # as many of each: both come from ``keys``
        groups[s & 0x3FFF].append(k)
    out: list[SlotBatch] = []
    for slot, ks in groups.items():
        if len(ks) <= max_batch:
            out.append((slot, ks))
        else:
            out.extend((slot, ks[i : i + max_batch]) for i in range(0, len(ks), max_batch))
    return out


class SlotBatcher:
    """Accumulates keys per slot; hands back full buckets, and everything when over its cap."""

    __slots__ = ("_buckets", "_held", "max_batch", "max_held")

    def __init__(self, max_batch: int, max_held: int) -> None:
        if max_batch < 1 or max_held < 1:
            raise ValueError("max_batch and max_held must be >= 1")
        self.max_batch = max_batch
        self.max_held = max_held
        self._buckets: dict[int, list[bytes]] = {}
        self._held = 0

    @property
    def held(self) -> int:
        """Keys currently held back."""
        return self._held

    def add(self, keys: Iterable[bytes]) -> list[SlotBatch]:
        """Take ``keys``; return the batches that must be sent now."""
        ready: list[SlotBatch] = []
        buckets = self._buckets
        max_batch = self.max_batch
        crc = crc_hqx
        for k in keys:
            slot = key_slot(k) if b"{" in k else crc(k, 0) & 0x3FFF
            bucket = buckets.get(slot)
            if bucket is None:
                bucket = buckets[slot] = []
            bucket.append(k)
            self._held += 1
            if len(bucket) >= max_batch:
                ready.append((slot, bucket))
                del buckets[slot]
                self._held -= len(bucket)
        if self._held > self.max_held:
            ready.extend(self.drain())
        return ready

    def drain(self) -> list[SlotBatch]:
        """Every held key, as batches; the batcher is empty afterwards."""
        out = list(self._buckets.items())
        self._buckets = {}
        self._held = 0
        return out
