"""A bounded load test against the dockerised cluster: cache traffic and invalidations together."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from clusterinval.loadtest.generator import LoadConfig, run_loadtest

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.anyio]


async def test_bounded_load_on_container_cluster(docker_cluster_url: str) -> None:
    config = LoadConfig(keys=30_000, baseline_s=5.0, duration_s=25.0, ops_per_second=800.0,
                        invalidations_per_second=4.0, workers=8)
    report = await run_loadtest(docker_cluster_url, config, registry=CollectorRegistry(),
                                hard_cap_s=120.0)
    data = report.to_dict()
    # Nothing that matched survived, nothing else was lost, every count was as computed.
    assert data["final_check"]["ok"], data["final_check"]
    assert (data["final_check"]["survivors"], data["final_check"]["lost"]) == (0, 0)
    assert not report.hard_cap_hit and report.invalidations_failed == 0, report.errors
    assert report.count_mismatches == 0, report.errors
    assert data["cache_ops_before"] > 0 and data["cache_ops_during"] > 0
    assert report.invalidations >= 20 and report.keys_deleted > 0
