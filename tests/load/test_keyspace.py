"""The load test's key families and jobs: what each job removes is exactly what it matches."""

from __future__ import annotations

import pytest

from clusterinval._core.glob import redis_glob_match
from clusterinval.loadtest.keyspace import Keyspace


def _matched(job_keys: tuple[str, ...], patterns: tuple[str, ...], universe: list[str]) -> set[str]:
    out = {k for k in universe if k in job_keys}
    for p in patterns:
        out.update(k for k in universe if redis_glob_match(p.encode(), k.encode()))
    return out


class TestKeyspace:
    def test_all_keys_are_distinct_and_about_the_size_asked(self) -> None:
        space = Keyspace(20_000)
        keys = space.all_keys()
        assert len(keys) == len(set(keys))
        assert abs(len(keys) - 20_000) <= 100

    def test_too_small_is_refused(self) -> None:
        with pytest.raises(ValueError, match="at least 1000"):
            Keyspace(999)

    @pytest.mark.parametrize("n", range(12))
    def test_each_job_removes_exactly_what_it_matches(self, n: int) -> None:
        space = Keyspace(20_000)
        universe = space.all_keys()
        job = space.job(n)
        assert set(job.removes) == _matched(job.keys, job.patterns, universe)
        assert set(job.removes) <= set(universe)

    def test_the_rotation_covers_every_kind(self) -> None:
        space = Keyspace(20_000)
        assert {space.job(n).kind for n in range(4)} == {"project", "catalog", "tenant", "exact"}

    def test_traffic_keys_are_never_invalidated(self) -> None:
        space = Keyspace(20_000)
        doomed = set().union(*(space.job(n).removes for n in range(40)))
        assert not any(k.startswith("cache:item:") for k in doomed)
