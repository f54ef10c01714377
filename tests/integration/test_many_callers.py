"""Hundreds of concurrent callers on one invalidator wait for a connection; none fails for lack of
one, and every caller's keys go."""

from __future__ import annotations

import anyio
import pytest
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator
from clusterinval.testing.fill import fill_keys, scan_all_keys

pytestmark = pytest.mark.anyio


async def test_500_concurrent_callers_share_a_few_connections(cluster_url: str) -> None:
    callers = 500
    keys = [[f"mc:{i}:{j}".encode() for j in range(3)] for i in range(callers)]
    fill_keys(cluster_url, [k for ks in keys for k in ks] + [b"mc:kept"])
    deleted: list[int] = []
    async with ClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry(),
                                           max_connections=4) as inv:

        async def caller(ks: list[bytes]) -> None:
            deleted.append((await inv.invalidate(keys=ks, operation_name="many")).deleted)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for ks in keys:
                    tg.start_soon(caller, ks)
    assert len(deleted) == callers and sum(deleted) == 3 * callers
    assert scan_all_keys(cluster_url) == {b"mc:kept"}
