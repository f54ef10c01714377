"""Transient faults met mid-run against real servers: connections reset under the library
(CLIENT KILL) and CLUSTERDOWN (a node gives up some slots for a while). Both are retried and the
run ends complete; the retried errors are counted by kind."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import pytest
from faultkit import (
    ClusterFactory,
    check_outcome,
    client,
    fill,
    make_keyset,
    owned_slots,
    until_deleted,
    wait_for,
)
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator, InvalidationResult

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def errors_of(registry: CollectorRegistry, kind: str) -> float:
    value = registry.get_sample_value(
        "clusterinval_errors_total", {"operation": "cache", "error": kind})
    return value or 0.0


async def run_with_fault(url: str, keys_pattern: str, registry: CollectorRegistry,
                         fault: threading.Thread, **options: Any) -> InvalidationResult:
    """Run the invalidation, start ``fault`` once it has made progress, and wait for both."""
    results: list[InvalidationResult] = []
    async with ClusterInvalidator.from_url(url, registry=registry, timeout_s=60,
                                           **options) as inv:
        watch = inv.progress_watch()

        async def invalidate() -> None:
            results.append(await inv.invalidate(patterns=[keys_pattern], progress=watch))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(invalidate)
                await until_deleted(watch, 5_000)
                fault.start()
                await anyio.to_thread.run_sync(fault.join)
    return results[0]


@pytest.mark.parametrize("server_scripts", [True, False], ids=["script", "pipeline"])
async def test_connections_reset_mid_run(make_cluster: ClusterFactory,
                                        server_scripts: bool) -> None:
    cluster = make_cluster(replicas=0)
    keys = make_keyset(60_000, 10_000)
    fill(cluster.url, keys)
    ports = [n.port for n in cluster.primaries()]
    killed: list[int] = []

    def reset_connections() -> None:
        # Every normal client but our own, on every primary, a few times over the run.
        for _ in range(5):
            for port in ports:
                with client(port) as c:
                    killed.append(int(c.execute_command(
                        "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")))
            time.sleep(0.2)  # pacing of the fault, not synchronisation

    registry = CollectorRegistry()
    result = await run_with_fault(cluster.url, keys.pattern, registry,
                                  threading.Thread(target=reset_connections),
                                  keys_per_second=15_000, server_scripts=server_scripts)
    assert sum(killed) > 0, "no library connection was reset"
    assert result.complete
    check_outcome(cluster.url, keys)


async def test_clusterdown_mid_run(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(replicas=0)
    keys = make_keyset(60_000, 10_000)
    fill(cluster.url, keys)
    port = cluster.primaries()[1].port
    slots = owned_slots(port)[:50]

    def take_slots_away() -> None:
        with client(port) as c:
            c.execute_command("CLUSTER", "DELSLOTS", *slots)

            def down() -> bool:
                try:
                    c.execute_command("UNLINK", "inv:probe")
                except Exception as exc:
                    return str(exc).startswith("The cluster is down") or "CLUSTERDOWN" in str(exc)
                return False

            wait_for(down, 10, "the node to report CLUSTERDOWN")
            time.sleep(1.0)  # keep the cluster down for a while (the fault's length)
            c.execute_command("CLUSTER", "ADDSLOTS", *slots)

    registry = CollectorRegistry()
    result = await run_with_fault(cluster.url, keys.pattern, registry,
                                  threading.Thread(target=take_slots_away),
                                  keys_per_second=15_000)
    assert result.complete
    assert errors_of(registry, "clusterdown") > 0, "no CLUSTERDOWN was met: the fault missed"
    check_outcome(cluster.url, keys)
