"""The whole cluster down: the core API raises a typed error, the compat facade logs a WARNING and
returns, and nothing hangs (every call is bounded)."""

from __future__ import annotations

import logging
import signal
from typing import Any

import anyio
import pytest
from faultkit import ClusterFactory, fill, make_keyset, until_deleted
from prometheus_client import CollectorRegistry

from clusterinval import ClusterConnectionError, ClusterInvalidator, InvalidationError
from clusterinval.compat import RedisService

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {"timeout_s": 3.0, "command_timeout_s": 1.0, "connect_timeout_s": 1.0}


async def test_all_nodes_killed_before_the_call(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(replicas=0)
    url = cluster.url
    for node in cluster.nodes:
        cluster.kill(node.port, signal.SIGKILL)
    with anyio.fail_after(10):
        with pytest.raises(ClusterConnectionError) as info:
            async with ClusterInvalidator.from_url(url, registry=CollectorRegistry(),
                                                   **FAST) as inv:
                await inv.invalidate(patterns=["inv:*"])
    assert "no node of the cluster answered" in str(info.value)


async def test_all_nodes_killed_mid_run(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(replicas=0)
    keys = make_keyset(60_000, 0)
    fill(cluster.url, keys)
    errors: list[BaseException] = []
    async with ClusterInvalidator.from_url(cluster.url, registry=CollectorRegistry(),
                                           keys_per_second=10_000, **FAST) as inv:
        watch = inv.progress_watch()

        async def invalidate() -> None:
            try:
                await inv.invalidate(patterns=[keys.pattern], progress=watch)
            except (InvalidationError, ClusterConnectionError) as exc:
                errors.append(exc)

        with anyio.fail_after(FAST["timeout_s"] + 5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(invalidate)
                await until_deleted(watch, 2_000)
                for node in cluster.nodes:
                    await anyio.to_thread.run_sync(cluster.kill, node.port, signal.SIGKILL)
    assert errors, "a run whose cluster died claimed completion"
    if isinstance(errors[0], InvalidationError):
        assert errors[0].result.uncovered_slot_count > 0
        assert not errors[0].result.complete


async def test_all_nodes_frozen(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(replicas=0, node_timeout_ms=60_000)
    for node in cluster.nodes:
        cluster.pause(node.port)
    with anyio.fail_after(FAST["timeout_s"] + 5):
        with pytest.raises((ClusterConnectionError, InvalidationError)):
            async with ClusterInvalidator.from_url(cluster.url, registry=CollectorRegistry(),
                                                   **FAST) as inv:
                await inv.invalidate(patterns=["inv:*"])


async def test_compat_facade_warns_and_returns(make_cluster: ClusterFactory,
                                              caplog: pytest.LogCaptureFixture) -> None:
    cluster = make_cluster(replicas=0)
    url = cluster.url
    for node in cluster.nodes:
        cluster.kill(node.port, signal.SIGKILL)
    caplog.set_level(logging.DEBUG)
    with anyio.fail_after(10):
        async with RedisService(url, registry=CollectorRegistry(), **FAST) as service:
            await service.invalidate_cache_by_patterns(
                specific_keys=["catalog:model:1"], patterns=["catalog:models:*"],
                operation_name="catalog")
            await service.invalidate_catalog_cache(endpoint_id="m1")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) >= 2, [r.getMessage() for r in caplog.records]
    assert any("catalog" in r.getMessage() for r in warnings)
