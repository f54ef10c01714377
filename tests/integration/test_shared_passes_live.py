"""Shared passes on a real cluster: concurrent per-entity invalidations share one walk of the
keyspace, and each caller's result counts exactly the keys its own patterns match."""

from __future__ import annotations

import anyio
import pytest
import redis
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator, InvalidationResult

pytestmark = pytest.mark.anyio


def _fill(client: redis.RedisCluster, keys: list[str]) -> None:
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.set(k, 1)
    pipe.execute()


async def test_concurrent_callers_share_passes_and_keep_their_own_figures(
        cluster_url: str, client: redis.RedisCluster) -> None:
    entities = {i: [f"acct:{i}:{j}" for j in range(i % 7 + 1)] for i in range(40)}
    kept = [f"acct-x:{i}" for i in range(50)] + [f"other:{i}" for i in range(50)]
    _fill(client, [k for keys in entities.values() for k in keys] + kept)
    registry = CollectorRegistry()
    results: dict[str, InvalidationResult] = {}
    async with ClusterInvalidator.from_url(cluster_url, registry=registry,
                                           gather_window_s=0.05) as inv:
        async def call(name: str, pattern: str) -> None:
            results[name] = await inv.invalidate(patterns=[pattern], operation_name=name)

        async with anyio.create_task_group() as tg:
            for i in entities:
                tg.start_soon(call, f"e{i}", f"acct:{i}:*")
            tg.start_soon(call, "all", "acct:*")  # overlaps every other caller
    for i, keys in entities.items():
        r = results[f"e{i}"]
        assert r.complete and (r.deleted, r.matched) == (len(keys), len(keys)), i
        assert r.per_pattern == ((f"acct:{i}:*", len(keys)),)
    total = sum(len(keys) for keys in entities.values())
    assert results["all"].complete and results["all"].deleted == total
    assert sum(client.exists(k) for k in kept) == len(kept)
    assert not any(client.exists(k) for keys in entities.values() for k in keys)

    passes = registry.get_sample_value("clusterinval_shared_pass_calls_count") or 0
    calls = registry.get_sample_value("clusterinval_shared_pass_calls_sum") or 0
    assert calls == len(entities) + 1 and passes < calls  # merged, not one pass per call
    counted = sum(registry.get_sample_value("clusterinval_keys_deleted_total",
                                            {"operation": name}) or 0 for name in results)
    assert counted == total  # each key once in the metrics


async def test_sharing_off_runs_each_call_alone(cluster_url: str,
                                                client: redis.RedisCluster) -> None:
    _fill(client, [f"solo:{i}:{j}" for i in range(3) for j in range(5)])
    registry = CollectorRegistry()
    async with (ClusterInvalidator.from_url(cluster_url, registry=registry,
                                            shared_passes=False) as inv,
                anyio.create_task_group() as tg):
        for i in range(3):
            tg.start_soon(inv.invalidate, None, [f"solo:{i}:*"], "solo")
    assert registry.get_sample_value("clusterinval_shared_pass_calls_count") in (None, 0)
    assert registry.get_sample_value("clusterinval_keys_deleted_total",
                                     {"operation": "solo"}) == 15
