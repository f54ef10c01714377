"""Latency figures and the benchmark's scenario bookkeeping (pure)."""

from __future__ import annotations

import math

import pytest

from clusterinval.loadtest.bench import BenchConfig
from clusterinval.loadtest.report import LatencySummary, percentile
from clusterinval.loadtest.scenarios import scenarios
from clusterinval.patterns import redis_glob_match


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
