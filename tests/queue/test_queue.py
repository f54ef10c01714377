"""InvalidationQueue and QueueWorker against the real session cluster (worker in this process)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry
from queuekit import (
    CLI,
    STREAM,
    assert_outcome,
    entity_keys,
    poll_until,
    seed,
    stream_counts,
)

from clusterinval import (
    ClusterInvalidator,
    InvalidationQueue,
    InvalidPatternError,
    QueueStatus,
    QueueUnavailableError,
)
from clusterinval.metrics import Metrics
from clusterinval.queue import QueueWorker, WorkerOptions
from clusterinval.queue.request import encode, new_request
from clusterinval.queue.stream import QueueConnection, StreamNames, StreamStore
from clusterinval.testing._ports import pick_ports

pytestmark = pytest.mark.anyio


def _sample(registry: CollectorRegistry, name: str, op: str) -> float:
    value = registry.get_sample_value(name, {"operation": op})
    return 0.0 if value is None else value


@asynccontextmanager
async def running_worker(url: str, registry: CollectorRegistry, **opts: object
                         ) -> AsyncIterator[QueueWorker]:
    """A worker running in this process until the block ends."""
    inv = ClusterInvalidator.from_url(url, registry=registry)
    conn = QueueConnection(url)
    worker = QueueWorker(inv, StreamStore(conn, StreamNames.of(STREAM)),
                         WorkerOptions(**opts))  # type: ignore[arg-type]
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(10):
                await worker.ready.wait()
            yield worker
            worker.stop()
    finally:
        await inv.aclose()
        await conn.aclose()


async def _drained(q: InvalidationQueue) -> QueueStatus:
    async def done() -> QueueStatus | None:
        st = await q.status()
        return st if st.unfinished == 0 else None

    result: QueueStatus = await poll_until(done, 20, "the queue to drain")
    return result


class TestSubmitAndApply:
    async def test_requests_applied_and_counted(self, cluster_url: str, tmp_path: Path) -> None:
        doomed, kept = entity_keys(30)
        seed(cluster_url, doomed, kept)
        registry = CollectorRegistry()
        async with InvalidationQueue.from_url(cluster_url, spool=tmp_path / "q.spool",
                                              registry=registry) as q:
            ids = [await q.submit(patterns=[f"user:{i}:*"], keys=[f"user:{i}:0"],
                                  operation_name="user") for i in range(30)]
            st = await q.status()
            assert (st.waiting, st.pending, st.spooled, st.dead_letters) == (30, 0, 0, 0)
            assert st.oldest_age_s >= 0.0 and st.reachable
            async with running_worker(cluster_url, registry, consumer="w1") as worker:
                assert await q.wait(ids[-1], 20)
                await _drained(q)
            assert worker.stats.applied == 30
        assert_outcome(cluster_url, doomed, kept)
        assert _sample(registry, "clusterinval_queue_submitted_total", "user") == 30
        assert _sample(registry, "clusterinval_queue_applied_total", "user") == 30
        assert _sample(registry, "clusterinval_queue_spooled_total", "user") == 0
        assert stream_counts(cluster_url) == (0, 0, 0)

    async def test_tagged_request_applied(self, cluster_url: str) -> None:
        registry = CollectorRegistry()
        async with ClusterInvalidator.from_url(cluster_url, registry=registry) as inv:
            async with inv.tagged_writer(tags=["queued:7"]) as w:
                await w.set_many({f"q:7:{i}": "v" for i in range(5)})
            async with InvalidationQueue.from_url(cluster_url, registry=registry) as q:
                request_id = await q.submit(operation_name="tagged", tags=["queued:7"])
                async with running_worker(cluster_url, registry, consumer="w-tags"):
                    assert await q.wait(request_id, 20)
                    await _drained(q)
        assert_outcome(cluster_url, {f"q:7:{i}".encode() for i in range(5)}, set())

    async def test_bad_input_never_enters(self, cluster_url: str) -> None:
        async with InvalidationQueue.from_url(cluster_url,
                                              registry=CollectorRegistry()) as q:
            with pytest.raises(InvalidPatternError):
                await q.submit(patterns=["user:[1"], operation_name="user")
            with pytest.raises(InvalidPatternError):
                await q.submit(patterns=["*"])
            assert (await q.status()).waiting == 0
        assert stream_counts(cluster_url)[0] == 0

    async def test_wait_times_out_for_unknown_request(self, cluster_url: str) -> None:
        async with InvalidationQueue.from_url(cluster_url,
                                              registry=CollectorRegistry()) as q:
            assert await q.wait("no-such-request", 0.2) is False


class TestUnreachable:
    async def test_open_and_submit_without_redis_spools(self, tmp_path: Path) -> None:
        (port,) = pick_ports(1, cluster_bus=False)
        url = f"redis://127.0.0.1:{port}"
        registry = CollectorRegistry()
        async with InvalidationQueue.from_url(url, spool=tmp_path / "q.spool",
                                              registry=registry, stream_timeout_s=0.5) as q:
            receipt = await q.submit_receipt(keys=["k"], operation_name="op")
            assert receipt.destination == "spool"
            st = await q.status()
            assert st.spooled == 1 and not st.reachable
        assert _sample(registry, "clusterinval_queue_spooled_total", "op") == 1

    async def test_no_spool_raises(self) -> None:
        (port,) = pick_ports(1, cluster_bus=False)
        q = InvalidationQueue.from_url(f"redis://127.0.0.1:{port}", stream_timeout_s=0.5,
                                       registry=CollectorRegistry())
        with pytest.raises(QueueUnavailableError):
            await q.submit(keys=["k"])
        await q.aclose()


class TestDeliveredTwice:
    async def test_same_request_twice_applied_once(self, cluster_url: str) -> None:
        """Fault 5: the same request delivered twice is harmless and counted once."""
        doomed, kept = entity_keys(3)
        seed(cluster_url, doomed, kept)
        registry = CollectorRegistry()
        req = new_request(None, ["user:*"], "twice")
        store = StreamStore(QueueConnection(cluster_url), StreamNames.of(STREAM))
        await store.add_raw(encode(req))
        await store.add_raw(encode(req))
        assert await store.add(req) is not None  # the once-only add has not seen it yet
        assert await store.add(req) is None      # ... and now has
        await store.conn.aclose()
        async with InvalidationQueue.from_url(cluster_url, registry=registry) as q:
            async with running_worker(cluster_url, registry, consumer="w-dup") as worker:
                assert await q.wait(req.id, 20)
                await _drained(q)
            assert worker.stats.applied == 1 and worker.stats.duplicates == 2
        assert_outcome(cluster_url, doomed, kept)
        assert _sample(registry, "clusterinval_queue_applied_total", "twice") == 1
        assert stream_counts(cluster_url) == (0, 0, 0)


class TestCli:
    def test_submit_and_status_json(self, cluster_url: str) -> None:
        done = subprocess.run([CLI, "queue", "submit", "--url", cluster_url, "-p", "a:*",
                               "-o", "cli", "--json"], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert len(json.loads(done.stdout)["request_id"]) == 32
        done = subprocess.run([CLI, "queue", "status", "--url", cluster_url, "--json"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        st = json.loads(done.stdout)
        assert st["waiting"] == 1 and st["pending"] == 0 and st["dead_letters"] == 0
        assert st["stream"] == STREAM

    def test_bad_pattern_exits_2(self, cluster_url: str) -> None:
        done = subprocess.run([CLI, "queue", "submit", "--url", cluster_url, "-p", "a:[",
                               "--json"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert stream_counts(cluster_url)[0] == 0

    def test_status_unreachable_exits_3(self) -> None:
        (port,) = pick_ports(1, cluster_bus=False)
        done = subprocess.run([CLI, "queue", "status", "--url", f"redis://127.0.0.1:{port}",
                               "--json"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 3 and "unreachable" in json.loads(done.stdout)["error"]


def test_metrics_object_exports_queue_families() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.queue_submitted("x", spooled=True)
    metrics.queue_depth(3, 2, 1, 4.5)
    assert registry.get_sample_value("clusterinval_queue_spooled_total", {"operation": "x"}) == 1
    assert registry.get_sample_value("clusterinval_queue_oldest_age_seconds") == 4.5
