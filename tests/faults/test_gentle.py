"""Gentle on a live cluster: key budgets (global and per node), adaptive pacing, SCAN on replicas,
and cancellation. Nothing here breaks the cluster, so the shared session cluster serves."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import pytest
from faultkit import (
    KeySet,
    check_outcome,
    client,
    fill,
    make_keyset,
    until_deleted,
    wait_replicated,
)
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator, InvalidationResult
from clusterinval.testing.fill import scan_all_keys

pytestmark = pytest.mark.anyio

MODES = [pytest.param({}, id="script"), pytest.param({"server_scripts": False}, id="pipeline")]


async def timed_run(url: str, keys: KeySet, **options: Any) -> tuple[InvalidationResult, float]:
    async with ClusterInvalidator.from_url(url, registry=CollectorRegistry(), **options) as inv:
        started = time.monotonic()
        with anyio.fail_after(60):
            result = await inv.invalidate(patterns=[keys.pattern])
        return result, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_global_key_budget_bounds_the_rate(cluster_url: str, mode: dict[str, Any]) -> None:
    rate = 10_000.0
    keys = make_keyset(30_000, 3_000)
    fill(cluster_url, keys)
    result, elapsed = await timed_run(cluster_url, keys, keys_per_second=rate, **mode)
    assert result.complete and result.deleted == len(keys.doomed)
    # The bucket starts full (0.1 s worth), then refills at `rate`.
    assert result.deleted <= rate * elapsed + 0.1 * rate + 3 * 500
    assert elapsed >= (len(keys.doomed) - 0.1 * rate) / rate * 0.9
    check_outcome(cluster_url, keys)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_node_key_budget_bounds_each_node(cluster_url: str, mode: dict[str, Any]) -> None:
    rate = 4_000.0
    keys = make_keyset(30_000, 3_000)
    fill(cluster_url, keys)
    result, elapsed = await timed_run(cluster_url, keys, node_keys_per_second=rate, **mode)
    assert result.complete and result.deleted == len(keys.doomed)
    busiest = max(n.deleted for n in result.nodes)
    assert busiest <= rate * elapsed + 0.1 * rate + 500
    # ~10,000 keys per node: over two seconds beyond the 0.1 s burst.
    assert elapsed >= (busiest - 0.1 * rate) / rate * 0.9
    check_outcome(cluster_url, keys)


async def test_adaptive_mode_slows_down_when_latency_is_over_target(cluster_url: str) -> None:
    keys = make_keyset(3_000, 1_000)
    fill(cluster_url, keys)
    # Many small SCAN calls (the client path), so that pacing between calls adds up.
    small = {"scan_count": 100, "server_scripts": False}
    fast, fast_s = await timed_run(cluster_url, keys, **small)
    fill(cluster_url, keys)
    # A target no real round trip can meet: every call comes back "slow", so the pause grows.
    async with ClusterInvalidator.from_url(
        cluster_url, registry=CollectorRegistry(), **small,
        adaptive_latency_ms=0.001,
    ) as inv:
        started = time.monotonic()
        with anyio.fail_after(60):
            slow = await inv.invalidate(patterns=[keys.pattern])
        slow_s = time.monotonic() - started
        governor = inv._engine.limits.governor  # type: ignore[union-attr]
        assert governor is not None and governor.slowed > 0
    assert fast.complete and slow.complete and slow.deleted == fast.deleted
    assert slow_s > fast_s + 0.5, (fast_s, slow_s)
    check_outcome(cluster_url, keys)


@pytest.mark.parametrize("mode", MODES)
async def test_scan_on_replicas_deletes_on_primaries(cluster_url: str, mode: dict[str, Any],
                                                     local_cluster: Any) -> None:
    keys = make_keyset(20_000, 5_000)
    fill(cluster_url, keys)
    wait_replicated(local_cluster)
    replica_ports = {n.port for n in local_cluster.replicas()}
    result, _ = await timed_run(cluster_url, keys, scan_on_replicas=True, **mode)
    assert result.complete and result.deleted == len(keys.doomed)
    scanned_on = {int(n.node.rsplit(":", 1)[1]) for n in result.nodes if n.scan_calls}
    # SCAN calls are counted on the primaries' NodeResults; the replicas did the scanning, which
    # the replicas' own command statistics show.
    scans = 0
    for port in replica_ports:
        with client(port) as c:
            stats = c.info("commandstats")
        scans += int(stats.get("cmdstat_scan", {}).get("calls", 0))
    assert scans > 0, f"no SCAN reached a replica (scan calls counted on {scanned_on})"
    check_outcome(cluster_url, keys)


async def test_cancellation_stops_promptly_and_logs(cluster_url: str, caplog: Any) -> None:
    keys = make_keyset(60_000, 2_000)
    fill(cluster_url, keys)
    caplog.set_level(logging.INFO, logger="clusterinval")
    async with ClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry(),
                                           keys_per_second=5_000) as inv:
        watch = inv.progress_watch()
        with anyio.fail_after(30):
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(lambda: inv.invalidate(patterns=[keys.pattern], progress=watch))
                    await until_deleted(watch, 6_000)
                    cancelled_at = time.monotonic()
                    scope.cancel()
            stopped_after = time.monotonic() - cancelled_at
    assert scope.cancelled_caught
    assert stopped_after < 1.0, f"cancellation took {stopped_after:.2f} s"
    done = watch.snapshot().deleted
    assert 6_000 <= done < len(keys.doomed)
    messages = [r.getMessage() for r in caplog.records]
    assert any("run cancelled" in m and "keys deleted" in m for m in messages), messages
    # Nothing outside the pattern was touched, and what was not deleted yet is still there.
    left = scan_all_keys(cluster_url)
    assert keys.kept <= left
    remaining = len(left & keys.doomed)
    # A scan+delete step in flight when the cancel came may have deleted keys it never reported.
    assert len(keys.doomed) - done - 3 * 1000 <= remaining <= len(keys.doomed) - done
