"""Concurrent tag invalidations in shared batches, on the in-memory cluster: every caller's own
figures, a driver that leaves mid-batch, one tag asked for twice, and what a batch leaves behind."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iocontract import keys_in
from memkit import invalidator, outcome

from clusterinval._core.tags import set_key, tag_slot, takes_key
from clusterinval._core.values import NodeAddr
from clusterinval._io.memory import MemoryCluster
from clusterinval.result import InvalidationResult

pytestmark = pytest.mark.anyio

TAGS = [f"t{i}".encode() for i in range(8)]


def bookkeeping(cluster: MemoryCluster) -> set[bytes]:
    stored = cluster.keys()
    return {k for k in stored if k.startswith(b"clusterinval:tag:")}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    members=st.lists(st.lists(st.integers(0, 60), max_size=12), min_size=8, max_size=8),
    calls=st.lists(st.lists(st.integers(0, 7), min_size=1, max_size=3, unique=True),
                   min_size=1, max_size=12),
    waves=st.integers(1, 3),
)
async def test_every_caller_counts_its_own_keys_and_every_member_goes(
        members: list[list[int]], calls: list[list[int]], waves: int) -> None:
    cluster = MemoryCluster(primaries=3)
    index = {t: {f"k:{m}".encode() for m in ms} for t, ms in zip(TAGS, members, strict=True)}
    bystanders = {f"other:{i}".encode() for i in range(20)}
    cluster.set(sorted(set().union(*index.values()) | bystanders))
    for tag, keys in index.items():
        if keys:
            cluster.sadd(set_key(tag), sorted(keys))
    asked = {TAGS[i] for call in calls for i in call}
    doomed = set().union(*(index[t] for t in asked))
    results: list[InvalidationResult | None] = [None] * len(calls)
    inv = invalidator(cluster)
    async with inv:

        async def one(n: int) -> None:
            results[n] = await outcome(inv, tags=[TAGS[i] for i in calls[n]],
                                       operation_name="batch")

        # Callers arrive in waves: some while a batch runs, so later ones form the next batch.
        async with anyio.create_task_group() as tg:
            for n in range(len(calls)):
                tg.start_soon(one, n)
                if n % max(1, len(calls) // waves) == 0:
                    await anyio.lowlevel.checkpoint()
        assert all(r is not None and r.complete for r in results), results
        done = [r for r in results if r is not None]
        # Each key is removed once: counted by exactly one caller, never twice, never lost.
        assert sum(r.deleted for r in done) == len(doomed)
        for r, call in zip(done, calls, strict=True):
            assert r.deleted == sum(n for _tag, n in r.per_tag)
            mine = set().union(*(index[TAGS[i]] for i in call))
            others = set().union(*(index[TAGS[i]] for c in calls if c is not call for i in c))
            if not mine & others:
                # Nobody else asked for these keys: the figures are those of a lone run.
                assert r.deleted == len(mine)
                for tag, n in r.per_tag:
                    tag_keys = index[tag.encode()]
                    shared = set().union(*(index[TAGS[i]] for i in call if TAGS[i] != tag.encode()))
                    if not tag_keys & shared:
                        assert n == len(tag_keys)
    left = cluster.keys()
    assert not doomed & left
    assert bystanders <= left
    assert set().union(*(index[t] for t in TAGS if t not in asked)) - doomed <= left
    # Closed: no taken set or registration is left, and the asked tags' sets are gone.
    assert not {k for k in bookkeeping(cluster) if any(t in k for t in asked)}


async def test_a_driver_that_leaves_mid_batch_leaves_the_others_complete() -> None:
    cluster = MemoryCluster(primaries=3)
    tags = [b"first", b"a", b"b", b"c"]
    index = {t: {t + b":%d" % i for i in range(5)} for t in tags}
    for tag, keys in index.items():
        cluster.set(sorted(keys))
        cluster.sadd(set_key(tag), sorted(keys))
    first_node = cluster.owner(tag_slot(b"first"))
    assert first_node is not None
    scopes: dict[int, anyio.CancelScope] = {}
    results: dict[bytes, InvalidationResult] = {}
    cancelled: list[bytes] = []
    takes = 0

    drivers: list[int] = []

    def hook(_node: NodeAddr, operation: str) -> None:
        nonlocal takes
        if operation == "tag_take":
            takes += 1
            if takes == 2:  # the second batch's first take: its driver leaves now
                scopes[drivers[-1]].cancel()

    inv = invalidator(cluster)
    batches = inv._tag_batches
    assert batches is not None
    drive = batches._drive

    async def recorded(batch: Any) -> None:
        drivers.append(anyio.get_current_task().id)
        await drive(batch)

    batches._drive = recorded  # type: ignore[method-assign]
    async with inv:

        async def one(tag: bytes) -> None:
            with anyio.CancelScope() as scope:
                scopes[anyio.get_current_task().id] = scope
                results[tag] = await outcome(inv, tags=[tag], operation_name="batch")
            if scope.cancelled_caught:
                cancelled.append(tag)

        cluster.freeze(first_node)  # the first batch waits, so a, b and c form the next one
        remove = cluster.on_call(hook)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(one, b"first")
                await anyio.wait_all_tasks_blocked()
                for tag in tags[1:]:
                    tg.start_soon(one, tag)
                await anyio.wait_all_tasks_blocked()
                cluster.thaw(first_node)
        finally:
            remove()
    assert len(cancelled) == 1 and cancelled[0] != b"first"
    left = cluster.keys()
    for tag in tags:
        if tag in cancelled:
            continue
        assert results[tag].complete
        assert results[tag].deleted == 5
        assert not index[tag] & left
    assert not {k for k in bookkeeping(cluster) if not any(t in k for t in cancelled)}


async def test_one_tag_asked_twice_at_once_is_removed_once() -> None:
    cluster = MemoryCluster(primaries=3)
    keys = {b"u:%d" % i for i in range(30)}
    cluster.set(sorted(keys))
    cluster.sadd(set_key(b"u"), sorted(keys))
    inv = invalidator(cluster)
    found: list[InvalidationResult] = []
    async with inv, anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(lambda: _append(found, outcome(inv, tags=[b"u"])))
    assert all(r.complete for r in found)
    assert sum(r.deleted for r in found) == 30
    assert not keys & cluster.keys()
    assert not bookkeeping(cluster)


async def _append(found: list[InvalidationResult], pending: Any) -> None:
    found.append(await pending)


async def test_a_finished_set_is_dropped_by_the_next_batch_or_at_close() -> None:
    cluster = MemoryCluster(primaries=3)
    for tag in (b"x", b"y"):
        cluster.set([tag + b":1", tag + b":2"])
        cluster.sadd(set_key(tag), [tag + b":1", tag + b":2"])
    inv = invalidator(cluster)
    async with inv:
        assert (await inv.invalidate(tags=[b"x"])).deleted == 2
        # Its members are gone; the taken set waits for the next exchange with the node.
        assert takes_key(b"x") in bookkeeping(cluster)
        assert (await inv.invalidate(tags=[b"y"])).deleted == 2
        assert takes_key(b"x") not in bookkeeping(cluster)
        assert takes_key(b"y") in bookkeeping(cluster)
    assert not bookkeeping(cluster)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(at_call=st.integers(0, 40), victim=st.integers(0, 2), callers=st.integers(2, 8))
async def test_a_failover_mid_batch_is_reported_never_hidden(
        at_call: int, victim: int, callers: int) -> None:
    cluster = MemoryCluster(primaries=3, replicas=1)
    index = {b"e%d" % e: [b"e%d:%d" % (e, j) for j in range(6)] for e in range(callers)}
    for tag, keys in index.items():
        cluster.set(keys)
        cluster.sadd(set_key(tag), keys)
    primary = cluster.primaries()[victim]
    seen = 0

    def hook(_node: NodeAddr, _operation: str) -> None:
        nonlocal seen
        seen += 1
        if seen == at_call:
            cluster.failover(primary)  # its replica takes over, with every write it had

    inv = invalidator(cluster)
    first: dict[bytes, InvalidationResult] = {}
    async with inv:
        remove = cluster.on_call(hook)
        try:
            async with anyio.create_task_group() as tg:
                for tag in index:
                    tg.start_soon(lambda t=tag: _store(first, t, outcome(inv, tags=[t])))
        finally:
            remove()
        for tag, result in first.items():
            if result.complete:
                assert not set(index[tag]) & cluster.keys(), "complete, yet a member survived"
            else:
                assert result.uncovered_slots
        # Every tag asked again: whatever the first round left, the second finishes.
        for tag in index:
            assert (await outcome(inv, tags=[tag])).complete
    assert not set().union(*map(set, index.values())) & cluster.keys()
    assert not bookkeeping(cluster)


async def _store(found: dict[bytes, InvalidationResult], tag: bytes, pending: Any) -> None:
    found[tag] = await pending


async def test_members_split_by_a_migration_are_counted_for_their_tag() -> None:
    # The members share a slot that is half moved: their UNLINK meets TRYAGAIN and goes one key
    # at a time, on whichever node holds each key; every key still counts for its tag.
    cluster = MemoryCluster(primaries=3)
    src, dst = cluster.primaries()[:2]
    slot = next(s for s in range(16384) if cluster.owner(s) == src and s != tag_slot(b"mig"))
    members = keys_in(slot, 4, "mig")
    cluster.set(members)
    cluster.sadd(set_key(b"mig"), members)
    cluster.setslot_importing(slot, dst, src)
    cluster.setslot_migrating(slot, src, dst)
    assert cluster.migrate_keys(slot, src, dst, keys=members[:2]) == 2
    inv = invalidator(cluster)
    async with inv:
        result = await outcome(inv, tags=[b"mig"])
    assert result.complete and result.deleted == 4 and result.per_tag == (("mig", 4),)
    assert not set(members) & cluster.keys()


async def test_a_take_never_sent_in_time_is_not_reported_done() -> None:
    """The takes' timer runs out while one node's write waits (the node is frozen): that node's
    tags were never taken, so the call must not say they are gone."""
    cluster = MemoryCluster(primaries=2)
    first, second = cluster.primaries()
    tag_a = next(t for t in (f"a{i}".encode() for i in range(1000))
                 if cluster.owner(tag_slot(t)) == first)
    tag_b = next(t for t in (f"b{i}".encode() for i in range(1000))
                 if cluster.owner(tag_slot(t)) == second)
    cluster.set([b"a:1", b"b:1"])
    cluster.sadd(set_key(tag_a), [b"a:1"])
    cluster.sadd(set_key(tag_b), [b"b:1"])
    inv = invalidator(cluster, command_timeout_s=0.2, timeout_s=1.0)
    async with inv:
        await inv.invalidate(keys=[b"warm"])
        cluster.freeze(second)
        try:
            with anyio.fail_after(10):
                result = await outcome(inv, tags=[tag_a, tag_b], operation_name="frozen")
        finally:
            cluster.thaw(second)
    uncovered = {s for lo, hi in result.uncovered_slots for s in range(lo, hi + 1)}
    stored = cluster.keys()
    assert b"b:1" in stored
    assert not result.complete and tag_slot(tag_b) in uncovered
    # The other tag: gone, or said not to be.
    assert b"a:1" not in stored or tag_slot(tag_a) in uncovered
