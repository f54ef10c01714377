"""Fixtures for the docker-marked tests: a Redis Cluster in containers, shared by the session.

Tests that need Docker request ``docker_ok`` (directly or through ``docker_cluster``): on a
machine without a usable Docker engine or node image they skip with the reason; with CI=true
they fail instead, since CI must run them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from clusterinval.testing.pytest_plugin import require_docker

if TYPE_CHECKING:
    # Imported lazily at run time: without testcontainers the docker tests skip, not error.
    from clusterinval.testing.container import RedisClusterContainer

# No registry here, so testcontainers' Ryuk reaper image cannot be pulled; every fixture below
# removes what it starts itself. Set before testcontainers first reads its configuration.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


@pytest.fixture(scope="session")
def docker_ok() -> None:
    """Skip (or, in CI, fail) unless a Docker engine answers and the node image is present."""
    require_docker()


@pytest.fixture(scope="session")
def docker_cluster(docker_ok: None) -> Iterator[RedisClusterContainer]:
    """A 3-primary, 1-replica-each cluster in containers, started once for the session."""
    from clusterinval.testing.container import RedisClusterContainer

    with RedisClusterContainer(primaries=3, replicas=1, node_timeout_ms=2000) as cluster:
        yield cluster


@pytest.fixture
def docker_cluster_url(docker_cluster: RedisClusterContainer) -> str:
    """The session container cluster's URL, emptied (replicas included) for this test."""
    docker_cluster.flushall()
    return docker_cluster.url
