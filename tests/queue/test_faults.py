"""Fault tests with real processes: workers run as `clusterinval worker` processes, clusters are
real redis-server processes. Each test ends with zero surviving targets and zero lost other keys.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import anyio
import pytest
import redis
from polling import wait_for
from prometheus_client import CollectorRegistry
from queuekit import (
    CLI,
    STREAM,
    Workers,
    assert_outcome,
    entity_keys,
    poll_until,
    seed,
    stream_counts,
)

from clusterinval import InvalidationQueue
from clusterinval._core.slots import key_slot
from clusterinval.testing._node import node_command
from clusterinval.testing._ports import pick_ports
from clusterinval.testing.fill import slot_owners
from clusterinval.testing.local import LocalCluster, LocalRedis

HOST = "127.0.0.1"


def _submit_all(url: str, patterns: list[str], *, spool: Path | None = None,
                queue_url: str | None = None, timeout_s: float = 2.0) -> list[str]:
    """Submit one request per pattern from this process; the destinations, in order."""

    async def run() -> list[str]:
        async with InvalidationQueue.from_url(url, spool=spool, queue_url=queue_url,
                                              registry=CollectorRegistry(),
                                              stream_timeout_s=timeout_s) as q:
            return [(await q.submit_receipt(patterns=[p], operation_name="fault")).destination
                    for p in patterns]

    return anyio.run(run)


def _stream_owner(cluster: LocalCluster) -> int:
    owner = slot_owners(cluster.url)[key_slot(STREAM.encode())]
    assert owner is not None
    return owner[1]


def _replicated(cluster: LocalCluster) -> None:
    for node in cluster.primaries():
        node_command(HOST, node.port, "WAIT", cluster.replica_count, 5000)


def test_killed_worker_pending_claimed_by_another(make_cluster: object, workers: Workers
                                                  ) -> None:
    """Fault 1: a worker SIGKILLed mid-batch; another claims its pending requests."""
    cluster: LocalCluster = make_cluster(primaries=3, replicas=0)  # type: ignore[operator]
    url = cluster.url
    doomed, kept = entity_keys(40)
    seed(url, doomed, kept)
    assert set(_submit_all(url, [f"user:{i}:*" for i in range(40)])) == {"stream"}
    # Freeze a primary that neither seeds the worker nor holds the stream: worker A reads the
    # whole batch and then hangs inside it.
    frozen = next(p for p in cluster.ports if p not in (cluster.ports[0], _stream_owner(cluster)))
    cluster.pause(frozen)
    a = workers.start(url, "--claim-idle", "1", consumer="A")
    wait_for(lambda: stream_counts(url)[1] == 40, 30, "worker A to hold all 40 requests")
    a.kill()
    a.wait(timeout=10)
    cluster.resume(frozen)
    workers.start(url, "--claim-idle", "1", consumer="B")
    wait_for(lambda: stream_counts(url) == (0, 0, 0), 60, "worker B to finish A's requests")
    assert "claimed" in workers.log("B")
    assert_outcome(url, doomed, kept)


def test_queue_unreachable_spools_then_exactly_once(cluster_url: str, workers: Workers,
                                                    tmp_path: Path) -> None:
    """Fault 2: the queue's Redis down while submitting; spooled, then in the stream once."""
    doomed, kept = entity_keys(20)
    seed(cluster_url, doomed, kept)
    (port,) = pick_ports(1, cluster_bus=False)
    queue_url = f"redis://{HOST}:{port}"
    spool = tmp_path / "app.spool"
    registry = CollectorRegistry()

    async def app() -> None:
        async with InvalidationQueue.from_url(cluster_url, queue_url=queue_url, spool=spool,
                                              registry=registry, stream_timeout_s=0.5) as q:
            for i in range(20):  # nothing raises while the queue is down
                receipt = await q.submit_receipt(patterns=[f"user:{i}:*"],
                                                 operation_name="fault")
                assert receipt.destination == "spool"
            assert (await q.status()).spooled == 20
            server.start()
            # A second queue on the same spool (another process starting) moves concurrently.
            async with InvalidationQueue.from_url(cluster_url, queue_url=queue_url,
                                                  spool=spool, registry=registry) as other:
                async def moved() -> bool:
                    st = await other.status()
                    return st.spooled == 0 and st.waiting == 20

                await poll_until(moved, 30, "the spool to reach the stream")

    server = LocalRedis(port=port)
    try:
        anyio.run(app)
        with redis.Redis.from_url(queue_url) as conn:
            entries = conn.xrange(STREAM)
        ids = [fields[b"id"] for _id, fields in entries]
        assert len(ids) == 20 and len(set(ids)) == 20  # each request exactly once
        workers.start(cluster_url, "--queue-url", queue_url, consumer="W")
        wait_for(lambda: stream_counts(queue_url) == (0, 0, 0), 30, "the worker to drain")
        assert_outcome(cluster_url, doomed, kept)
        assert registry.get_sample_value("clusterinval_queue_spooled_total",
                                         {"operation": "fault"}) == 20
    finally:
        workers.stop_all()
        server.stop()


def test_never_succeeds_dead_lettered_then_retried(local_cluster: LocalCluster,
                                                   cluster_url: str, workers: Workers) -> None:
    """Fault 6: refused by ACL (no UNLINK/DEL) -> dead letter; retry-dead after the fix."""
    doomed, kept = entity_keys(5)
    seed(cluster_url, doomed, kept)
    user = "qnounlink"
    for port in local_cluster.ports:
        node_command(HOST, port, "ACL", "SETUSER", user, "reset", "on", ">pw", "~*", "&*",
                     "+@all", "-unlink", "-del")
    try:
        limited = f"redis://{user}:pw@{HOST}:{local_cluster.ports[0]}"
        _submit_all(cluster_url, ["user:*"])
        workers.start(limited, "--queue-url", cluster_url, "--max-attempts", "2",
                      "--retry-base", "0.05", "--retry-max", "0.1", consumer="acl")
        wait_for(lambda: stream_counts(cluster_url) == (0, 0, 1), 30, "a dead letter")
        assert "dead-lettered" in workers.log("acl")
        with redis.RedisCluster.from_url(cluster_url) as rc:
            left = {k for k in doomed if rc.exists(k)}
            dead = rc.xrange("clusterinval:{queue}:dead")
        assert left == doomed  # nothing could be deleted
        assert b"NOPERM" in dead[0][1][b"error"].upper() or b"perm" in dead[0][1][b"error"]
        for port in local_cluster.ports:
            node_command(HOST, port, "ACL", "SETUSER", user, "+unlink", "+del")
        done = subprocess.run([CLI, "queue", "retry-dead", "--url", cluster_url],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "re-submitted 1" in done.stdout, done.stderr
        wait_for(lambda: stream_counts(cluster_url) == (0, 0, 0), 30, "the retried request")
        assert_outcome(cluster_url, doomed, kept)
    finally:
        workers.stop_all()
        for port in local_cluster.ports:
            node_command(HOST, port, "ACL", "DELUSER", user)


def test_whole_cluster_down_then_all_applied(make_cluster: object, workers: Workers,
                                             tmp_path: Path) -> None:
    """Fault 4: every node frozen for a while; requests wait (pending or spooled), then apply."""
    cluster: LocalCluster = make_cluster(primaries=3, replicas=0)  # type: ignore[operator]
    url = cluster.url
    doomed, kept = entity_keys(10)
    seed(url, doomed, kept)
    workers.start(url, "--claim-idle", "2", consumer="W")
    spool = tmp_path / "app.spool"

    async def app() -> None:
        async with InvalidationQueue.from_url(url, spool=spool, registry=CollectorRegistry(),
                                              stream_timeout_s=0.5) as q:
            for i in range(5):
                await q.submit(patterns=[f"user:{i}:*"], operation_name="fault")
            for port in cluster.ports:
                cluster.pause(port)
            try:
                for i in range(5, 10):  # the cluster is down: spooled, nothing raises
                    receipt = await q.submit_receipt(patterns=[f"user:{i}:*"],
                                                     operation_name="fault")
                    assert receipt.destination == "spool"
            finally:
                for port in cluster.ports:
                    cluster.resume(port)
            async def finished() -> bool:
                return (await q.status()).unfinished == 0

            await poll_until(finished, 60, "every request to be applied")

    anyio.run(app)
    assert stream_counts(url) == (0, 0, 0)
    assert_outcome(url, doomed, kept)


def test_primary_killed_during_batch(make_cluster: object, workers: Workers) -> None:
    """Fault 3: a primary killed while the worker runs a batch: done after failover or retry."""
    cluster: LocalCluster = make_cluster(primaries=3, replicas=1)  # type: ignore[operator]
    url = cluster.url
    doomed, kept = entity_keys(150, per=20)
    seed(url, doomed, kept)
    _replicated(cluster)
    victim = next(n.port for n in cluster.primaries()
                  if n.port not in (cluster.ports[0], _stream_owner(cluster)))
    _submit_all(url, [f"user:{i}:*" for i in range(150)])
    workers.start(url, "--batch", "20", "--retry-base", "0.2", consumer="W")
    wait_for(lambda: stream_counts(url)[0] < 150, 30, "the worker to start")
    cluster.kill(victim)
    unfinished = stream_counts(url)[0]
    assert unfinished > 0, "the worker finished before the kill: nothing was tested"
    cluster.wait_ok(30)
    wait_for(lambda: stream_counts(url) == (0, 0, 0), 90, "every request to be applied")
    assert_outcome(url, doomed, kept)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_worker_with_exit_0(cluster_url: str, workers: Workers,
                                         sig: signal.Signals) -> None:
    """SIGTERM/SIGINT: the worker finishes its batch and exits 0."""
    doomed, kept = entity_keys(10)
    seed(cluster_url, doomed, kept)
    proc = workers.start(cluster_url, consumer=f"sig{int(sig)}")
    wait_for(lambda: "reading" in workers.log(f"sig{int(sig)}"), 30, "the worker to start")
    _submit_all(cluster_url, [f"user:{i}:*" for i in range(10)])
    wait_for(lambda: stream_counts(cluster_url) == (0, 0, 0), 30, "the requests to apply")
    proc.send_signal(sig)
    assert proc.wait(timeout=15) == 0
    assert_outcome(cluster_url, doomed, kept)
