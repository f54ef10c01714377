"""kill -9 of a primary in the middle of a tag invalidation: the run completes after the
failover, or reports what it did not do and the next run finishes it; nothing tagged survives,
nothing else is lost, and the index keeps no set behind."""

from __future__ import annotations

import signal

import anyio
import pytest
from faultkit import (
    ClusterFactory,
    check_outcome,
    fill,
    live_url,
    make_keyset,
    owned_slots,
    wait_replicated,
)
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator, InvalidationError, InvalidationResult
from clusterinval._core.slots import key_slot
from clusterinval._core.tags import set_key, tag_slot, takes_key
from clusterinval.testing.fill import scan_all_keys

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TAG = b"failover"


@pytest.mark.parametrize("victim_holds", ["members", "index"])
async def test_kill_primary_mid_tag_run(make_cluster: ClusterFactory, victim_holds: str) -> None:
    cluster = make_cluster(node_timeout_ms=1000)
    keys = make_keyset(30_000, 5_000, prefix="tagged")
    fill(cluster.url, keys)
    index_port = next(p.port for p in cluster.primaries()
                      if tag_slot(TAG) in owned_slots(p.port))
    if victim_holds == "index":
        victim = index_port
    else:
        victim = next(p.port for p in cluster.primaries() if p.port != index_port)
    url = live_url(cluster, avoid=[victim])
    results: list[InvalidationResult] = []
    async with ClusterInvalidator.from_url(
        url, registry=CollectorRegistry(), keys_per_second=15_000, timeout_s=60,
        command_timeout_s=2.0,
    ) as inv:
        assert await inv.tag(sorted(keys.doomed), tags=[TAG]) == len(keys.doomed)
        await anyio.to_thread.run_sync(wait_replicated, cluster)

        async def invalidate() -> None:
            try:
                results.append(await inv.invalidate(tags=[TAG], operation_name="tagged"))
            except InvalidationError as exc:
                results.append(exc.result)

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                tg.start_soon(invalidate)
                while len(scan_all_keys(url, b"tagged:*")) > 25_000:  # noqa: ASYNC110 - polled
                    await anyio.sleep(0.02)
                await anyio.to_thread.run_sync(cluster.kill, victim, signal.SIGKILL)
            # The checks below read every primary: the failover must have ended, whether or not
            # the run met it.
            await anyio.to_thread.run_sync(cluster.wait_ok, 30)
            if not results[0].complete:
                # Reported, not hidden: the next run of the tag finishes the taken set.
                assert results[0].uncovered_slots
                results.append(await inv.invalidate(tags=[TAG], operation_name="tagged"))
    assert results[-1].complete
    check_outcome(url, keys)
    left = scan_all_keys(url, b"clusterinval:tag:*")
    assert set_key(TAG) not in left and takes_key(TAG) not in left
    assert not any(key_slot(k) == tag_slot(TAG) and b":taken:" in k for k in left)

