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
    # The call-level scenarios run by default too, each verified.
    assert all(run["verified"] for run in data["storm"]["runs"])
    assert data["small"]["verified"] is True


def test_call_scenarios_at_a_tiny_size_verify(cluster_url: str, tmp_path: Path) -> None:
    """STORM and SMALL: every call made, every target gone, nothing else deleted (no timing)."""
    out = tmp_path / "calls.json"
    result = CliRunner().invoke(app, [
        "bench", "--url", cluster_url, "--flush-ok", "--size", "tiny", "--repeat", "1",
        "--scenarios", "STORM,SMALL", "--tools", "clusterinval,redis-py",
        "--storm-calls", "40", "--storm-callers", "8,40", "--small-calls", "30",
        "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["verified"] is True
    assert data["scenarios"] == []
    storm = data["storm"]
    # 40 callers run the same 40 calls, and as many calls per caller as the 8 had (200).
    assert sorted((r["tool"], r["callers"], r["calls_requested"]) for r in storm["runs"]) == [
        ("clusterinval", 8, 40), ("clusterinval", 40, 40), ("clusterinval", 40, 200),
        ("redis-py", 8, 40)]
    for run in storm["runs"]:
        calls = run["calls_requested"]
        assert run["verified"], run
        assert run["calls"] == calls and run["failed"] == 0, run
        assert run["survivors"] == 0 and run["remaining"] == run["expected_remaining"], run
        assert run["deleted"] == calls * storm["keys_per_entity"], run
        assert run["connection_errors"] == 0, run
    small = data["small"]
    assert small["verified"], small
    assert small["mismatches"] == 0 and small["survivors"] == 0
    assert small["remaining"] == small["expected_remaining"]
    assert {k: v["count"] for k, v in small["latency"].items()} == {
        "exact": 30, "redis_py_unlink": 30, "tagged": 30}
    goals = {g["goal"]: g for g in data["goals"]}
    assert any(name.startswith("STORM, 20k keys, 40 calls from 8 callers") for name in goals)
    assert "STORM: 40 callers >= 2x the rate of 8" in goals
    assert "SMALL: 3 exact keys: p50 no slower than redis-py unlink(*keys)" in goals
    assert "SMALL: tagged pattern: p50 <= 2x redis-py's 3-key unlink p50" in goals
    # Measured, never judged by the test suite.
    assert all(goals[g]["measured"] != "-" for g in goals if g.startswith(("STORM", "SMALL")))


def test_bench_refuses_to_flush_a_given_cluster_without_consent(cluster_url: str) -> None:
    result = CliRunner().invoke(app, ["bench", "--url", cluster_url, "--size", "small"])
    assert result.exit_code == 2
    assert "--flush-ok" in result.output
