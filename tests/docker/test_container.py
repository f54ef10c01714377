"""RedisClusterContainer: argument checks, and a real cluster of node containers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from docker.client import DockerClient

from clusterinval._core.slots import SLOT_COUNT
from clusterinval.testing._ports import pick_ports
from clusterinval.testing.container import (
    DEFAULT_IMAGE,
    IMAGE_ENV,
    RedisClusterContainer,
    RedisClusterContainerError,
    default_image,
)


def node(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)


class TestArguments:
    """Mistakes reported before any container starts."""

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"primaries": 2}, "at least 3 primaries"),
            ({"replicas": -1}, "replicas must be zero or more"),
            ({"node_timeout_ms": 10}, "node_timeout_ms"),
            ({"base_port": 60000}, "no room"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            RedisClusterContainer(**kwargs)

    def test_taken_base_port_is_named(self) -> None:
        taken = pick_ports(1)[0]
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", taken))
            sock.listen()
            cluster = RedisClusterContainer(base_port=taken)
            with pytest.raises(RedisClusterContainerError, match=f"in use.*{taken}"):
                cluster.start()
            assert cluster.ports == []  # nothing was started

    def test_not_started(self) -> None:
        cluster = RedisClusterContainer()
        with pytest.raises(RedisClusterContainerError, match="not started"):
            _ = cluster.url

    def test_image_setting(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(IMAGE_ENV, raising=False)
        assert default_image() == DEFAULT_IMAGE
        monkeypatch.setenv(IMAGE_ENV, "example/redis:9")
        assert RedisClusterContainer().image == "example/redis:9"
        assert RedisClusterContainer(image="other:1").image == "other:1"


@pytest.mark.docker
class TestRunningCluster:
    def test_covers_every_slot_with_three_primaries(
        self, docker_cluster: RedisClusterContainer
    ) -> None:
        ports = docker_cluster.ports
        assert len(ports) == 6
        assert len(docker_cluster.primaries()) == 3 and len(docker_cluster.replicas()) == 3
        views = set()
        for port in ports:
            with node(port) as conn:
                info = conn.cluster("INFO")
                slots = conn.execute_command("CLUSTER SLOTS")
                bind = conn.config_get("bind")["bind"]
            assert info["cluster_state"] == "ok"
            assert int(info["cluster_slots_assigned"]) == SLOT_COUNT
            assert int(info["cluster_known_nodes"]) == 6
            views.add(tuple(sorted((int(s[0]), int(s[1]), int(s[2][1])) for s in slots)))
            assert bind == "127.0.0.1"  # host networking: loopback only
        assert len(views) == 1
        view = views.pop()
        assert sum(hi - lo + 1 for lo, hi, _ in view) == SLOT_COUNT
        assert {owner for _, _, owner in view} == {n.port for n in docker_cluster.primaries()}

    def test_cluster_client_reads_and_writes(self, docker_cluster_url: str) -> None:
        client = redis.RedisCluster.from_url(docker_cluster_url)
        try:
            for i in range(200):
                client.set(f"k:{i}", i)
            assert [int(client.get(f"k:{i}") or -1) for i in range(200)] == list(range(200))
        finally:
            client.close()

    def test_startup_nodes_are_every_node(self, docker_cluster: RedisClusterContainer) -> None:
        assert docker_cluster.startup_nodes == [("127.0.0.1", p) for p in docker_cluster.ports]
        assert docker_cluster.url == f"redis://127.0.0.1:{docker_cluster.ports[0]}"

    def test_pause_and_resume_a_replica(self, docker_cluster: RedisClusterContainer) -> None:
        port = docker_cluster.replicas()[0].port
        docker_cluster.pause(port)
        try:
            snapshot = {n.port: n for n in docker_cluster.nodes}[port]
            assert snapshot.paused and snapshot.running
            frozen = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.3)
            with pytest.raises(redis.TimeoutError):
                frozen.ping()
            frozen.close()
        finally:
            docker_cluster.resume(port)
        with node(port) as conn:
            assert conn.ping()
        docker_cluster.wait_ok(timeout=30)


@pytest.mark.docker
def test_missing_image_is_explained(docker_ok: None) -> None:
    cluster = RedisClusterContainer(image="clusterinval/no-such-image:0")
    with pytest.raises(RedisClusterContainerError, match=r"could not be pulled.*build-offline"):
        cluster.start()


@pytest.fixture
def small_cluster(docker_ok: None) -> Iterator[RedisClusterContainer]:
    """A cluster of three primaries without replicas, for tests that own its life."""
    cluster = RedisClusterContainer(primaries=3, replicas=0)
    yield cluster
    cluster.stop()


@pytest.mark.docker
def test_stop_removes_every_container(small_cluster: RedisClusterContainer) -> None:
    small_cluster.start()
    assert len(small_cluster.primaries()) == 3 and small_cluster.replicas() == []
    ids = [small_cluster.container(p).get_wrapped_container().id for p in small_cluster.ports]
    first, second = small_cluster.ports[:2]
    small_cluster.pause(first)  # a frozen node and a stopped one are removed too
    small_cluster.kill(second)
    small_cluster.stop()
    client = DockerClient.from_env()
    remaining = {c.id for c in client.containers.list(all=True)}
    client.close()
    assert remaining.isdisjoint(ids)
    with pytest.raises(RedisClusterContainerError, match="not started"):
        _ = small_cluster.nodes
