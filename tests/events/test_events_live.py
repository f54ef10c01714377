"""Invalidation events on real servers: what a run publishes, how subscribers receive it (async
and blocking), and a second process whose local cache follows an invalidation made here."""

from __future__ import annotations

import functools
import json
import logging
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from anyio.streams.buffered import BufferedByteReceiveStream
from prometheus_client import CollectorRegistry

from clusterinval import ClusterConnectionError, ClusterInvalidator, SyncClusterInvalidator
from clusterinval._engine.topology import Topology
from clusterinval._io.redis_io import RedisClusterIO
from clusterinval.events import (
    CHANNEL_SLOT,
    EVENTS_CHANNEL,
    InvalidationEvent,
    SyncFollower,
    SyncSubscription,
    follow,
    publish_event,
    subscribe,
)
from clusterinval.result import InvalidationResult

pytestmark = pytest.mark.anyio

CHILD = Path(__file__).with_name("l1_child.py")


def _inv(url: str, **options: Any) -> ClusterInvalidator:
    return ClusterInvalidator.from_url(url, registry=CollectorRegistry(), **options)


def _channel_owner_port(url: str) -> int:
    rc = redis.RedisCluster.from_url(url)
    try:
        return int(rc.nodes_manager.get_node_from_slot(CHANNEL_SLOT).port)
    finally:
        rc.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestPublishedByRuns:
    async def test_one_event_per_run_with_what_the_run_did(
            self, cluster_url: str, client: redis.RedisCluster, server_major: int) -> None:
        client.mset_nonatomic({"user:1": "a", "user:1:profile": "b", "user:1:posts": "c",
                               "user:2:profile": "d"})
        async with subscribe(cluster_url) as events, _inv(cluster_url,
                                                          publish_events=True) as inv:
            assert events.sharded == (server_major >= 7)  # Redis 6.2 has no sharded pub/sub
            assert events.node == f"127.0.0.1:{_channel_owner_port(cluster_url)}"
            before = time.time()
            result = await inv.invalidate(keys=["user:1"], patterns=["user:1:*"],
                                          operation_name="user")
            with anyio.fail_after(5):
                ev = await events.receive()
        assert ev == InvalidationEvent(
            operation="user", keys=(b"user:1",), patterns=(b"user:1:*",), deleted=3,
            complete=True, published_at=ev.published_at,
        )
        assert result.deleted == 3
        assert ev.published_at is not None and before <= ev.published_at <= time.time()

    async def test_dry_runs_and_runs_without_the_option_publish_nothing(
            self, cluster_url: str) -> None:
        async with subscribe(cluster_url) as events:
            async with _inv(cluster_url) as quiet:
                await quiet.invalidate(keys=["k:1"], operation_name="quiet")
            async with _inv(cluster_url, publish_events=True) as inv:
                await inv.invalidate(patterns=["k:*"], operation_name="dry", dry_run=True)
                await inv.invalidate(keys=[b"\xff\x00binary"], operation_name="real")
            with anyio.fail_after(5):
                ev = await events.receive()
        assert ev.operation == "real" and ev.keys == (b"\xff\x00binary",)

    async def test_standalone_server_uses_plain_pubsub(self, standalone_url: str) -> None:
        r = redis.Redis.from_url(standalone_url)
        try:
            r.set("doc:9", "x")
            async with subscribe(standalone_url) as events, _inv(
                    standalone_url, publish_events=True) as inv:
                assert not events.sharded
                assert r.pubsub_numsub(EVENTS_CHANNEL) == [(EVENTS_CHANNEL, 1)]
                await inv.invalidate(patterns=["doc:*"], operation_name="doc")
                with anyio.fail_after(5):
                    ev = await events.receive()
        finally:
            r.close()
        assert (ev.operation, ev.patterns, ev.deleted, ev.complete) == ("doc", (b"doc:*",), 1, True)

    async def test_subscription_is_on_the_shard_of_the_channel(
            self, cluster_url: str, server_major: int) -> None:
        owner = _channel_owner_port(cluster_url)
        async with subscribe(cluster_url):
            with redis.Redis(port=owner) as node:
                if server_major >= 7:
                    assert node.execute_command("PUBSUB", "SHARDNUMSUB", EVENTS_CHANNEL) == [
                        EVENTS_CHANNEL, 1]
                else:  # plain pub/sub, subscribed on the channel's owner all the same
                    assert node.pubsub_numsub(EVENTS_CHANNEL) == [(EVENTS_CHANNEL, 1)]


def _topology(url: str, **options: Any) -> Topology:
    io, seeds = RedisClusterIO.from_url(url, **options)
    return Topology(io, seeds, timeout_s=io.socket_timeout)


class TestPublishEvent:
    async def test_incomplete_results_are_published_too(self, cluster_url: str) -> None:
        topology = _topology(cluster_url)
        result = InvalidationResult(operation="partial", deleted=4, matched=4, scanned=9,
                                    complete=False, duration_s=0.1)
        try:
            async with subscribe(cluster_url) as events:
                await topology.refresh()
                await publish_event(topology, result, [b"a"], [b"b*"])
                with anyio.fail_after(5):
                    ev = await events.receive()
        finally:
            await topology.aclose()
        assert (ev.operation, ev.keys, ev.patterns, ev.deleted, ev.complete) == (
            "partial", (b"a",), (b"b*",), 4, False)

    async def test_never_raises_and_logs_a_warning(self, caplog: pytest.LogCaptureFixture) -> None:
        topology = _topology(f"redis://127.0.0.1:{_free_port()}",
                                     socket_connect_timeout=0.5)
        result = InvalidationResult(operation="lost", deleted=0, matched=0, scanned=0,
                                    complete=True, duration_s=0.0)
        caplog.set_level(logging.WARNING, logger="clusterinval.events")
        try:
            with anyio.fail_after(10):
                await publish_event(topology, result, [b"a"], [])
        finally:
            await topology.aclose()
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        assert "invalidation event for lost not published" in caplog.records[0].getMessage()


class TestSubscribe:
    async def test_unreachable_server_raises_after_the_connect_timeout(self) -> None:
        started = time.monotonic()
        with anyio.fail_after(10), pytest.raises(ClusterConnectionError):
            async with subscribe(f"redis://127.0.0.1:{_free_port()}", connect_timeout_s=1.0):
                pass
        assert time.monotonic() - started < 5

    async def test_follow_keeps_a_local_cache_in_step(self, cluster_url: str) -> None:
        cache = dict.fromkeys(["cat:1", "cat:2", "cat:10", "dog:1", "cat:1:x"], 0)
        applied = anyio.Event()
        async with anyio.create_task_group() as tg:
            await tg.start(functools.partial(follow, cluster_url, cache,
                                             on_event=lambda ev, n: applied.set()))
            async with _inv(cluster_url, publish_events=True) as inv:
                await inv.invalidate(patterns=["cat:?"], operation_name="cat")
            with anyio.fail_after(5):
                await applied.wait()
            tg.cancel_scope.cancel()
        assert set(cache) == {"cat:10", "dog:1", "cat:1:x"}


class TestBlockingTwins:
    def test_sync_subscription_receives_events(self, cluster_url: str) -> None:
        with SyncSubscription(cluster_url) as events, SyncClusterInvalidator.from_url(
                cluster_url, registry=CollectorRegistry(), publish_events=True) as inv:
            assert events.get(timeout=0.05) is None
            inv.invalidate(keys=["s:1"], patterns=["s:2:*"], operation_name="sync")
            ev = events.get(timeout=5)
        assert ev is not None
        assert (ev.operation, ev.keys, ev.patterns) == ("sync", (b"s:1",), (b"s:2:*",))

    def test_sync_subscription_reports_an_unreachable_server(self) -> None:
        def loop_threads() -> set[threading.Thread]:
            return {t for t in threading.enumerate() if t.name == "clusterinval-sync"}

        before = loop_threads()
        with pytest.raises(ClusterConnectionError):
            SyncSubscription(f"redis://127.0.0.1:{_free_port()}", connect_timeout_s=0.5).open()
        assert loop_threads() <= before  # its loop thread is stopped, not left behind

    def test_sync_follower_applies_events_from_its_thread(self, cluster_url: str) -> None:
        cache = dict.fromkeys(["t:1", "t:2", "u:1"], 0)
        lock = threading.Lock()
        applied = threading.Event()
        with SyncFollower(cluster_url, cache, lock=lock,
                          on_event=lambda ev, n: applied.set()) as follower, \
                SyncClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry(),
                                                publish_events=True) as inv:
            inv.invalidate(patterns=["t:*"], operation_name="thr")
            assert applied.wait(5)
        with lock:
            assert set(cache) == {"u:1"}
        assert (follower.events, follower.resyncs, follower.removed) == (1, 0, 2)


async def _line(stream: BufferedByteReceiveStream) -> dict[str, Any]:
    data = await stream.receive_until(b"\n", 1 << 20)
    parsed: dict[str, Any] = json.loads(data)
    return parsed


async def test_second_process_local_cache_follows_within_250ms(
        cluster_url: str, client: redis.RedisCluster) -> None:
    """Another process's L1 cache loses exactly the matching entries within 250 ms."""
    matching = ["prod:7:detail", "prod:7:price", "prod:listing", "prod:7:{eu}:stock"]
    others = ["prod:70:detail", "prod:8:price", "prod:7", "PROD:7:detail", "user:7:prod:7:x"]
    client.mset_nonatomic(dict.fromkeys(matching + others, "v"))
    args = json.dumps({"url": cluster_url, "keys": matching + others, "events": 1})
    async with await anyio.open_process([sys.executable, str(CHILD), args]) as proc:
        assert proc.stdout is not None
        out = BufferedByteReceiveStream(proc.stdout)
        try:
            with anyio.fail_after(20):
                assert await _line(out) == {"ready": True}
            async with _inv(cluster_url, publish_events=True) as inv:
                started = time.monotonic()
                result = await inv.invalidate(keys=["prod:listing"], patterns=["prod:7:*"],
                                              operation_name="product")
                returned = time.monotonic()
            with anyio.fail_after(5):
                report = await _line(out)
            with anyio.fail_after(10):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
    latency = report["applied_at"] - returned
    print(f"\nL1 invalidation in the second process: {latency * 1000:.1f} ms after the run "
          f"returned, {(report['applied_at'] - started) * 1000:.1f} ms after it started")
    assert result.deleted == len(matching)
    assert report["operation"] == "product" and report["removed"] == len(matching)
    assert report["remaining"] == sorted(others)
    assert latency < 0.25
