"""Slot grouping: never cross-slot, never more than a batch, never more held than the cap."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clusterinval._core.batching import SlotBatcher, group_by_slot
from clusterinval._core.slots import key_slot

keys_strategy = st.lists(st.binary(min_size=1, max_size=12), max_size=400)


class TestGroupBySlot:
    @given(keys_strategy, st.integers(1, 50))
    def test_batches_are_single_slot_and_bounded(self, keys: list[bytes], size: int) -> None:
        batches = group_by_slot(keys, size)
        assert sorted(k for _, ks in batches for k in ks) == sorted(keys)
        for slot, ks in batches:
            assert 1 <= len(ks) <= size
            assert {key_slot(k) for k in ks} == {slot}


class TestSlotBatcher:
    @settings(max_examples=60)
    @given(st.lists(keys_strategy, max_size=8), st.integers(1, 20), st.integers(1, 60))
    def test_nothing_lost_nothing_doubled(
        self, chunks: list[list[bytes]], max_batch: int, max_held: int
    ) -> None:
        b = SlotBatcher(max_batch, max_held)
        out: list[bytes] = []
        for chunk in chunks:
            for slot, ks in b.add(chunk):
                assert {key_slot(k) for k in ks} == {slot} and len(ks) <= max_batch
                out.extend(ks)
            assert b.held <= max_held
        for _slot, ks in b.drain():
            out.extend(ks)
        assert b.held == 0
        assert sorted(out) == sorted(k for c in chunks for k in c)

    def test_holds_until_bucket_full(self) -> None:
        b = SlotBatcher(max_batch=3, max_held=100)
        keys = [b"{t}1", b"{t}2"]
        assert b.add(keys) == []
        assert b.held == 2
        ready = b.add([b"{t}3"])
        assert ready == [(key_slot(b"t"), [b"{t}1", b"{t}2", b"{t}3"])]
        assert b.held == 0
