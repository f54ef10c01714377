"""The call-level benchmarks' keyspaces: STORM's targets and SMALL's key triples and tags."""

from __future__ import annotations

import pytest

from clusterinval._core.glob import redis_glob_match
from clusterinval._core.slots import SLOT_COUNT, key_slot
from clusterinval.loadtest.callbench import STORM_KEYS_PER_ENTITY, small_layout, storm_layout


class TestStormLayout:
    def test_the_fill_has_exactly_size_distinct_keys(self) -> None:
        layout = storm_layout(20_000, 100)
        keys = list(layout.keys())
        assert len(keys) == len(set(keys)) == 20_000

    def test_each_pattern_matches_exactly_its_entitys_keys(self) -> None:
        layout = storm_layout(20_000, 100)
        keys = list(layout.keys())
        assert len(set(layout.targets)) == 100 == len(layout.patterns)
        for i, pattern in zip(layout.targets[:10], layout.patterns[:10], strict=True):
            found = {k for k in keys if redis_glob_match(pattern.encode(), k.encode())}
            assert found == set(layout.entity_keys(i))
            assert len(found) == STORM_KEYS_PER_ENTITY
        assert len(layout.target_keys()) == layout.expected_deleted == 100 * STORM_KEYS_PER_ENTITY

    def test_too_many_calls_for_the_keyspace_are_refused(self) -> None:
        with pytest.raises(ValueError, match="storm calls need"):
            storm_layout(1000, 500)


class TestSmallLayout:
    def test_triples_are_on_three_primaries_and_tags_own_two_keys(self) -> None:
        thirds = [("h", 1), ("h", 2), ("h", 3)]
        owners: list[tuple[str, int] | None] = [thirds[s * 3 // SLOT_COUNT]
                                                 for s in range(SLOT_COUNT)]
        layout = small_layout(20_000, owners)
        assert len(layout.triples) == len(set(layout.triples)) == 100
        for triple in layout.triples:
            slots = [key_slot(k.encode()) for k in triple]
            assert len(set(slots)) == 3
            assert len({owners[s] for s in slots}) == 3
        keys = list(layout.keys())
        assert len(keys) == len(set(keys)) == 20_000
        pattern = "{t:1}:*"
        assert {k for k in keys if redis_glob_match(pattern.encode(), k.encode())} == set(
            layout.tag_keys(1))

    def test_one_primary_still_gives_three_slots(self) -> None:
        owners: list[tuple[str, int] | None] = [("h", 1)] * SLOT_COUNT
        layout = small_layout(20_000, owners)
        for triple in layout.triples:
            assert len({key_slot(k.encode()) for k in triple}) == 3

    def test_key_owners_name_the_primary_of_every_call_key(self) -> None:
        thirds = [("h", 1), ("h", 2), ("h", 3)]
        owners: list[tuple[str, int] | None] = [thirds[s * 3 // SLOT_COUNT]
                                                 for s in range(SLOT_COUNT)]
        layout = small_layout(20_000, owners)
        found = layout.key_owners(owners)
        assert set(found) == set(layout.call_keys())
        assert len(found) == 3 * len(layout.triples) + 2 * len(layout.tags)
        for key, owner in found.items():
            assert owner == owners[key_slot(key.encode())]

    def test_key_owners_refuse_a_slot_nobody_serves(self) -> None:
        owners: list[tuple[str, int] | None] = [("h", 1)] * SLOT_COUNT
        layout = small_layout(20_000, owners)
        owners[key_slot(layout.triples[0][0].encode())] = None
        with pytest.raises(RuntimeError, match="no primary serves"):
            layout.key_owners(owners)
