"""The engine on the in-memory cluster: routing, redirects, coverage, retries, faults, limits."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from iocontract import key_in
from prometheus_client import CollectorRegistry
from redis.exceptions import ClusterDownError, ConnectionError

from clusterinval._core.slots import SlotSet, key_slot
from clusterinval._core.values import NodeAddr
from clusterinval._engine.slotwalk import WALK_SLOT_CAP
from clusterinval._invalidator import ClusterInvalidator
from clusterinval._io.memory import MemoryCluster
from clusterinval.errors import InvalidationError
from clusterinval.result import InvalidationResult

pytestmark = pytest.mark.anyio

# Short back-off so retries take milliseconds; every run still has a deadline.
FAST: dict[str, Any] = {"backoff_base_s": 0.001, "backoff_cap_s": 0.01, "timeout_s": 20.0,
                        "command_timeout_s": 1.0}

# The three ways a pattern pass is served on a node, by the options and pattern that pick them.
PATHS = {
    "slot_walk": ({}, "inv:*", "slot_walk"),
    "scan_step": ({}, "inv:*:v", "scan_step"),
    "plain": ({"server_scripts": False}, "inv:*", "scan"),
}


def invalidator(cluster: MemoryCluster, **options: Any) -> ClusterInvalidator:
    """An invalidator on ``cluster`` with its own metrics registry."""
    return ClusterInvalidator._from_io(cluster, cluster.seeds, registry=CollectorRegistry(),
                                       **{**FAST, **options})


def keys_in(slot: int, n: int, prefix: str = "inv") -> list[bytes]:
    """``n`` keys of ``slot`` that match ``prefix:*`` and ``prefix:*:v``."""
    tag = key_in(slot).decode()
    return [f"{prefix}:{tag}:{i}:v".encode() for i in range(n)]


def doomed_and_kept(cluster: MemoryCluster, n: int = 600) -> tuple[set[bytes], set[bytes]]:
    """Write ``n`` keys the patterns of PATHS match and ``n`` look-alikes that must stay."""
    doomed = {f"inv:{i}:v".encode() for i in range(n)}
    kept = {f"keep:inv:{i}:v".encode() for i in range(n // 2)} | {
        f"INV:{i}:v".encode() for i in range(n // 2)}
    cluster.set(doomed | kept)
    return doomed, kept


def uncovered(result: InvalidationResult) -> SlotSet:
    """The result's uncovered slots as a set."""
    return SlotSet.from_ranges(result.uncovered_slots)


async def failed_run(inv: ClusterInvalidator, **call: Any) -> InvalidationResult:
    """Run an invalidation that must end incomplete; its partial result."""
    with pytest.raises(InvalidationError) as info:
        await inv.invalidate(operation_name="test", **call)
    result = info.value.result
    assert result is not None and not result.complete
    return result


class TestExactKeys:
    async def test_one_round_trip_per_owning_node(self) -> None:
        c = MemoryCluster(primaries=3)
        present = [key_in(s) for s in (10, 6000, 12000, 12001)]
        c.set([*present, b"other"])
        inv = invalidator(c)
        await inv.open()
        c.reset_calls()
        result = await inv.invalidate(keys=[*present, key_in(6001)], operation_name="test")
        assert (result.deleted, result.complete) == (4, True)
        assert c.keys() == {b"other"}
        for p in c.primaries():
            sends = c.call_count(p, "key_commands") + c.call_count(p, "batch_calls")
            assert sends == 1, (p, c.calls)
        assert c.call_count(operation="scan") == c.call_count(operation="ownership") == 0
        await inv.aclose()

    async def test_moved_routes_to_the_new_owner_and_refreshes(self) -> None:
        c = MemoryCluster(primaries=3)
        p0, p1, _p2 = c.primaries()
        keys = keys_in(100, 3)
        c.set(keys)
        inv = invalidator(c)
        await inv.open()
        c.move_slot(100, p0, p1)
        views = c.call_count(operation="cluster_view")
        result = await inv.invalidate(keys=keys, operation_name="test")
        assert (result.deleted, result.complete) == (3, True) and c.keys() == set()
        assert c.call_count(p1, "key_commands") + c.call_count(p1, "batch_calls") >= 1
        assert c.call_count(operation="cluster_view") > views
        await inv.aclose()

    async def test_ask_goes_to_the_importing_node(self) -> None:
        c = MemoryCluster(primaries=2)
        src, dst = c.primaries()
        keys = keys_in(7, 4)
        c.set(keys)
        c.setslot_importing(7, dst, src)
        c.setslot_migrating(7, src, dst)
        c.migrate_keys(7, src, dst)
        inv = invalidator(c)
        result = await inv.invalidate(keys=keys, operation_name="test")
        assert (result.deleted, result.complete) == (4, True) and c.keys() == set()
        assert c.call_count(dst, "asking") == 1

    async def test_tryagain_splits_into_single_keys(self) -> None:
        c = MemoryCluster(primaries=2)
        src, dst = c.primaries()
        keys = keys_in(7, 6)
        c.set(keys)
        c.setslot_importing(7, dst, src)
        c.setslot_migrating(7, src, dst)
        c.migrate_keys(7, src, dst, keys=keys[:3])
        inv = invalidator(c)
        result = await inv.invalidate(keys=keys, operation_name="test")
        assert (result.deleted, result.complete) == (6, True) and c.keys() == set()
        assert c.call_count(dst, "asking") == 3  # the moved keys, one ASK each

    async def test_ask_then_tryagain_on_the_target(self) -> None:
        c = MemoryCluster(primaries=2)
        src, dst = c.primaries()
        moved, absent = keys_in(7, 2)
        c.set([moved])
        c.setslot_importing(7, dst, src)
        c.setslot_migrating(7, src, dst)
        c.migrate_keys(7, src, dst, keys=[moved])
        inv = invalidator(c)
        result = await inv.invalidate(keys=[moved, absent], operation_name="test")
        assert (result.deleted, result.complete) == (1, True) and c.keys() == set()
        assert c.call_count(dst, "asking") == 3  # both keys, TRYAGAIN, then one by one

    @pytest.mark.parametrize("fault", ["raised", "reply"])
    async def test_retries_up_to_the_limit(self, fault: str) -> None:
        retries = 3
        for failures, complete in ((retries, True), (retries + 1, False)):
            c = MemoryCluster(primaries=1)
            (p,) = c.primaries()
            keys = keys_in(5, 3)
            c.set(keys)
            if fault == "raised":
                c.inject(p, "key_commands", ConnectionError, times=failures)
            else:
                c.inject_replies(p, "key_commands", ClusterDownError("The cluster is down"),
                                 commands=failures)
            inv = invalidator(c, retries=retries)
            if complete:
                result = await inv.invalidate(keys=keys, operation_name="test")
                assert result.deleted == 3 and c.keys() == set()
            else:
                result = await failed_run(inv, keys=keys)
                assert result.deleted == 0 and c.keys() == set(keys)
                assert uncovered(result) == SlotSet([5])
            assert c.call_count(p, "key_commands") == failures + (1 if complete else 0)


class TestPatternPaths:
    @pytest.mark.parametrize("path", list(PATHS))
    async def test_deletes_exactly_the_matching_keys(self, path: str) -> None:
        options, pattern, operation = PATHS[path]
        c = MemoryCluster(primaries=3, replicas=1)
        doomed, kept = doomed_and_kept(c)
        inv = invalidator(c, **options)
        result = await inv.invalidate(patterns=[pattern], operation_name="test")
        assert (result.deleted, result.complete, result.uncovered_slots) == (len(doomed), True,
                                                                            ())
        assert c.keys() == kept
        assert c.call_count(operation=operation) > 0
        for other in {"slot_walk", "scan_step", "scan"} - {operation}:
            assert c.call_count(operation=other) == 0, other

    @pytest.mark.parametrize("path", list(PATHS))
    async def test_dry_run_counts_and_removes_nothing(self, path: str) -> None:
        options, pattern, _operation = PATHS[path]
        c = MemoryCluster(primaries=3)
        doomed, kept = doomed_and_kept(c, 300)
        inv = invalidator(c, **options)
        result = await inv.invalidate(patterns=[pattern], keys=[b"keep:inv:1:v", b"nope"],
                                      operation_name="test", dry_run=True)
        assert (result.deleted, result.matched, result.complete) == (0, len(doomed) + 1, True)
        assert c.keys() == doomed | kept
        assert set(result.sample) <= doomed | {b"keep:inv:1:v"} and result.sample

    async def test_a_slot_too_big_to_walk_is_finished_server_side(self) -> None:
        # A slot over the walk's cap (a queue's markers, a large hash-tagged entity) sends its
        # node to SCAN steps that decide per key on the server: no key is read by the client.
        c = MemoryCluster(primaries=3)
        doomed, kept = doomed_and_kept(c, 300)
        crowded = set(keys_in(77, WALK_SLOT_CAP + 5, "crowd"))
        c.set(crowded)
        inv = invalidator(c)
        result = await inv.invalidate(patterns=["inv:*", "crowd:*"], operation_name="test")
        assert result.complete and c.keys() == kept
        assert result.deleted == len(doomed) + len(crowded)
        assert result.per_pattern == (("inv:*", len(doomed)), ("crowd:*", len(crowded)))
        assert c.call_count(operation="scan") == 0 and c.call_count(operation="scan_step") > 0

    async def test_keys_seen_twice_are_counted_once(self) -> None:
        c = MemoryCluster(primaries=2, scan_repeat=True)
        doomed, kept = doomed_and_kept(c, 400)
        inv = invalidator(c, server_scripts=False, scan_count=20)
        result = await inv.invalidate(patterns=["inv:*"], operation_name="test")
        assert result.deleted == len(doomed) and result.complete and c.keys() == kept

    @pytest.mark.parametrize("path", ["slot_walk", "plain"])
    async def test_empty_key_only_for_star(self, path: str) -> None:
        options = PATHS[path][0]
        c = MemoryCluster(primaries=2)
        c.set([b"", b"a"])
        inv = invalidator(c, **options)
        result = await inv.invalidate(patterns=["**"], operation_name="test",
                                      allow_match_all=True)
        assert result.deleted == 1 and c.keys() == {b""}
        c.set([b"a"])
        result = await inv.invalidate(patterns=["*"], operation_name="test",
                                      allow_match_all=True)
        assert result.deleted == 2 and c.keys() == set()


def act_at(cluster: MemoryCluster, node: NodeAddr, operation: str,
           actions: dict[int, Callable[[], None]]) -> list[int]:
    """Run ``actions[n]`` just before the ``n``-th ``operation`` call on ``node``; what ran."""
    seen = [0]
    done: list[int] = []

    def hook(at: NodeAddr, op: str) -> None:
        if at == node and op == operation:
            seen[0] += 1
            action = actions.get(seen[0])
            if action is not None:
                action()
                done.append(seen[0])

    cluster.on_call(hook)
    return done


class TestCoverage:
    @pytest.mark.parametrize("path", list(PATHS))
    async def test_slot_that_leaves_and_comes_back_is_read_again(self, path: str) -> None:
        options, pattern, operation = PATHS[path]
        c = MemoryCluster(primaries=3)
        a, b, _c = c.primaries()
        slot = 5000  # late in a's range
        doomed, kept = doomed_and_kept(c, 3000)
        wandering = set(keys_in(slot, 50))
        c.set(wandering)
        done = act_at(c, a, operation, {1: lambda: c.move_slot(slot, a, b),
                                        3: lambda: c.move_slot(slot, b, a)})
        inv = invalidator(c, scan_count=50, server_scan_count=50, **options)
        result = await inv.invalidate(patterns=[pattern], operation_name="test")
        assert done == [1, 3]
        assert result.complete and c.keys() == kept
        assert result.deleted == len(doomed) + len(wandering)

    async def test_migration_under_way_needs_another_round(self) -> None:
        c = MemoryCluster(primaries=2)
        src, dst = c.primaries()
        doomed, kept = doomed_and_kept(c, 400)
        here = set(keys_in(42, 20))
        c.set(here)
        c.setslot_importing(42, dst, src)
        c.setslot_migrating(42, src, dst)
        c.migrate_keys(42, src, dst, 10)

        def finish() -> None:
            c.migrate_keys(42, src, dst)
            c.setslot_node(42, dst)
            c.setslot_node(42, dst, on=src)

        # The walk proves ownership inside each call: the migration ends as the second round's
        # walk of the source starts, and a third round reads slot 42 on its new owner.
        done = act_at(c, src, "slot_walk", {2: finish})
        inv = invalidator(c)
        result = await inv.invalidate(patterns=["inv:*"], operation_name="test")
        assert done == [2] and result.complete and c.keys() == kept
        assert result.deleted == len(doomed) + len(here)
        assert c.call_count(node=dst, operation="slot_walk") >= 2  # more than one round

    async def test_command_retries_then_success(self) -> None:
        c = MemoryCluster(primaries=2)
        p0, _p1 = c.primaries()
        doomed, kept = doomed_and_kept(c, 300)
        c.inject(p0, "slot_walk", ConnectionError, times=2)
        inv = invalidator(c, retries=3)
        result = await inv.invalidate(patterns=["inv:*"], operation_name="test")
        assert result.complete and c.keys() == kept and result.deleted == len(doomed)

    async def test_no_node_answering_ends_before_the_deadline(self) -> None:
        c = MemoryCluster(primaries=2)
        doomed_and_kept(c, 100)
        inv = invalidator(c, retries=2, timeout_s=30.0)
        await inv.open()
        for p in c.primaries():
            c.kill(p)
        started = time.monotonic()
        with anyio.fail_after(15):
            with pytest.raises(InvalidationError) as info:
                await inv.invalidate(patterns=["inv:*"], operation_name="test")
        assert time.monotonic() - started < 15
        result = info.value.result
        assert result is not None and uncovered(result) == SlotSet.full()


class TestNodeFailures:
    @pytest.mark.parametrize("path", list(PATHS))
    async def test_killed_primary_with_failover_completes(self, path: str) -> None:
        options, pattern, operation = PATHS[path]
        c = MemoryCluster(primaries=3, replicas=1)
        a = c.primaries()[1]
        doomed, kept = doomed_and_kept(c, 1500)

        def die() -> None:
            c.kill(a)
            c.failover(a)

        done = act_at(c, a, operation, {2: die})
        inv = invalidator(c, scan_count=50, server_scan_count=50, **options)
        result = await inv.invalidate(patterns=[pattern], operation_name="test")
        assert done == [2] and result.complete and c.keys() == kept
        assert result.deleted == len(doomed)

    async def test_killed_primary_without_failover_names_its_slots(self) -> None:
        c = MemoryCluster(primaries=3)
        a = c.primaries()[1]
        doomed, kept = doomed_and_kept(c, 900)
        exact = [key_in(s, "x") for s in (1, 6000)]
        c.set(exact)
        done = act_at(c, a, "slot_walk", {1: lambda: c.kill(a)})
        inv = invalidator(c, timeout_s=1.0)
        result = await failed_run(inv, patterns=["inv:*"], keys=exact)
        assert done == [1]
        assert uncovered(result) == c.slots_of(a)
        left = c.keys() - kept
        # The exact keys may have gone before the kill; the pattern's keys on a never could.
        assert left - set(exact) == {k for k in doomed if c.owner(key_slot(k)) == a}
        assert all(c.owner(key_slot(k)) == a for k in left)
        assert result.deleted == len(doomed | set(exact)) - len(left)
        assert any("deadline" in e or "timed out" in e.lower() for e in result.errors), \
            result.errors

    @pytest.mark.parametrize("path", list(PATHS))
    async def test_deadline_partial_result_is_exact(self, path: str) -> None:
        options, pattern, operation = PATHS[path]
        c = MemoryCluster(primaries=3)
        a = c.primaries()[2]
        doomed, kept = doomed_and_kept(c, 900)
        # Frozen mid-pass: after a first SCAN call, or before the walk's one call (whole slots).
        at = 1 if path == "slot_walk" else 2
        done = act_at(c, a, operation, {at: lambda: c.freeze(a)})
        inv = invalidator(c, timeout_s=1.0, command_timeout_s=0.3, scan_count=50,
                          server_scan_count=50, **options)
        result = await failed_run(inv, patterns=[pattern])
        assert done == [at]
        left = c.keys() - kept
        assert left and c.keys() >= kept
        assert result.deleted == len(doomed) - len(left)
        holes = uncovered(result)
        assert all(key_slot(k) in holes for k in left)
        assert holes.difference(c.slots_of(a)) == SlotSet()
        c.thaw(a)


class TestRateLimits:
    async def test_keys_per_second_paces_the_run(self) -> None:
        c = MemoryCluster(primaries=3)
        doomed, kept = doomed_and_kept(c, 1200)
        rate = 2000.0
        inv = invalidator(c, keys_per_second=rate)
        started = time.monotonic()
        result = await inv.invalidate(patterns=["inv:*"], operation_name="test")
        elapsed = time.monotonic() - started
        assert result.complete and result.deleted == len(doomed) and c.keys() == kept
        # 0.1 s of burst, then the rate: at least (n - burst) / rate seconds.
        assert elapsed >= (len(doomed) - 0.1 * rate) / rate * 0.95

    async def test_node_keys_per_second_paces_each_primary(self) -> None:
        c = MemoryCluster(primaries=2)
        keys = keys_in(10, 400) + keys_in(16000, 20)
        c.set(keys)
        rate = 1000.0
        inv = invalidator(c, node_keys_per_second=rate, server_scripts=False)
        started = time.monotonic()
        result = await inv.invalidate(patterns=["inv:*"], operation_name="test")
        elapsed = time.monotonic() - started
        assert result.complete and result.deleted == len(keys) and c.keys() == set()
        assert elapsed >= (400 - 0.1 * rate) / rate * 0.95
