"""A bounded load test against the session cluster: traffic, invalidations, the final check."""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from clusterinval.cli.main import app
from clusterinval.exposition import start_metrics_server
from clusterinval.loadtest.generator import LoadConfig, run_loadtest
from clusterinval.loadtest.keyspace import Keyspace

pytestmark = pytest.mark.slow

_LOAD_OPS = re.compile(rb'clusterinval_loadtest_cache_ops_total\{op="get",phase="load"\} (\d+)')


def _scrape_until_load_seen(url: str, seen: list[int], stop: threading.Event) -> None:
    """Poll /metrics until load-phase GETs are exported (or told to stop)."""
    while not stop.wait(0.2):
        with urllib.request.urlopen(url, timeout=5) as resp:  # loopback only
            m = _LOAD_OPS.search(resp.read())
        if m and int(m.group(1)) > 0:
            seen.append(int(m.group(1)))
            return


@pytest.mark.anyio
async def test_load_run_passes_its_final_check_with_sane_figures(cluster_url: str) -> None:
    registry = CollectorRegistry()
    config = LoadConfig(keys=30_000, baseline_s=5.0, duration_s=15.0, ops_per_second=800.0,
                        invalidations_per_second=4.0, workers=8)
    seen: list[int] = []
    stop = threading.Event()
    with start_metrics_server(0, registry=registry) as server:
        scraper = threading.Thread(target=_scrape_until_load_seen, args=(server.url, seen, stop))
        scraper.start()
        try:
            report = await run_loadtest(cluster_url, config, registry=registry, hard_cap_s=90.0)
        finally:
            stop.set()
            await anyio.to_thread.run_sync(scraper.join, 10.0)
    data = report.to_dict()
    assert data["final_check"] == {**data["final_check"], "ok": True, "survivors": 0, "lost": 0,
                                   "unexpected": 0, "final_invalidations": 4}
    assert not report.hard_cap_hit and report.invalidations_failed == 0, report.errors
    assert report.count_mismatches == 0, report.errors
    # Figures are sane: something ran in both phases, and the counts add up.
    assert data["keys_filled"] == len(Keyspace(config.keys).all_keys())
    assert data["cache_ops_before"] > 0 and data["cache_ops_during"] > 0
    assert data["cache_ops_per_s_during"] > 0 and data["invalidations_per_s"] > 0
    assert report.invalidations >= 10
    assert sum(data["invalidations_by_kind"].values()) == report.invalidations
    assert data["keys_deleted"] > 0 and data["keys_deleted_per_s"] > 0
    assert data["cache_before"]["count"] == report.before.ops - report.before.errors
    assert data["cache_during"]["p99_ms"] >= data["cache_during"]["p50_ms"] > 0
    assert data["invalidation_latency"]["count"] == report.invalidations
    assert seen, "the load phase's metrics never showed up on /metrics"


def test_cli_loadtest_writes_a_passing_json_report(cluster_url: str, tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    result = CliRunner().invoke(app, [
        "loadtest", "--url", cluster_url, "--keys", "10000", "--baseline", "2", "--duration",
        "5", "--rate", "400", "--inv-rate", "4", "--workers", "4", "--metrics-port", "0",
        "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["final_check"]["ok"] is True
    assert data["invalidations"] > 0 and data["cache_ops_during"] > 0
    assert "final check" in result.output


def test_cli_loadtest_refuses_a_non_empty_cluster_without_flush(cluster_url: str) -> None:
    import redis

    with redis.RedisCluster.from_url(cluster_url) as rc:
        rc.set("someone:else", "1")
    result = CliRunner().invoke(app, ["loadtest", "--url", cluster_url, "--metrics-port", "-1"])
    assert result.exit_code == 2
    assert "not empty" in result.output
