"""Small calls (a few exact keys, sent to every owner before any reply is read, in one task) when
a primary freezes: the call ends on time as partial with exactly that node's slots uncovered, the
other nodes' keys are deleted and counted, and the same invalidator completes once it thaws."""

from __future__ import annotations

import contextlib
import time

import anyio
import pytest
import redis
from faultkit import ClusterFactory, client, migrate_slots, node_id
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator, InvalidationError
from clusterinval._core.slots import SlotSet, key_slot
from clusterinval.testing.fill import fill_keys, scan_all_keys

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TIMEOUT_S = 3.0
MARGIN_S = 2.5


def _one_key_per_primary(url: str, prefix: str = "small") -> dict[int, bytes]:
    """A key owned by each primary, by the primary's port."""
    rc = redis.RedisCluster.from_url(url)
    try:
        found: dict[int, bytes] = {}
        n = 0
        while len(found) < len(rc.get_primaries()):
            key = f"{prefix}:{n}".encode()
            found.setdefault(int(rc.get_node_from_key(key).port), key)
            n += 1
        return found
    finally:
        rc.close()


@pytest.mark.parametrize("warm", ["every node", "one node"])
async def test_frozen_owner_of_one_key_leaves_only_its_slot_uncovered(
        make_cluster: ClusterFactory, warm: str) -> None:
    """With a connection open to every node the call sends to all of them before it reads
    (one task); with none to the frozen node it takes a task per node. Same outcome."""
    # A node timeout far beyond the run's deadline: the cluster must not fail the node over.
    cluster = make_cluster(replicas=0, node_timeout_ms=120_000)
    keys = _one_key_per_primary(cluster.url)
    fill_keys(cluster.url, [*keys.values(), b"small:kept"])
    victim = next(n for n in cluster.primaries() if f":{n.port}" not in cluster.url)
    frozen_key = keys[victim.port]
    async with ClusterInvalidator.from_url(
        cluster.url, registry=CollectorRegistry(), timeout_s=TIMEOUT_S, command_timeout_s=1.0,
    ) as inv:
        # Open a connection to every node, or to one only, before one of them freezes.
        every = list(_one_key_per_primary(cluster.url, "warm").values())
        warm_keys = every if warm == "every node" else every[:1]
        fill_keys(cluster.url, warm_keys)
        await inv.invalidate(keys=warm_keys)
        cluster.pause(victim.port)
        try:
            started = time.monotonic()
            with pytest.raises(InvalidationError) as caught:
                with anyio.fail_after(TIMEOUT_S + 10):
                    await inv.invalidate(keys=list(keys.values()))
            elapsed = time.monotonic() - started
            result = caught.value.result
            assert elapsed < TIMEOUT_S + MARGIN_S, f"call took {elapsed:.1f} s"
            assert not result.complete
            assert SlotSet.from_ranges(result.uncovered_slots) == SlotSet([key_slot(frozen_key)])
            # Every other node confirmed its key, and each confirmation was counted.
            assert result.deleted == len(keys) - 1
        finally:
            cluster.resume(victim.port)
        # The same invalidator, once the node answers again, finishes the job.
        with anyio.fail_after(30):
            retry = await inv.invalidate(keys=list(keys.values()))
        # An UNLINK written before the node froze runs when it thaws: 0 or 1 key left for it.
        assert retry.complete and retry.deleted in (0, 1)
    assert scan_all_keys(cluster.url) == {b"small:kept"}


def _tagged_keys(url: str, port: int, n: int, tag: str) -> list[bytes]:
    """``n`` keys of one slot served by the primary on ``port`` (one hash tag)."""
    rc = redis.RedisCluster.from_url(url)
    try:
        i = 0
        while True:
            keys = [f"{{{tag}{i}}}:{j}".encode() for j in range(n)]
            if int(rc.get_node_from_key(keys[0]).port) == port:
                return keys
            i += 1
    finally:
        rc.close()


async def test_small_call_follows_a_slot_that_moved_since_the_view(
        make_cluster: ClusterFactory) -> None:
    """A slot moved after the invalidator read the cluster: its keys get MOVED on the way
    straight to the old owner, and the call still deletes and counts every key."""
    cluster = make_cluster(replicas=0)
    src, dst = (n.port for n in cluster.primaries()[:2])
    ports = [n.port for n in cluster.nodes]
    moving = _tagged_keys(cluster.url, src, 2, "mv")
    others = list(_one_key_per_primary(cluster.url, "other").values())
    async with ClusterInvalidator.from_url(cluster.url, registry=CollectorRegistry()) as inv:
        fill_keys(cluster.url, others)
        await inv.invalidate(keys=others)  # connections open to every primary, view read
        fill_keys(cluster.url, [*moving, *others, b"small:kept"])
        migrate_slots(src, dst, [key_slot(moving[0])], ports)
        result = await inv.invalidate(keys=[*moving, *others])
        assert result.complete
        assert result.deleted == result.exact_deleted == len(moving) + len(others)
        by_node = {n.node: n.deleted for n in result.nodes}
        assert by_node.get(f"127.0.0.1:{dst}", 0) >= len(moving)
        # The next call goes straight to the new owner.
        fill_keys(cluster.url, moving)
        again = await inv.invalidate(keys=moving)
        assert again.complete and again.deleted == len(moving)
    assert scan_all_keys(cluster.url) == {b"small:kept"}


async def test_small_call_in_a_slot_being_migrated(make_cluster: ClusterFactory) -> None:
    """Keys of one slot split between the source and the target of a migration (TRYAGAIN, then
    ASK), beside keys of other nodes: every key is deleted once and counted once."""
    cluster = make_cluster(replicas=0)
    src, dst = (n.port for n in cluster.primaries()[:2])
    slot_keys = _tagged_keys(cluster.url, src, 4, "mg")
    leave = slot_keys[2:]  # the other two stay on the source
    others = list(_one_key_per_primary(cluster.url, "other").values())
    slot = key_slot(slot_keys[0])
    async with ClusterInvalidator.from_url(cluster.url, registry=CollectorRegistry()) as inv:
        fill_keys(cluster.url, others)
        await inv.invalidate(keys=others)
        fill_keys(cluster.url, [*slot_keys, *others, b"small:kept"])
        with client(src) as s, client(dst) as d:
            d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(src))
            s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(dst))
            s.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *leave)
            try:
                split = await inv.invalidate(keys=[*slot_keys, *others])
                assert split.complete
                assert split.deleted == len(slot_keys) + len(others)
                # Keys all gone from the source now: one call, answered by ASK.
                with d.pipeline(transaction=False) as pipe:  # on the importing node
                    pipe.execute_command("ASKING")
                    pipe.set(leave[0], b"v")
                    pipe.execute()
                asked = await inv.invalidate(keys=[leave[0]])
                assert asked.complete and asked.deleted == 1
            finally:
                for port in (n.port for n in cluster.nodes):
                    with contextlib.suppress(redis.RedisError), client(port) as c:
                        c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", node_id(src))
    assert scan_all_keys(cluster.url) == {b"small:kept"}
