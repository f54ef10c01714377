"""Live progress moves with the work, and a result's nodes add up to its totals."""

from __future__ import annotations

import anyio
import pytest
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator
from clusterinval.testing.fill import fill_keys

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("pattern", "server_scripts"),
    [("pg:*", True), ("p?:*", True), ("pg:*", False)],
    ids=["slot-walk", "server-scan-step", "plain-pipeline"],
)
async def test_keys_read_move_before_the_run_ends(
    cluster_url: str, pattern: str, server_scripts: bool
) -> None:
    fill_keys(cluster_url, [f"pg:{i}".encode() for i in range(6_000)])
    readings: list[tuple[int, int]] = []
    async with ClusterInvalidator.from_url(
        cluster_url, registry=CollectorRegistry(), keys_per_second=6_000,
        server_scripts=server_scripts, scan_count=100, server_scan_count=100,
        # The client-side path reads no further ahead of its (rate-limited) deletions than this.
        buffer_keys=100, unlink_batch=10, stream_depth=1, deleters_per_node=1,
    ) as inv:
        watch = inv.progress_watch()
        done = anyio.Event()

        async def run() -> None:
            await inv.invalidate(patterns=[pattern], progress=watch)
            done.set()

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                while not done.is_set():
                    snap = watch.snapshot()
                    readings.append((snap.keys_read, snap.keys_total))
                    await anyio.sleep(0.05)  # sampling a live display, not synchronising
    final = watch.snapshot()
    during = [r for r, total in readings if total]
    assert final.keys_total >= 6_000 and final.keys_read == final.keys_total
    # Seen part-way: more than nothing, less than everything, and never going back.
    assert any(0 < r < final.keys_total for r in during), readings[:20]
    assert during == sorted(during)


async def test_nodes_add_up_to_the_totals(cluster_url: str) -> None:
    keys = [f"na:{i}".encode() for i in range(3_000)]
    fill_keys(cluster_url, [*keys, *(f"nb:{i}".encode() for i in range(3_000))])
    async with ClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry()) as inv:
        for dry_run in (True, False):
            r = await inv.invalidate(keys=keys[:500], patterns=["nb:*"], dry_run=dry_run)
            assert r.matched == 3_500
            assert sum(n.matched for n in r.nodes) == r.matched
            assert sum(n.deleted for n in r.nodes) == r.deleted
            assert sum(n.scanned for n in r.nodes) == r.scanned
    assert r.deleted == 3_500
