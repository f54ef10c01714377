"""A primary's container stops: its replica takes over and invalidation still completes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator
from clusterinval.testing.container import RedisClusterContainer
from clusterinval.testing.fill import fill_keys, scan_all_keys

pytestmark = [pytest.mark.docker, pytest.mark.anyio]


@pytest.fixture
def fault_cluster(docker_ok: None) -> Iterator[RedisClusterContainer]:
    """A cluster of its own: this test breaks it."""
    with RedisClusterContainer(primaries=3, replicas=1, node_timeout_ms=1000) as cluster:
        yield cluster


def node(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)


def replica_of(primary_port: int) -> int:
    """The port of the (one) replica attached to the primary on ``primary_port``."""
    with node(primary_port) as conn:
        return int(conn.info("replication")["slave0"]["port"])


def wait_synced(primary: int, replica: int, timeout: float = 10.0) -> None:
    """Wait until the replica holds as many keys as its primary."""
    end = time.monotonic() + timeout
    with node(primary) as p, node(replica) as r:
        want = p.dbsize()
        while (got := r.dbsize()) != want:
            assert time.monotonic() < end, f"replica {replica} has {got} of {want} keys"
            time.sleep(0.05)


async def test_primary_container_stops_then_invalidation_completes(
    fault_cluster: RedisClusterContainer,
) -> None:
    cluster = fault_cluster
    victim = cluster.primaries()[-1].port
    heir = replica_of(victim)
    survivor = next(n.port for n in cluster.primaries() if n.port != victim)
    url = f"redis://127.0.0.1:{survivor}"
    doomed = [f"feed:{i}".encode() for i in range(3000)]
    kept = [f"user:{i}".encode() for i in range(3000)]
    fill_keys(url, doomed + kept)
    wait_synced(victim, heir)

    cluster.kill(victim)
    cluster.wait_ok(timeout=30)

    roles = {n.port: n for n in cluster.nodes}
    assert not roles[victim].running
    assert roles[heir].role == "primary"  # the replica was promoted
    assert len(cluster.primaries()) == 3
    with node(heir) as conn:
        assert conn.cluster("INFO")["cluster_state"] == "ok"

    async with ClusterInvalidator.from_url(url, registry=CollectorRegistry()) as inv:
        r = await inv.invalidate(patterns=["feed:*"], operation_name="after_failover")
    assert r.complete and r.deleted == len(doomed)
    assert scan_all_keys(url) == set(kept)

    # The stopped node comes back as a replica of its heir.
    cluster.restart(victim)
    cluster.wait_ok(timeout=30)
    assert {n.port: n.role for n in cluster.nodes}[victim] == "replica"
