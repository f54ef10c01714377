"""The local cluster launcher against real redis-server processes."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from clusterinval.testing import LocalCluster, LocalClusterError, LocalRedis
from clusterinval.testing import local as local_module
from clusterinval.testing._ports import BUS_OFFSET, is_port_free, pick_ports
from clusterinval.testing.local import RedisServerNotFoundError

SLOT_COUNT = 16384


def _node(host: str, port: int, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis(
        host=host,
        port=port,
        socket_timeout=timeout,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def _slot_owners(cluster: LocalCluster, port: int) -> dict[tuple[int, int], int]:
    with _node(cluster.host, port) as conn:
        reply = conn.execute_command("CLUSTER", "SLOTS")
    return {(int(e[0]), int(e[1])): int(e[2][1]) for e in reply}


def _dbsize(host: str, port: int) -> int:
    with _node(host, port) as conn:
        return int(conn.dbsize())


def _pid_running(pid: int) -> bool:
    """True while ``pid`` is a process that has not exited (zombies count as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _cluster_client(cluster: LocalCluster) -> RedisCluster:
    # Any node will do as an entry point: use the last, which is a replica.
    host, port = cluster.startup_nodes[-1]
    return RedisCluster(host=host, port=port, decode_responses=True)


class TestSessionCluster:
    def test_three_primaries_cover_all_slots(self, local_cluster: LocalCluster) -> None:
        primaries = {n.port for n in local_cluster.primaries()}
        assert len(primaries) == 3
        for node in local_cluster.nodes:
            owners = _slot_owners(local_cluster, node.port)
            assert sum(hi - lo + 1 for lo, hi in owners) == SLOT_COUNT
            assert set(owners.values()) == primaries

    def test_every_primary_has_a_linked_replica(self, local_cluster: LocalCluster) -> None:
        primaries = {n.port for n in local_cluster.primaries()}
        replicas = local_cluster.replicas()
        assert len(replicas) == 3
        masters = []
        for replica in replicas:
            with _node(local_cluster.host, replica.port) as conn:
                info = conn.info("replication")
            assert info["role"] == "slave"
            assert info["master_link_status"] == "up"
            masters.append(int(info["master_port"]))
        assert sorted(masters) == sorted(primaries)

    def test_cluster_client_reads_and_writes(
        self, local_cluster: LocalCluster, cluster_url: str
    ) -> None:
        client = redis.RedisCluster.from_url(cluster_url, decode_responses=True)
        try:
            for i in range(50):
                client.set(f"k:{i}", str(i))
            assert [client.get(f"k:{i}") for i in range(50)] == [str(i) for i in range(50)]
        finally:
            client.close()
        sizes = [_dbsize(local_cluster.host, n.port) for n in local_cluster.primaries()]
        assert sum(sizes) == 50
        assert all(sizes), "keys spread over every primary"

    def test_flushall_empties_replicas(self, local_cluster: LocalCluster) -> None:
        client = _cluster_client(local_cluster)
        try:
            for i in range(200):
                client.set(f"flush:{i}", "x")
        finally:
            client.close()
        for primary in local_cluster.primaries():
            with _node(local_cluster.host, primary.port) as conn:
                # Wait for the replica to acknowledge the writes, so the flush has to reach it.
                assert conn.execute_command("WAIT", 1, 5000) == 1
        assert all(_dbsize(local_cluster.host, n.port) > 0 for n in local_cluster.replicas())
        local_cluster.flushall()
        assert [_dbsize(local_cluster.host, n.port) for n in local_cluster.nodes] == [0] * 6

    def test_cluster_url_fixture_is_an_empty_cluster(
        self, local_cluster: LocalCluster, cluster_url: str
    ) -> None:
        assert cluster_url == local_cluster.url
        assert cluster_url == f"redis://127.0.0.1:{local_cluster.startup_nodes[0][1]}"
        assert all(_dbsize(local_cluster.host, n.port) == 0 for n in local_cluster.nodes)

    def test_node_lookup(self, local_cluster: LocalCluster) -> None:
        assert len(local_cluster.startup_nodes) == 6
        for node in local_cluster.nodes:
            found = local_cluster.node_for_port(node.port)
            assert found.url == f"redis://127.0.0.1:{node.port}"
            assert found.pid == node.pid
            assert _pid_running(found.pid)
        with pytest.raises(KeyError):
            local_cluster.node_for_port(1)

    def test_status_reports_ok(self, local_cluster: LocalCluster) -> None:
        status = local_cluster.status()
        assert status.cluster_state == "ok"
        assert status.url == local_cluster.url
        assert all(n.alive for n in status.nodes)
        assert sorted(n.role for n in status.nodes) == ["primary"] * 3 + ["replica"] * 3


class TestStandalone:
    def test_standalone_is_not_a_cluster(self, standalone_url: str) -> None:
        client = redis.Redis.from_url(standalone_url, decode_responses=True)
        try:
            assert client.info("cluster")["cluster_enabled"] == 0
            assert client.dbsize() == 0
            client.set("a", "1")
            assert client.get("a") == "1"
        finally:
            client.close()

    def test_fixed_port_in_use_is_an_error(self, local_redis: LocalRedis) -> None:
        with pytest.raises(LocalClusterError, match="already in use"):
            LocalRedis(port=local_redis.port).start()

    @pytest.mark.usefixtures("redis_server_path")
    def test_port_taken_after_the_pick_moves_to_another(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Someone else binds the picked port before redis-server does: the launcher moves on.
        squatter = socket.socket()
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        calls: list[int] = []

        def pick_taken_first(count: int, host: str = "127.0.0.1", **kw: Any) -> list[int]:
            calls.append(count)
            return [taken] if len(calls) == 1 else pick_ports(count, host, **kw)

        monkeypatch.setattr(local_module, "pick_ports", pick_taken_first)
        try:
            with LocalRedis() as server:
                # The first pick was the squatted port; the server runs on another one.
                assert calls == [1]
                assert server.port != taken
                with _node(server.host, server.port) as conn:
                    assert conn.info("server")["process_id"] == server.pid
        finally:
            squatter.close()

    @pytest.mark.usefixtures("redis_server_path")
    def test_stop_leaves_no_process_or_directory(self) -> None:
        server = LocalRedis().start()
        pid, workdir = server.pid, server._workdir
        assert workdir is not None and workdir.is_dir()
        assert _pid_running(pid)
        server.stop()
        assert not _pid_running(pid)
        assert not workdir.exists()


class TestPorts:
    def test_picked_ports_and_bus_ports_are_free_and_distinct(self) -> None:
        ports = pick_ports(6)
        assert len(set(ports)) == 6
        assert all(20000 <= p <= 29999 for p in ports)
        assert all(is_port_free("127.0.0.1", p + BUS_OFFSET) for p in ports)

    def test_missing_server_binary_says_how_to_install(self) -> None:
        cluster = LocalCluster(redis_server="no-such-redis-server-binary")
        with pytest.raises(RedisServerNotFoundError, match="apt-get install redis-server"):
            cluster.start()
        assert cluster.nodes == []
        cluster.stop()


@pytest.mark.usefixtures("redis_server_path")
class TestDetached:
    def test_detached_start_state_and_stop(self, tmp_path: Path) -> None:
        state_dir = tmp_path / "state"
        started = LocalCluster(primaries=3, replicas=0, state_dir=state_dir).start(detach=True)
        state = json.loads((state_dir / "state.json").read_text())
        pids = state["pids"]
        assert state["ports"] == started.ports
        assert state["url"] == started.url
        try:
            assert all(_pid_running(pid) for pid in pids)
            # The servers are not our children: they were started in a session of their own.
            assert all(os.getsid(pid) != os.getsid(0) for pid in pids)

            found = LocalCluster.from_state(state_dir)
            assert found is not None
            assert found.url == started.url
            status = found.status()
            assert status.cluster_state == "ok"
            assert [n.pid for n in status.nodes] == pids
            assert all(n.alive and n.role == "primary" for n in status.nodes)

            with pytest.raises(LocalClusterError, match="already running"):
                LocalCluster(primaries=1, replicas=0, state_dir=state_dir).start(detach=True)
        finally:
            found = LocalCluster.from_state(state_dir)
            assert found is not None
            found.stop()

        assert not any(_pid_running(pid) for pid in pids)
        assert not (state_dir / "state.json").exists()
        assert not Path(state["workdir"]).exists()
        assert LocalCluster.from_state(state_dir) is None
        assert all(is_port_free("127.0.0.1", p) for p in state["ports"])

    def test_stale_state_never_signals_a_stranger(self, tmp_path: Path) -> None:
        # A recorded PID that now belongs to another process (here: this test) is not ours.
        state = {
            "version": 1,
            "url": "redis://127.0.0.1:29999",
            "host": "127.0.0.1",
            "primaries": 1,
            "replicas": 0,
            "ports": [29999],
            "pids": [os.getpid()],
            "workdir": str(tmp_path / "data"),
            "owns_workdir": True,
        }
        (tmp_path / "state.json").write_text(json.dumps(state))
        assert LocalCluster.from_state(tmp_path) is None
        assert not (tmp_path / "state.json").exists()


@pytest.fixture(scope="module")
def fault_cluster(redis_server_path: str) -> Iterator[LocalCluster]:
    """A small cluster of its own for tests that pause and kill nodes."""
    with LocalCluster(primaries=3, replicas=1, node_timeout_ms=1000) as cluster:
        yield cluster


class TestFaults:
    def test_pause_and_resume(self, fault_cluster: LocalCluster) -> None:
        replica = fault_cluster.replicas()[0]
        fault_cluster.pause(replica.port)
        try:
            assert fault_cluster.node_for_port(replica.port).paused
            with (
                _node(fault_cluster.host, replica.port, timeout=0.3) as conn,
                pytest.raises(redis.TimeoutError),
            ):
                conn.ping()
        finally:
            fault_cluster.resume(replica.port)
        with _node(fault_cluster.host, replica.port) as conn:
            assert conn.ping()
        fault_cluster.wait_ok(30)

    def test_killed_primary_is_replaced_by_its_replica(self, fault_cluster: LocalCluster) -> None:
        fault_cluster.wait_ok(30)
        primary = fault_cluster.primaries()[0]
        with _node(fault_cluster.host, primary.port) as conn:
            replica_port = int(conn.info("replication")["slave0"]["port"])

        fault_cluster.kill(primary.port, signal.SIGKILL)
        assert not fault_cluster.node_for_port(primary.port).alive
        fault_cluster.wait_ok(30)

        assert fault_cluster.node_for_port(replica_port).role == "primary"
        owners = _slot_owners(fault_cluster, replica_port)
        assert primary.port not in owners.values()
        assert replica_port in owners.values()

        # Back from the dead, the old primary rejoins as a replica of its successor.
        fault_cluster.restart(primary.port)
        fault_cluster.wait_ok(30)
        assert fault_cluster.node_for_port(primary.port).role == "replica"
        with _node(fault_cluster.host, primary.port) as conn:
            assert int(conn.info("replication")["master_port"]) == replica_port
