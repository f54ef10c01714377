"""kill -9 of a primary in the middle of a 300,000-key pattern invalidation: the run still ends
complete once the replica has taken over, nothing matching survives, nothing else is lost."""

from __future__ import annotations

import signal
import time

import anyio
import pytest
from faultkit import (
    ClusterFactory,
    check_outcome,
    fill,
    live_url,
    make_keyset,
    until_deleted,
    wait_replicated,
)
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator, InvalidationResult

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_kill_primary_mid_run(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(node_timeout_ms=1000)
    keys = make_keyset(300_000, 20_000)
    fill(cluster.url, keys)
    wait_replicated(cluster)
    victim = next(n for n in cluster.primaries() if f":{n.port}" not in cluster.url)
    url = live_url(cluster, avoid=[victim.port])
    results: list[InvalidationResult] = []
    async with ClusterInvalidator.from_url(
        url, registry=CollectorRegistry(), keys_per_second=80_000, timeout_s=60,
        command_timeout_s=2.0,
    ) as inv:
        watch = inv.progress_watch()

        async def invalidate() -> None:
            results.append(await inv.invalidate(patterns=[keys.pattern], progress=watch))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(invalidate)
                await until_deleted(watch, 60_000)
                killed_at = time.monotonic()
                await anyio.to_thread.run_sync(cluster.kill, victim.port, signal.SIGKILL)
                assert watch.snapshot().deleted < 280_000, "the run ended before the kill"
    result = results[0]
    assert result.complete and not result.uncovered_slots
    assert result.deleted >= len(keys.doomed) * 0.9  # some deletions were replayed on the replica
    assert time.monotonic() - killed_at < 45
    check_outcome(url, keys)
