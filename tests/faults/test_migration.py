"""Slots migrating between primaries while an invalidation runs: complete, nothing missed, nothing
extra deleted."""

from __future__ import annotations

import anyio
import pytest
from faultkit import (
    ClusterFactory,
    check_outcome,
    fill,
    make_keyset,
    migrate_slots,
    owned_slots,
    until_deleted,
)
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator, InvalidationResult

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.mark.parametrize("server_scripts", [True, False], ids=["script", "pipeline"])
async def test_slots_migrate_mid_run(make_cluster: ClusterFactory, server_scripts: bool) -> None:
    cluster = make_cluster(replicas=0)
    keys = make_keyset(60_000, 10_000)
    fill(cluster.url, keys)
    src, dst = (n.port for n in cluster.primaries()[:2])
    slots = owned_slots(src)[:200]
    ports = [n.port for n in cluster.nodes]
    results: list[InvalidationResult] = []
    moved: list[int] = []
    done: list[int] = []
    done_during_run: list[int] = []
    async with ClusterInvalidator.from_url(
        cluster.url, registry=CollectorRegistry(), keys_per_second=8_000, timeout_s=60,
        server_scripts=server_scripts, scan_count=200,
    ) as inv:
        watch = inv.progress_watch()

        async def invalidate() -> None:
            results.append(await inv.invalidate(patterns=[keys.pattern], progress=watch))
            done_during_run.append(len(done))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(invalidate)
                await until_deleted(watch, 5_000)
                moved.append(await anyio.to_thread.run_sync(
                    lambda: migrate_slots(src, dst, slots, ports, done=done)))
    result = results[0]
    assert moved[0] > 0
    # The migration must really overlap the run: a good share of the slots moved under it.
    assert done_during_run[0] >= 30, f"only {done_during_run[0]} slots moved during the run"
    assert result.complete and not result.uncovered_slots
    assert set(owned_slots(dst)) >= set(slots)
    check_outcome(cluster.url, keys)
