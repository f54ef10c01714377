"""The in-memory cluster itself: keyspace, SCAN, cluster checks, epochs, steps and faults."""

from __future__ import annotations

from collections import deque

import anyio
import pytest
from iocontract import key_in, keys_in
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from clusterinval._core.slots import SLOT_COUNT, SlotSet, key_slot
from clusterinval._core.values import NodeAddr, SlotWalkStep
from clusterinval._io.memory import MemoryCluster, redis_error

pytestmark = pytest.mark.anyio



async def scan_all(cluster: MemoryCluster, node: NodeAddr, match: bytes = b"*",
                   count: int = 10) -> list[bytes]:
    io = cluster.node(node)
    cursor, out = 0, []
    while True:
        cursor, keys = await io.scan(cursor, match, count)
        out.extend(keys)
        if cursor == 0:
            return out


class TestErrors:
    def test_moved_parsed_like_redis_py(self) -> None:
        exc = redis_error("MOVED 3999 127.0.0.1:6381")
        assert isinstance(exc, MovedError)
        assert (exc.slot_id, exc.host, exc.port) == (3999, "127.0.0.1", 6381)

    def test_ask_tryagain_clusterdown(self) -> None:
        ask = redis_error("ASK 7 127.0.0.1:30002")
        assert isinstance(ask, AskError) and not isinstance(ask, MovedError)
        assert isinstance(redis_error("TRYAGAIN Multiple keys request during rehashing of slot"),
                          TryAgainError)
        assert isinstance(redis_error("CLUSTERDOWN Hash slot not served"), ClusterDownError)
        plain = redis_error("ERR something")
        assert type(plain) is ResponseError and str(plain) == "something"  # as redis-py strips


class TestLayout:
    def test_contiguous_ranges_and_distinct_epochs(self) -> None:
        c = MemoryCluster(primaries=3, replicas=1)
        p = c.primaries()
        assert [len(c.slots_of(n)) for n in p] == [5461, 5461, 5462]
        assert c.owner(0) == p[0] and c.owner(SLOT_COUNT - 1) == p[2]
        assert len({c.epoch(n) for n in p}) == 3
        for n in p:
            (replica,) = c.replicas_of(n)
            assert c.epoch(replica) == c.epoch(n)  # a replica reports its primary's epoch
        assert len(c.nodes) == 6 and c.seeds == [p[0]]

    async def test_cluster_view_lists_replicas(self) -> None:
        c = MemoryCluster(primaries=2, replicas=2)
        view = await c.node(c.nodes[-1]).cluster_view()
        assert view is not None
        assert view.primaries == tuple(c.primaries())
        for p in c.primaries():
            assert view.replicas[p] == tuple(c.replicas_of(p))
        assert view.unowned() == SlotSet()

    async def test_unknown_address_refuses(self) -> None:
        c = MemoryCluster()
        with pytest.raises(ConnectionError, match="Connection refused"):
            await c.node(NodeAddr("127.0.0.1", 1)).dbsize()


class TestKeyspace:
    async def test_set_lands_on_owner_and_replicas(self) -> None:
        c = MemoryCluster(primaries=3, replicas=1)
        keys = [f"user:{i}".encode() for i in range(200)]
        assert c.set(keys) == 200
        assert c.keys() == set(keys)
        for p in c.primaries():
            mine = {k for k in keys if c.owner(key_slot(k)) == p}
            assert c.node_keys(p) == mine
            (r,) = c.replicas_of(p)
            assert c.node_keys(r) == mine
            primary_repl = await c.node(p).replication()
            replica_repl = await c.node(r).replication()
            assert replica_repl.offset == primary_repl.offset > 0 and replica_repl.link_up
            assert await c.node(p).dbsize() == len(mine)

    async def test_replica_link_down_lags(self) -> None:
        c = MemoryCluster(primaries=1, replicas=1)
        (p,), (r,) = c.primaries(), c.replicas_of(c.primaries()[0])
        c.replication_link(r, False)
        c.set([b"a"])
        repl = await c.node(r).replication()
        assert not repl.link_up and repl.offset < (await c.node(p).replication()).offset
        assert c.node_keys(r) == set()
        c.replication_link(r, True)
        assert c.node_keys(r) == {b"a"}

    def test_remove(self) -> None:
        c = MemoryCluster()
        c.set([b"a", b"b"])
        assert c.remove([b"a", b"zz"]) == 1
        assert c.keys() == {b"b"}


class TestScan:
    async def test_finds_exactly_the_matching_keys(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        wanted = {f"cat:{i}".encode() for i in range(300)}
        c.set(wanted | {f"dog:{i}".encode() for i in range(300)} | {b"cat"})
        found = await scan_all(c, p, b"cat:*", count=7)
        assert sorted(found) == sorted(wanted)

    async def test_count_is_work_per_call(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        c.set(f"k{i}".encode() for i in range(100))
        cursor, keys = await c.node(p).scan(0, b"*", 10)
        assert len(keys) == 10 and cursor != 0
        cursor, keys = await c.node(p).scan(0, b"nothing*", 10)
        assert keys == [] and cursor != 0  # ten keys examined, none matched

    async def test_empty_key_only_for_star(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        c.set([b"", b"a"])
        assert sorted(await scan_all(c, p, b"*")) == [b"", b"a"]
        assert await scan_all(c, p, b"**") == [b"a"]
        assert await scan_all(c, p, b"?*") == [b"a"]

    async def test_malformed_pattern_follows_redis(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        c.set([b"a[", b"ab"])
        # Redis reads an unclosed '[' as a set running to the end of the pattern.
        assert await scan_all(c, p, b"a[b") == [b"ab"]

    async def test_keys_present_throughout_survive_churn(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        stable = {f"s:{i}".encode() for i in range(200)}
        c.set(stable)
        io = c.node(p)
        cursor, seen, i = 0, [], 0
        while True:
            cursor, keys = await io.scan(cursor, b"s:*", 5)
            seen.extend(keys)
            c.set([f"s:new{i}".encode()])  # written and deleted between calls
            c.remove([f"s:new{i - 1}".encode()])
            i += 1
            if cursor == 0:
                break
        assert stable <= set(seen)
        assert len([k for k in seen if k in stable]) == len(stable)  # each once

    async def test_scan_repeat_returns_some_keys_twice(self) -> None:
        c = MemoryCluster(primaries=1, scan_repeat=True)
        (p,) = c.primaries()
        keys = {f"k{i}".encode() for i in range(100)}
        c.set(keys)
        seen = await scan_all(c, p, b"*", count=10)
        assert set(seen) == keys and len(seen) > len(keys)


class TestKeyCommands:
    async def test_unlink_and_exists_replies(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        a, b = keys_in(5, 2)
        c.set([a, b])
        io = c.node(p)
        assert await io.key_commands("EXISTS", [[a, b, a + b":absent"], [a, a]], window=4) == [2, 2]
        assert await io.key_commands("UNLINK", [[a, a, b], [a]], window=4) == [2, 0]
        assert c.keys() == set()

    async def test_crossslot_and_moved(self) -> None:
        c = MemoryCluster(primaries=2)
        p0, p1 = c.primaries()
        k0, k1 = key_in(10), key_in(16000)
        c.set([k0, k1])
        replies = await c.node(p0).key_commands("UNLINK", [[k0, k1], [k1]], window=2)
        assert isinstance(replies[0], ClusterCrossSlotError)
        assert isinstance(replies[1], MovedError)
        assert (replies[1].slot_id, replies[1].host, replies[1].port) == (16000, p1.host, p1.port)

    async def test_replica_redirects_to_primary(self) -> None:
        c = MemoryCluster(primaries=1, replicas=1)
        (p,) = c.primaries()
        (r,) = c.replicas_of(p)
        c.set([b"a"])
        (reply,) = await c.node(r).key_commands("UNLINK", [[b"a"]], window=1)
        assert isinstance(reply, MovedError) and reply.port == p.port

    async def test_migration_replies(self) -> None:
        c = MemoryCluster(primaries=2)
        src, dst = c.primaries()
        slot = 100
        moved, kept = keys_in(slot, 2), keys_in(slot, 2, "y")
        c.set(moved + kept)
        c.setslot_importing(slot, dst, src)
        c.setslot_migrating(slot, src, dst)
        c.remove(moved)
        c.set(moved, node=dst)
        s, d = c.node(src), c.node(dst)
        present, missing, split = await s.key_commands(
            "EXISTS", [kept, moved, [kept[0], moved[0]]], window=8)
        assert present == 2
        assert isinstance(missing, AskError) and not isinstance(missing, MovedError)
        assert (missing.slot_id, missing.port) == (slot, dst.port)
        assert isinstance(split, TryAgainError)
        (no_asking,) = await d.key_commands("EXISTS", [moved], window=1)
        assert isinstance(no_asking, MovedError) and no_asking.port == src.port
        assert await d.asking("EXISTS", moved) == 2
        assert await d.asking("EXISTS", [kept[0]]) == 0  # one key: served even if absent
        assert isinstance(await d.asking("EXISTS", [moved[0], kept[0]]), TryAgainError)
        assert isinstance(await s.asking("EXISTS", moved), AskError)  # ASKING changes nothing
        own = await s.ownership()
        assert slot in own.migrating and slot in own.owned and slot not in own.stable
        assert slot in (await d.ownership()).importing

    async def test_unbound_slot_and_cluster_down(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        c.del_slots([7])
        a, b = key_in(7), key_in(8)
        unbound, down = await c.node(p).key_commands("UNLINK", [[a], [b]], window=2)
        assert isinstance(unbound, ClusterDownError) and "not served" in str(unbound)
        assert isinstance(down, ClusterDownError) and "cluster is down" in str(down)
        c.add_slots(p, [7])
        assert await c.node(p).key_commands("UNLINK", [[a], [b]], window=2) == [0, 0]
        c.set_cluster_down(True)
        (reply,) = await c.node(p).key_commands("EXISTS", [[a]], window=1)
        assert isinstance(reply, ClusterDownError)


class TestSlotsAndEpochs:
    async def test_import_end_bumps_epoch(self) -> None:
        c = MemoryCluster(primaries=3)
        p0, p1, _p2 = c.primaries()
        before = c.epoch(p1)
        c.set(keys_in(3, 5))
        assert c.move_slot(3, p0, p1) == 5
        assert c.owner(3) == p1 and c.epoch(p1) == c.current_epoch > before
        own = await c.node(p1).ownership()
        assert 3 in own.owned and own.epoch == c.epoch(p1)
        assert not (await c.node(p0).ownership()).migrating
        assert c.node_keys(p1) == set(keys_in(3, 5))

    def test_no_bump_when_already_highest(self) -> None:
        c = MemoryCluster(primaries=3)
        p0, _p1, p2 = c.primaries()
        assert c.epoch(p2) == c.current_epoch
        c.move_slot(0, p0, p2)
        assert c.epoch(p2) == 3  # Redis keeps an epoch that is already the cluster's highest

    def test_assign_without_import_keeps_epoch(self) -> None:
        c = MemoryCluster(primaries=2)
        p0, p1 = c.primaries()
        epoch = c.epoch(p0)
        c.setslot_node(10, p1, on=p0)
        assert c.owner(10) == p1 and c.epoch(p0) == epoch and c.epoch(p1) == 2

    def test_slot_leaving_and_coming_back_changes_epoch(self) -> None:
        c = MemoryCluster(primaries=3)
        p0, p1, _p2 = c.primaries()
        epoch = c.epoch(p0)
        c.move_slot(5, p0, p1)
        c.move_slot(5, p1, p0)
        assert c.owner(5) == p0 and c.epoch(p0) != epoch

    def test_setslot_refusals(self) -> None:
        c = MemoryCluster(primaries=2)
        p0, p1 = c.primaries()
        c.set([key_in(4)])
        with pytest.raises(ResponseError, match="still hold keys"):
            c.setslot_node(4, p1, on=p0)
        with pytest.raises(ResponseError, match="already the owner"):
            c.setslot_importing(4, p0, p1)
        with pytest.raises(ResponseError, match="not the owner"):
            c.setslot_migrating(4, p1, p0)

    def test_migrate_keys_in_steps(self) -> None:
        c = MemoryCluster(primaries=2)
        p0, p1 = c.primaries()
        keys = keys_in(9, 10)
        c.set(keys)
        c.setslot_importing(9, p1, p0)
        c.setslot_migrating(9, p0, p1)
        assert c.migrate_keys(9, p0, p1, 4) == 4
        assert len(c.node_keys(p0)) == 6 and len(c.node_keys(p1)) == 4
        assert c.keys() == set(keys)


class TestFailures:
    async def test_failover_promotes_replica(self) -> None:
        c = MemoryCluster(primaries=2, replicas=1)
        p0, _p1 = c.primaries()
        (r,) = c.replicas_of(p0)
        c.set(keys_in(1, 3))
        c.kill(p0)
        new = c.failover(p0)
        assert new == r and c.owner(1) == r and c.epoch(r) == c.current_epoch
        assert c.keys() == set(keys_in(1, 3))
        view = await c.node(r).cluster_view()
        assert view is not None and view.owner(1) == r and r not in view.replicas
        with pytest.raises(ConnectionError):
            await c.node(p0).ownership()

    async def test_failover_without_replica_makes_a_node(self) -> None:
        c = MemoryCluster(primaries=2)
        p0, p1 = c.primaries()
        c.set(keys_in(1, 3))
        c.kill(p0)
        new = c.failover(p0)
        assert new not in (p0, p1) and c.owner(1) == new and c.role(p0) == "gone"
        assert c.keys() == set(keys_in(1, 3))
        assert 1 in (await c.node(new).ownership()).owned

    async def test_kill_and_revive(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        c.kill(p)
        with pytest.raises(ConnectionError):
            await c.node(p).scan(0, b"*", 10)
        assert await c.node(p).script_ready("batch") is False  # not an error, as redis_io
        c.revive(p)
        assert await c.node(p).scan(0, b"*", 10) == (0, [])
        assert await c.node(p).script_ready("batch") is True

    async def test_freeze_blocks_until_thaw(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        c.freeze(p)
        with pytest.raises(TimeoutError), anyio.fail_after(0.05):
            await c.node(p).dbsize()
        got: list[int] = []
        started = anyio.Event()

        def seen(node: NodeAddr, op: str) -> None:
            started.set()

        c.on_call(seen)
        async with anyio.create_task_group() as tg:
            async def call() -> None:
                got.append(await c.node(p).dbsize())

            tg.start_soon(call)
            await started.wait()
            await anyio.lowlevel.checkpoint()
            assert got == []
            c.thaw(p)
        assert got == [0]

    async def test_kill_wakes_frozen_calls(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        c.freeze(p)
        errors: list[BaseException] = []
        entered = anyio.Event()
        c.on_call(lambda node, op: entered.set())
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                async def call() -> None:
                    try:
                        await c.node(p).dbsize()
                    except ConnectionError as exc:
                        errors.append(exc)

                tg.start_soon(call)
                await entered.wait()
                c.kill(p)
        assert len(errors) == 1

    async def test_slow_delays(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        c.slow(p, 1.0)
        with pytest.raises(TimeoutError), anyio.fail_after(0.05):
            await c.node(p).dbsize()
        c.slow(p, 0)
        assert await c.node(p).dbsize() == 0


class TestInjection:
    async def test_error_for_n_calls(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        c.inject(p, "scan", ConnectionError, times=2)
        for _ in range(2):
            with pytest.raises(ConnectionError, match="injected"):
                await c.node(p).scan(0, b"*", 10)
        assert await c.node(p).scan(0, b"*", 10) == (0, [])

    async def test_reply_instead_of_call(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        c.inject(p, "dbsize", 42)
        assert await c.node(p).dbsize() == 42
        assert await c.node(p).dbsize() == 0

    async def test_connection_lost_mid_pipeline(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        keys = [[k] for k in keys_in(1, 5)]
        c.set(k for (k,) in keys)
        c.inject(p, "key_commands", ConnectionError("lost"), after=2)
        told: list[tuple[int, object]] = []
        with pytest.raises(ConnectionError, match="lost"):
            await c.node(p).key_commands("UNLINK", keys, window=10,
                                         on_reply=lambda i, r: told.append((i, r)))
        assert told == [(0, 1), (1, 1)]
        assert len(c.keys()) == 3

    async def test_injected_replies(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        c.set([b"a", b"b"])
        c.inject_replies(p, "key_commands", redis_error("TRYAGAIN later"), commands=1)
        first, second = await c.node(p).key_commands("UNLINK", [[b"a"], [b"b"]], window=2)
        assert isinstance(first, TryAgainError) and second == 1
        assert c.keys() == {b"a"}

    def test_unknown_operation_refused(self) -> None:
        c = MemoryCluster(primaries=1)
        with pytest.raises(ValueError, match="unknown operation"):
            c.inject(c.primaries()[0], "scna", ConnectionError)

    async def test_hooks_and_call_log(self) -> None:
        c = MemoryCluster(primaries=2)
        p0, p1 = c.primaries()
        seen: list[tuple[NodeAddr, str]] = []
        remove = c.on_call(lambda node, op: seen.append((node, op)))
        await c.node(p0).dbsize()
        await c.node(p1).ownership()
        remove()
        await c.node(p1).dbsize()
        assert seen == [(p0, "dbsize"), (p1, "ownership")]
        assert c.call_count(p1) == 2 and c.call_count(operation="dbsize") == 2
        c.reset_calls()
        assert c.call_count() == 0

    async def test_hook_may_fail_the_call(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()

        def boom(node: NodeAddr, op: str) -> None:
            raise ClusterDownError("The cluster is down")

        c.on_call(boom)
        with pytest.raises(ClusterDownError):
            await c.node(p).dbsize()


class TestSteps:
    async def test_batch_calls_report_failed_indexes(self) -> None:
        c = MemoryCluster(primaries=2)
        p0, _p1 = c.primaries()
        mine, theirs = keys_in(2, 3), keys_in(16000, 2)
        c.set(mine + theirs)
        replies = await c.node(p0).batch_calls(
            [[(2, mine[:2]), (16000, theirs)], [(2, mine[2:])]], window=2)
        assert replies == [(2, [1]), (1, [])]
        assert c.keys() == set(theirs)

    async def test_scripts_refused(self) -> None:
        c = MemoryCluster(primaries=1, replicas=1)
        (p,) = c.primaries()
        (r,) = c.replicas_of(p)
        c.script_support(p, False)
        assert await c.node(p).script_ready("scan_step") is False
        with pytest.raises(NoScriptError):
            await c.node(p).scan_step(0, b"*", 10)
        with pytest.raises(ReadOnlyError):
            await c.node(r).scan_step(0, b"*", 10)

    async def test_scan_step_returns_keys_it_cannot_delete(self) -> None:
        c = MemoryCluster(primaries=2)
        src, dst = c.primaries()
        slot = 50
        keys = keys_in(slot, 4)
        c.set(keys)
        c.setslot_importing(slot, dst, src)
        c.setslot_migrating(slot, src, dst)
        c.migrate_keys(slot, src, dst, 2)
        c.set([b"other:1"], node=dst)
        io = c.node(dst)
        cursor, matched, deleted, left = 0, 0, 0, []
        while True:
            step = await io.scan_step(cursor, b"*", 3)
            matched += step.matched
            deleted += step.deleted
            left.extend(step.left)
            cursor = step.cursor
            if cursor == 0:
                break
        other_owned = c.owner(key_slot(b"other:1")) == dst
        assert sorted(left) == sorted(keys[:2] + ([] if other_owned else [b"other:1"]))
        assert matched == 3 and deleted == (1 if other_owned else 0)

    async def test_slot_walk_unproven_big_prefixes_and_resume(self) -> None:
        c = MemoryCluster(primaries=2)
        p0, p1 = c.primaries()
        c.set(keys_in(10, 3, "a"))
        c.set(keys_in(11, 5, "b"))  # over the cap
        c.set([key_in(12) + b":a1", key_in(12) + b":ab"])
        c.set(keys_in(13, 2, "z"))
        c.setslot_migrating(14, p0, p1)
        c.setslot_node(15, p1, on=p0)  # given away: no longer served here
        ranges: deque[tuple[int, int]] = deque([(10, 16), (20, 20)])
        steps: list[tuple[int, int, SlotWalkStep]] = []
        tag10, tag12 = key_in(10), key_in(12)
        await c.node(p0).slot_walk(
            [tag10 + b":a", tag12 + b":a", tag12], ranges, budget=3, cap=4,
            on_step=lambda lo, hi, s: steps.append((lo, hi, s)), max_calls=1, empty_key=False)
        ((lo, hi, first),) = steps
        assert (lo, hi, first.next_slot) == (10, 10, 11) and first.examined == 3
        assert first.per_prefix == {0: 3} and first.deleted == 3
        assert list(ranges) == [(11, 16), (20, 20)]
        await c.node(p0).slot_walk(
            [tag10 + b":a", tag12 + b":a", tag12], ranges, budget=100, cap=4,
            on_step=lambda lo, hi, s: steps.append((lo, hi, s)), max_calls=10, empty_key=False)
        assert not ranges
        second = steps[1][2]
        assert steps[1][:2] == (11, 16) and second.next_slot == -1
        assert second.big_slots == [11] and second.unproven == [14, 15]
        assert second.per_prefix == {1: 2}  # counted under the first prefix that fits
        assert steps[2][:2] == (20, 20)
        assert c.keys() == set(keys_in(11, 5, "b") + keys_in(13, 2, "z"))

    async def test_slot_walk_empty_key(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        c.set([b"", b"a"])
        slot = key_slot(b"")
        steps: list[SlotWalkStep] = []
        for empty_key, left in ((False, {b""}), (True, set())):
            await c.node(p).slot_walk([b""], deque([(slot, slot)]), budget=100, cap=100,
                                      on_step=lambda lo, hi, s: steps.append(s), max_calls=1,
                                      empty_key=empty_key)
            assert steps[-1].matched == (1 if empty_key else 0)
            assert {b""} & c.keys() == left

    async def test_slot_walk_error_keeps_ranges(self) -> None:
        c = MemoryCluster(primaries=1)
        (p,) = c.primaries()
        c.inject(p, "slot_walk", ConnectionError, times=1)
        ranges: deque[tuple[int, int]] = deque([(0, 100)])
        with pytest.raises(ConnectionError):
            await c.node(p).slot_walk([b"a"], ranges, budget=10, cap=10,
                                      on_step=lambda lo, hi, s: None, max_calls=5,
                                      empty_key=False)
        assert list(ranges) == [(0, 100)]
