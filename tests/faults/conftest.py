"""Fault-test fixtures: every test gets its own cluster, never the shared session cluster."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
from faultkit import ClusterFactory

from clusterinval.testing.local import LocalCluster, RedisServerNotFoundError


@pytest.fixture
def make_cluster() -> Iterator[ClusterFactory]:
    """Start dedicated clusters (3 primaries + 1 replica each by default); all stop at teardown."""
    started: list[LocalCluster] = []

    def start(primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000,
              **kwargs: object) -> LocalCluster:
        cluster = LocalCluster(primaries=primaries, replicas=replicas,
                               node_timeout_ms=node_timeout_ms, **kwargs)  # type: ignore[arg-type]
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
                # A frozen node must thaw to stop cleanly; a dead one cannot, and stop() copes.
                with contextlib.suppress(Exception):
                    cluster.resume(node.port)
            cluster.stop()
