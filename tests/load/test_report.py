"""Latency figures and the benchmark's scenario bookkeeping (pure)."""

from __future__ import annotations

import math

import pytest

from clusterinval._core.glob import redis_glob_match
from clusterinval.loadtest.bench import BenchConfig
from clusterinval.loadtest.report import LatencySummary, percentile
from clusterinval.loadtest.scenarios import scenarios


class TestPercentile:
    def test_nearest_rank(self) -> None:
        values = [float(v) for v in range(1, 101)]
        assert percentile(values, 50) == 50.0
        assert percentile(values, 99) == 99.0
        assert percentile(values, 100) == 100.0

    def test_empty_is_nan_and_null_in_json(self) -> None:
        assert math.isnan(percentile([], 50))
        assert LatencySummary.of([]).to_dict()["p99_ms"] is None

    def test_summary_in_milliseconds(self) -> None:
        s = LatencySummary.of([0.001] * 98 + [0.010, 0.020])
        assert (s.count, s.p50_ms, s.p99_ms, s.max_ms) == (100, 1.0, 10.0, 20.0)


class TestScenarios:
    @pytest.mark.parametrize("sc", scenarios(20_000), ids=lambda s: s.name)
    def test_expected_deletions_are_what_the_gone_globs_match(self, sc: object) -> None:
        from clusterinval.loadtest.scenarios import Scenario

        assert isinstance(sc, Scenario)
        keys = list(sc.keys())
        assert len(keys) == len(set(keys)) == sc.total
        doomed = [k for k in keys
                  if any(redis_glob_match(g.encode(), k.encode()) for g in sc.gone)]
        assert len(doomed) == sc.expected_deleted

    def test_sizes_parse(self) -> None:
        assert BenchConfig.parse_size("small") == 100_000
        assert BenchConfig.parse_size("1m") == 1_000_000
        assert BenchConfig.parse_size("250k") == 250_000
        assert BenchConfig.parse_size("12345") == 12_345

    def test_too_small_a_size_is_refused(self) -> None:
        with pytest.raises(ValueError, match="at least 10000"):
            scenarios(5_000)


class TestGoals:
    @staticmethod
    def _report(ci: float, glide: float) -> dict[str, object]:
        def tool(name: str, median: float, longest: float = 1.0) -> dict[str, object]:
            return {"tool": name, "median_s": median, "longest_command_ms": longest,
                    "rss_growth_mb": 0.5, "verified": True}

        return {"scenarios": [{"name": "S2", "tools": [
            tool("clusterinval", ci, longest=12.0), tool("valkey-glide", glide),
            tool("redis-py", 10 * ci), tool("floor", ci / 3)]}]}

    def test_each_goal_is_judged_from_the_medians(self) -> None:
        from clusterinval.loadtest.bench import goals

        judged = {g["goal"]: g["met"] for g in goals(self._report(ci=1.0, glide=2.0))}
        assert judged["S2: >= 3x faster than valkey-glide"] is False
        assert judged["S2: >= 5x faster than redis-py"] is True
        assert judged["S2: within 2x of the server-side floor (aim)"] is False
        assert judged["no command blocks a node > 10 ms (clusterinval, all scenarios)"] is False
        assert judged["S2: client peak memory grows < 20 MB"] is True
        assert judged["S3: under 20 ms"] is None  # not measured: neither met nor failed


def test_missing_glide_is_a_skip_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from clusterinval.loadtest.peers import glide_available

    monkeypatch.setitem(sys.modules, "glide", None)  # makes `import glide` fail
    reason = glide_available()
    assert reason is not None and "clusterinval[bench]" in reason
