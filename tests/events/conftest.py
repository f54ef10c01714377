"""Event-test fixtures: dedicated clusters for the failover and fallback tests (the session
cluster from tests/conftest.py serves the others)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import pytest

from clusterinval.testing.local import LocalCluster, RedisServerNotFoundError

ClusterFactory = Callable[..., LocalCluster]


@pytest.fixture
def make_cluster() -> Iterator[ClusterFactory]:
    """Start dedicated clusters (3 primaries + 1 replica each by default); all stop at teardown."""
    started: list[LocalCluster] = []

    def start(primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000,
              extra_args: tuple[str, ...] = ()) -> LocalCluster:
        cluster = LocalCluster(primaries=primaries, replicas=replicas,
                               node_timeout_ms=node_timeout_ms, extra_args=extra_args)
        started.append(cluster)
        try:
            cluster.start(timeout=60)
        except RedisServerNotFoundError as exc:
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(f"CI=true but redis-server is missing: {exc}", pytrace=False)
            pytest.skip(f"redis-server is not installed: {exc}")
        return cluster

    try:
        yield start
    finally:
        for cluster in started:
            for node in cluster.nodes:
                with contextlib.suppress(Exception):
                    cluster.resume(node.port)
            cluster.stop()
