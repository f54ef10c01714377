"""A primary frozen (SIGSTOP) past the run's deadline: the run ends on time as partial, names that
node's slots, and a retry after SIGCONT completes."""

from __future__ import annotations

import time

import anyio
import pytest
from faultkit import ClusterFactory, check_outcome, fill, make_keyset, owned_slots, until_deleted
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator, InvalidationError
from clusterinval._core.slots import SlotSet

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TIMEOUT_S = 6.0
MARGIN_S = 2.5


async def test_frozen_primary_past_deadline(make_cluster: ClusterFactory) -> None:
    # A node timeout far beyond the run's deadline: the cluster must not fail the node over.
    cluster = make_cluster(replicas=0, node_timeout_ms=120_000)
    keys = make_keyset(100_000, 10_000)
    fill(cluster.url, keys)
    victim = next(n for n in cluster.primaries() if f":{n.port}" not in cluster.url)
    victim_slots = SlotSet(owned_slots(victim.port))
    caught: list[InvalidationError] = []
    async with ClusterInvalidator.from_url(
        cluster.url, registry=CollectorRegistry(), keys_per_second=30_000, timeout_s=TIMEOUT_S,
    ) as inv:
        watch = inv.progress_watch()

        async def invalidate() -> None:
            try:
                await inv.invalidate(patterns=[keys.pattern], progress=watch)
            except InvalidationError as exc:
                caught.append(exc)

        with anyio.fail_after(TIMEOUT_S + 10):
            async with anyio.create_task_group() as tg:
                started = time.monotonic()
                tg.start_soon(invalidate)
                await until_deleted(watch, 5_000)
                cluster.pause(victim.port)
        elapsed = time.monotonic() - started
        try:
            assert caught, "the run claimed completion with a frozen primary"
            assert elapsed < TIMEOUT_S + MARGIN_S, f"run took {elapsed:.1f} s"
            result = caught[0].result
            assert not result.complete
            uncovered = SlotSet()
            for lo, hi in result.uncovered_slots:
                uncovered.add_range(lo, hi)
            assert len(uncovered) > 0
            assert len(uncovered.difference(victim_slots)) == 0, "healthy nodes' slots uncovered"
            assert any("deadline" in e for e in result.errors)
        finally:
            cluster.resume(victim.port)
        # The same invalidator, once the node answers again, finishes the job.
        with anyio.fail_after(30):
            retry = await inv.invalidate(patterns=[keys.pattern])
    assert retry.complete
    check_outcome(cluster.url, keys)
