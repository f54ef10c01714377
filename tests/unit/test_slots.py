"""Key slots (checked against values Redis itself reports) and SlotSet."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clusterinval._core.slots import SLOT_COUNT, SlotSet, hash_tag, key_slot


class TestKeySlot:
    # Values from `CLUSTER KEYSLOT` on redis-server 7.0.
    @pytest.mark.parametrize(
        ("key", "slot"),
        [(b"foo", 12182), (b"bar", 5061), (b"b", 3300), (b"a", 15495), (b"c", 7365),
         (b"user1000", 3443), (b"{user1000}.following", 3443), (b"foo{}{bar}", 8363),
         (b"foo{{bar}}zap", 4015), (b"foo{bar}{zap}", 5061), (b"", 0)],
    )
    def test_known_slots(self, key: bytes, slot: int) -> None:
        assert key_slot(key) == slot

    @given(st.binary(max_size=40))
    def test_tag_rule(self, key: bytes) -> None:
        assert key_slot(key) == key_slot(hash_tag(key)) or hash_tag(key) == key
        assert 0 <= key_slot(key) < SLOT_COUNT

    def test_hash_tag(self) -> None:
        assert hash_tag(b"{a}b") == b"a"
        assert hash_tag(b"{}a") == b"{}a"  # an empty tag hashes the whole key
        assert hash_tag(b"x{a") == b"x{a"


class TestSlotSet:
    def test_ranges_roundtrip(self) -> None:
        s = SlotSet.from_ranges([(0, 10), (12, 12), (16000, 16383)])
        assert s.ranges() == [(0, 10), (12, 12), (16000, 16383)]
        assert len(s) == 11 + 1 + 384
        assert 12 in s and 11 not in s and -1 not in s and "x" not in s

    def test_algebra(self) -> None:
        full = SlotSet.full()
        half = SlotSet.from_ranges([(0, 8191)])
        rest = full.difference(half)
        assert rest.ranges() == [(8192, 16383)]
        assert len(half.intersection(rest)) == 0
        copy = half.copy()
        copy.update(rest)
        assert copy == full and half != full
        copy.discard(5)
        assert 5 not in copy and len(copy) == SLOT_COUNT - 1

    def test_bad_slot(self) -> None:
        with pytest.raises(ValueError, match="outside"):
            SlotSet([SLOT_COUNT])

    @given(st.lists(st.integers(0, SLOT_COUNT - 1), max_size=50))
    def test_iter_matches_members(self, slots: list[int]) -> None:
        s = SlotSet(slots)
        assert list(s) == sorted(set(slots))
        assert sum(hi - lo + 1 for lo, hi in s.ranges()) == len(s)
