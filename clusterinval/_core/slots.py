"""Redis Cluster key slots: CRC16 with hash tags, and a compact set of slots."""

from __future__ import annotations

from binascii import crc_hqx
from collections.abc import Iterable, Iterator

__all__ = ["SLOT_COUNT", "SlotSet", "hash_tag", "key_slot"]

SLOT_COUNT = 16384
_ALL = (1 << SLOT_COUNT) - 1


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


def _check(slot: int) -> int:
    if not 0 <= slot < SLOT_COUNT:
        raise ValueError(f"slot {slot} is outside 0..{SLOT_COUNT - 1}")
    return slot


def _span(lo: int, hi: int) -> int:
    return ((1 << (hi - lo + 1)) - 1) << lo if hi >= lo else 0


class SlotSet:
    """A mutable set of slot numbers (0..16383), one bit per slot in a Python int."""

    __slots__ = ("_bits",)

    def __init__(self, slots: Iterable[int] = ()) -> None:
        bits = 0
        for s in slots:
            bits |= 1 << _check(s)
        self._bits = bits

    @classmethod
    def _of(cls, bits: int) -> SlotSet:
        out = cls()
        out._bits = bits
        return out

    @classmethod
    def full(cls) -> SlotSet:
        """Every slot."""
        return cls._of(_ALL)

    @classmethod
    def from_ranges(cls, ranges: Iterable[tuple[int, int]]) -> SlotSet:
        """The slots in inclusive ``(lo, hi)`` ranges."""
        out = cls()
        for lo, hi in ranges:
            out.add_range(lo, hi)
        return out

    def add(self, slot: int) -> None:
        """Add one slot."""
        self._bits |= 1 << _check(slot)

    def add_range(self, lo: int, hi: int) -> None:
        """Add the inclusive range ``lo..hi``."""
        self._bits |= _span(_check(lo), _check(hi))

    def discard(self, slot: int) -> None:
        """Remove one slot if present."""
        self._bits &= ~(1 << _check(slot))

    def update(self, other: SlotSet) -> None:
        """Add every slot of ``other``."""
        self._bits |= other._bits

    def difference(self, other: SlotSet) -> SlotSet:
        """Slots in this set and not in ``other``."""
        return SlotSet._of(self._bits & ~other._bits)

    def intersection(self, other: SlotSet) -> SlotSet:
        """Slots in both sets."""
        return SlotSet._of(self._bits & other._bits)

    def copy(self) -> SlotSet:
        """An independent copy."""
        return SlotSet._of(self._bits)

    def __contains__(self, slot: object) -> bool:
        return isinstance(slot, int) and 0 <= slot < SLOT_COUNT and bool(self._bits >> slot & 1)

    def __len__(self) -> int:
        return self._bits.bit_count()

    def __iter__(self) -> Iterator[int]:
        for lo, hi in self.ranges():
            yield from range(lo, hi + 1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotSet) and self._bits == other._bits

    __hash__ = None  # type: ignore[assignment]

    def ranges(self) -> list[tuple[int, int]]:
        """The set as sorted, maximal inclusive ranges."""
        out: list[tuple[int, int]] = []
        bits = self._bits
        pos = 0
        while bits:
            # Skip the zeros, then measure the run of ones.
            zeros = (bits & -bits).bit_length() - 1
            bits >>= zeros
            pos += zeros
            ones = (~bits & (bits + 1)).bit_length() - 1
            out.append((pos, pos + ones - 1))
            bits >>= ones
            pos += ones
        return out

    def __repr__(self) -> str:
        ranges = self.ranges()
        shown = ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in ranges[:8])
        return f"SlotSet({len(self)} slots: {shown}{'...' if len(ranges) > 8 else ''})"
