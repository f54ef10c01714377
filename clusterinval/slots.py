"""Redis Cluster key slots: CRC16 with hash tags, and a compact set of slots."""

from __future__ import annotations

from binascii import crc_hqx
from collections.abc import Iterable, Iterator

__all__ = ["SLOT_COUNT", "SlotSet", "hash_tag", "key_slot"]

SLOT_COUNT = 16384


def hash_tag(key: bytes) -> bytes:
    """The part of ``key`` that Redis hashes: the first non-empty ``{...}`` or the whole key."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: bytes) -> int:
    """The hash slot Redis Cluster assigns to ``key``."""
    # binascii.crc_hqx is CRC-16/XMODEM, the exact CRC Redis uses, computed in C.
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc_hqx(key, 0) & 0x3FFF


class SlotSet:
    """A mutable set of slot numbers (0..16383) backed by a bitmap."""

    __slots__ = ("_bits",)

    def __init__(self, slots: Iterable[int] = ()) -> None:
        self._bits = bytearray(SLOT_COUNT)
        for s in slots:
            self.add(s)

    @classmethod
    def full(cls) -> SlotSet:
        """Every slot."""
        out = cls()
        out._bits[:] = b"\x01" * SLOT_COUNT
        return out

    @classmethod
    def from_ranges(cls, ranges: Iterable[tuple[int, int]]) -> SlotSet:
        """The slots in inclusive ``(lo, hi)`` ranges."""
        out = cls()
        for lo, hi in ranges:
            out.add_range(lo, hi)
        return out

    def add(self, slot: int) -> None:
        """Add one slot."""
        self._bits[_check(slot)] = 1

    def add_range(self, lo: int, hi: int) -> None:
        """Add the inclusive range ``lo..hi``."""
        _check(lo)
        _check(hi)
        if hi >= lo:
            self._bits[lo : hi + 1] = b"\x01" * (hi - lo + 1)

    def discard(self, slot: int) -> None:
        """Remove one slot if present."""
        self._bits[_check(slot)] = 0

    def update(self, other: SlotSet) -> None:
        """Add every slot of ``other``."""
        for i, b in enumerate(other._bits):
            if b:
                self._bits[i] = 1

    def difference(self, other: SlotSet) -> SlotSet:
        """Slots in this set and not in ``other``."""
        out = SlotSet()
        out._bits[:] = bytes(a & (1 - b) for a, b in zip(self._bits, other._bits, strict=True))
        return out

    def intersection(self, other: SlotSet) -> SlotSet:
        """Slots in both sets."""
        out = SlotSet()
        out._bits[:] = bytes(a & b for a, b in zip(self._bits, other._bits, strict=True))
        return out

    def copy(self) -> SlotSet:
        """An independent copy."""
        out = SlotSet()
        out._bits[:] = self._bits
        return out

    def __contains__(self, slot: object) -> bool:
        return isinstance(slot, int) and 0 <= slot < SLOT_COUNT and bool(self._bits[slot])

    def __len__(self) -> int:
        return self._bits.count(1)

    def __iter__(self) -> Iterator[int]:
        bits = self._bits
        i = bits.find(1)
        while i != -1:
            yield i
            i = bits.find(1, i + 1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotSet) and self._bits == other._bits

    __hash__ = None  # type: ignore[assignment]

    def ranges(self) -> list[tuple[int, int]]:
        """The set as sorted, maximal inclusive ranges."""
        out: list[tuple[int, int]] = []
        bits = self._bits
        lo = bits.find(1)
        while lo != -1:
            hi = bits.find(0, lo)
            if hi == -1:
                hi = SLOT_COUNT
            out.append((lo, hi - 1))
            lo = bits.find(1, hi)
        return out

    def __repr__(self) -> str:
        shown = ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in self.ranges()[:8])
        return f"SlotSet({len(self)} slots: {shown}{'...' if len(self.ranges()) > 8 else ''})"


def _check(slot: int) -> int:
    if not 0 <= slot < SLOT_COUNT:
        raise ValueError(f"slot {slot} is outside 0..{SLOT_COUNT - 1}")
    return slot
