"""Security fixtures: a Redis Cluster over TLS (own CA and certificates) and one with ACL users."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from seckit import (
    APP_PASSWORD,
    APP_USER,
    NOSCRIPT_PASSWORD,
    NOSCRIPT_USER,
    Certs,
    TLSCluster,
    make_certs,
)

from clusterinval.testing.local import LocalCluster, RedisServerNotFoundError
from clusterinval.testing.pytest_plugin import unavailable


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A fresh CA with a server certificate for 127.0.0.1 and a client certificate."""
    try:
        return make_certs(tmp_path_factory.mktemp("certs"))
    except FileNotFoundError as exc:
        unavailable(str(exc))
        raise


@pytest.fixture(scope="module")
def tls_cluster(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSCluster]:
    """Three primaries that speak only TLS and require client certificates."""
    cluster = TLSCluster(certs, tmp_path_factory.mktemp("tls-nodes"))
    try:
        cluster.start()
    except FileNotFoundError as exc:
        unavailable(f"redis-server is not installed: {exc}")
    except TimeoutError as exc:
        cluster.stop()
        unavailable(f"redis-server without TLS support? {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def acl_cluster() -> Iterator[LocalCluster]:
    """Three primaries with ACL users limited to the ``app:*`` keys."""
    cluster = LocalCluster(primaries=3, replicas=0)
    try:
        cluster.start(timeout=60)
    except RedisServerNotFoundError as exc:
        unavailable(f"redis-server is not installed: {exc}")
    try:
        for node in cluster.nodes:
            with redis.Redis(host="127.0.0.1", port=node.port) as c:
                c.acl_setuser(APP_USER, enabled=True, passwords=[f"+{APP_PASSWORD}"],
                              keys=["app:*"], commands=["+@all"])
                c.acl_setuser(NOSCRIPT_USER, enabled=True, passwords=[f"+{NOSCRIPT_PASSWORD}"],
                              keys=["app:*"], commands=["+@all", "-@scripting"])
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def acl_port(acl_cluster: LocalCluster) -> int:
    """The first node's port, with the cluster emptied for this test."""
    acl_cluster.flushall()
    return acl_cluster.nodes[0].port
