"""Subscribers on dedicated clusters: a failover of the channel's shard yields a resync event and
the subscription follows the new primary; a server without sharded pub/sub gets plain PUBLISH."""

from __future__ import annotations

import signal
from collections.abc import Callable

import anyio
import pytest
import redis
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator
from clusterinval.events import CHANNEL_SLOT, EVENTS_CHANNEL, EventStream, subscribe
from clusterinval.testing.local import LocalCluster

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ClusterFactory = Callable[..., LocalCluster]  # the make_cluster fixture of conftest.py


def _owner_port(cluster: LocalCluster, avoid: int | None = None) -> int:
    for node in cluster.primaries():
        if node.port == avoid:
            continue
        with redis.Redis(port=node.port, socket_timeout=2) as c:
            for lo, hi, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if lo <= CHANNEL_SLOT <= hi:
                    return int(primary[1])
    raise AssertionError("no node serves the events channel")


def _url_avoiding(cluster: LocalCluster, port: int) -> str:
    return next(f"redis://127.0.0.1:{n.port}" for n in cluster.nodes if n.port != port)


async def _publish_and_expect(url: str, events: EventStream, operation: str) -> None:
    async with ClusterInvalidator.from_url(url, registry=CollectorRegistry(),
                                           publish_events=True) as inv:
        await inv.invalidate(keys=[f"{operation}:1"], operation_name=operation)
    with anyio.fail_after(5):
        ev = await events.receive()
    assert (ev.operation, ev.resync) == (operation, False)


async def test_primary_killed_yields_resync_then_follows_new_owner(
        make_cluster: ClusterFactory, server_major: int) -> None:
    cluster = make_cluster(node_timeout_ms=1000)
    victim = _owner_port(cluster)
    url = _url_avoiding(cluster, victim)
    async with subscribe(url, heartbeat_s=0.5) as events:
        assert events.node == f"127.0.0.1:{victim}"
        assert events.sharded == (server_major >= 7)
        await _publish_and_expect(url, events, "before")
        await anyio.to_thread.run_sync(cluster.kill, victim, signal.SIGKILL)
        with anyio.fail_after(30):
            ev = await events.receive()
        assert ev.resync and ev.reason == "reconnected"
        assert events.reconnects == 1
        new_owner = _owner_port(cluster, avoid=victim)
        assert new_owner != victim and events.node == f"127.0.0.1:{new_owner}"
        await _publish_and_expect(url, events, "after")


async def test_manual_failover_yields_resync(make_cluster: ClusterFactory,
                                            server_major: int) -> None:
    if server_major < 7:
        pytest.skip("plain pub/sub (before 7.0) reaches every node, so a failover that keeps "
                    "the subscriber's node alive loses no message and owes no resync")
    cluster = make_cluster(node_timeout_ms=1000)
    old = _owner_port(cluster)
    url = _url_avoiding(cluster, old)
    async with subscribe(url, heartbeat_s=0.5, recheck_s=1.0) as events:
        replica = next(n.port for n in cluster.replicas()
                       if _replica_of(n.port) == old)
        with redis.Redis(port=replica, socket_timeout=5) as c:
            c.execute_command("CLUSTER", "FAILOVER")
        with anyio.fail_after(30):
            ev = await events.receive()
        assert ev.resync
        # On the new primary, or on the old one now its replica: either is in the shard.
        assert events.node in (f"127.0.0.1:{replica}", f"127.0.0.1:{old}")
        await _publish_until_received(url, events)
        assert events.reconnects >= 1


async def _publish_until_received(url: str, events: EventStream) -> None:
    """Publish numbered events until one arrives; every one lost must be owned up to by a resync.

    While gossip settles after a failover the subscriber may move once more (each move emits a
    resync). What must never happen is an event lost with no resync after it.
    """
    unexplained: list[str] = []  # published, neither received nor followed by a resync yet
    with anyio.fail_after(30):
        for attempt in range(1, 1000):
            operation = f"promoted-{attempt}"
            async with ClusterInvalidator.from_url(url, registry=CollectorRegistry(),
                                                   publish_events=True) as inv:
                await inv.invalidate(keys=[f"{operation}:1"], operation_name=operation)
            unexplained.append(operation)
            with anyio.move_on_after(2):
                while True:
                    ev = await events.receive()
                    if ev.resync:
                        unexplained.clear()
                        continue
                    assert ev.operation in unexplained
                    lost = unexplained[:unexplained.index(ev.operation)]
                    assert not lost, f"{lost} lost without a resync"
                    return


def _replica_of(port: int) -> int | None:
    with redis.Redis(port=port, socket_timeout=2) as c:
        info = c.info("replication")
    return int(info["master_port"]) if info.get("role") == "slave" else None


async def test_server_without_sharded_pubsub_gets_plain_publish(
        make_cluster: ClusterFactory, server_major: int) -> None:
    # On a server with sharded pub/sub, SPUBLISH/SSUBSCRIBE are renamed away: it then answers
    # "unknown command", as Redis 6.2 does (which the server matrix runs for real).
    rename = ("--rename-command", "SPUBLISH", "", "--rename-command", "SSUBSCRIBE", "")
    cluster = make_cluster(primaries=1, replicas=0,
                           extra_args=rename if server_major >= 7 else ())
    async with subscribe(cluster.url) as events:
        assert not events.sharded
        with redis.Redis(port=cluster.primaries()[0].port) as c:
            assert c.pubsub_numsub(EVENTS_CHANNEL) == [(EVENTS_CHANNEL, 1)]
        await _publish_and_expect(cluster.url, events, "legacy")
