"""Shared fixtures: a real local Redis Cluster and a standalone Redis, started once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NoReturn

import pytest
import redis

from clusterinval.testing._node import resolve_binary
from clusterinval.testing.local import LocalCluster, LocalRedis, RedisServerNotFoundError


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _server_missing(exc: RedisServerNotFoundError) -> NoReturn:
    """Skip on a developer's machine without redis-server; in CI its absence is a failure."""
    if _in_ci():
        pytest.fail(f"CI=true but redis-server is missing: {exc}", pytrace=False)
    pytest.skip(f"redis-server is not installed: {exc}")


@pytest.fixture(scope="session")
def redis_server_path() -> str:
    """The redis-server binary, for tests that start servers of their own."""
    try:
        return resolve_binary("redis-server")
    except RedisServerNotFoundError as exc:
        _server_missing(exc)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Run anyio-marked tests on asyncio only."""
    return "asyncio"


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    """A running cluster of 3 primaries with 1 replica each, shared by the whole session."""
    cluster = LocalCluster(primaries=3, replicas=1, node_timeout_ms=2000)
    try:
        cluster.start(timeout=60)
    except RedisServerNotFoundError as exc:
        _server_missing(exc)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_url(local_cluster: LocalCluster) -> str:
    """The URL of the session cluster, emptied (replicas included) for this test."""
    local_cluster.flushall()
    return local_cluster.url


@pytest.fixture
def client(cluster_url: str) -> Iterator[redis.RedisCluster]:
    """A plain redis-py cluster client on the emptied session cluster, to seed and check keys."""
    rc = redis.RedisCluster.from_url(cluster_url)
    try:
        yield rc
    finally:
        rc.close()


@pytest.fixture(scope="session")
def local_redis() -> Iterator[LocalRedis]:
    """A running standalone (non-cluster) redis-server, shared by the whole session."""
    server = LocalRedis()
    try:
        server.start()
    except RedisServerNotFoundError as exc:
        _server_missing(exc)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def standalone_url(local_redis: LocalRedis) -> str:
    """The URL of the standalone server, emptied for this test."""
    local_redis.flushall()
    return local_redis.url
