"""``clusterinval bench --size small --repeat 1``: every benchmarked run verifies (no timing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clusterinval.cli.main import app

pytestmark = pytest.mark.slow


def test_small_bench_runs_and_every_run_verifies(cluster_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, [
        "bench", "--url", cluster_url, "--flush-ok", "--size", "small", "--repeat", "1",
        "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["verified"] is True
    names = [s["name"] for s in data["scenarios"]]
    assert names == ["S1", "S2", "S3", "S4", "MP"]
    for sc in data["scenarios"]:
        for tool in sc["tools"]:
            if tool.get("skipped"):
                continue
            assert len(tool["runs"]) == 1, (sc["name"], tool["tool"])
            run = tool["runs"][0]
            assert run["verified"] and run["survivors"] == 0, (sc["name"], tool["tool"], run)
            assert run["remaining"] == run["expected_remaining"]
    for g in data["get_latency"]:
        assert g["verified"] and g["during"]["count"] > 0 and g["idle"]["count"] > 0


def test_bench_refuses_to_flush_a_given_cluster_without_consent(cluster_url: str) -> None:
    result = CliRunner().invoke(app, ["bench", "--url", cluster_url, "--size", "small"])
    assert result.exit_code == 2
    assert "--flush-ok" in result.output
