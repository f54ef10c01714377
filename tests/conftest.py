"""Shared fixtures: a real local Redis Cluster and a standalone Redis, started once per session."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest
import redis

from clusterinval.testing._node import resolve_binary
from clusterinval.testing.local import LocalCluster, LocalRedis, RedisServerNotFoundError
from clusterinval.testing.pytest_plugin import unavailable


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave ``soak`` runs out unless the marker expression asks for them (``-m soak``)."""
    if "soak" in (config.getoption("markexpr") or ""):
        return
    kept = [item for item in items if item.get_closest_marker("soak") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept

def _close_startup_nodes_too(close: Callable[[redis.RedisCluster], None]
                             ) -> Callable[[redis.RedisCluster], None]:
    """redis-py's sync ``RedisCluster.close()`` leaves the connections of its startup nodes
    open; their sockets then surface as unraisable ResourceWarnings at any later gc (an error
    under ``filterwarnings = error``). Closing a test's client closes those too."""

    def closing(self: redis.RedisCluster) -> None:
        startup = list(self.nodes_manager.startup_nodes.values())
        close(self)
        for node in startup:
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()

    return closing


redis.RedisCluster.close = _close_startup_nodes_too(  # type: ignore[method-assign]
    redis.RedisCluster.close)

# Starts a dedicated LocalCluster with the given options (see the make_cluster fixture).
ClusterFactory = Callable[..., LocalCluster]


def _server_missing(exc: RedisServerNotFoundError) -> NoReturn:
    """Skip on a developer's machine without redis-server; in CI its absence is a failure."""
    unavailable(f"redis-server is not installed: {exc}")


@pytest.fixture(scope="session")
def redis_server_path() -> str:
    """The redis-server binary, for tests that start servers of their own."""
    try:
        return resolve_binary("redis-server")
    except RedisServerNotFoundError as exc:
        _server_missing(exc)


@pytest.fixture(scope="session")
def server_major(redis_server_path: str) -> int:
    """The major version of the server binary the test clusters run (7+ has sharded pub/sub
    and script flags)."""
    out = subprocess.run([redis_server_path, "--version"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return int(out.split("v=", 1)[1].split(".", 1)[0])


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


@pytest.fixture
def make_cluster() -> Iterator[ClusterFactory]:
    """Start dedicated clusters (3 primaries + 1 replica each by default); all stop at teardown.

    For tests that kill, freeze or reshard nodes: never the shared session cluster.
    """
    started: list[LocalCluster] = []

    def start(primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000,
              **kwargs: Any) -> LocalCluster:
        cluster = LocalCluster(primaries=primaries, replicas=replicas,
                               node_timeout_ms=node_timeout_ms, **kwargs)
        started.append(cluster)
        try:
            cluster.start(timeout=60)
        except RedisServerNotFoundError as exc:
            _server_missing(exc)
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
