"""Local Redis Cluster and standalone Redis made of redis-server processes on loopback ports.

The cluster is built without redis-cli: slots are assigned with CLUSTER ADDSLOTSRANGE, nodes are
joined with CLUSTER MEET, replicas attached with CLUSTER REPLICATE, and readiness is a condition
polled with a deadline (state ok, one agreed slot map, replica links up), never a sleep.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from clusterinval._core.slots import SLOT_COUNT
from clusterinval.testing._node import (
    Deadline,
    LocalClusterError,
    NodeSpawner,
    RedisServerNotFoundError,
    node_command,
    parse_fields,
    resolve_binary,
    wait_ready,
)
from clusterinval.testing._ports import pick_ports
from clusterinval.testing._process import RedisProcess, log_tail, terminate_all
from clusterinval.testing.base import ROLE_PRIMARY, ROLE_REPLICA, ClusterBackend

__all__ = [
    "ClusterStatus",
    "LocalCluster",
    "LocalClusterError",
    "LocalNode",
    "LocalRedis",
    "RedisServerNotFoundError",
    "default_state_dir",
]

_STATE_FILE = "state.json"
_STATE_VERSION = 1


@dataclass(frozen=True)
class LocalNode:
    """A snapshot of one local redis-server: where it listens, its PID and its current role."""

    port: int
    pid: int
    url: str
    role: str
    host: str = "127.0.0.1"
    alive: bool = True
    paused: bool = False


@dataclass(frozen=True)
class ClusterStatus:
    """What ``LocalCluster.status()`` reports: the URL, every node, and the cluster's state."""

    url: str
    nodes: tuple[LocalNode, ...]
    cluster_state: str
    workdir: str

    @property
    def running(self) -> bool:
        """True when at least one node process is alive."""
        return any(n.alive for n in self.nodes)


def default_state_dir() -> Path:
    """Return where a detached cluster keeps its state ($CLUSTERINVAL_HOME/cluster by default)."""
    home = os.environ.get("CLUSTERINVAL_HOME")
    base = Path(home) if home else Path.home() / ".clusterinval"
    return base / "cluster"


class LocalCluster(ClusterBackend[LocalNode]):
    """A Redis Cluster of local redis-server processes: N primaries with R replicas each."""

    _error = LocalClusterError
    _poll_s = 0.02

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 1,
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
        redis_server: str = "redis-server",
        workdir: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        node_timeout_ms: int = 2000,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if primaries < 1 or replicas < 0:
            raise ValueError("need at least one primary and a non-negative replica count")
        if primaries > SLOT_COUNT:
            raise ValueError(f"at most {SLOT_COUNT} primaries")
        size = primaries * (1 + replicas)
        if ports is not None and len(ports) != size:
            raise ValueError(f"{size} ports needed for {primaries} primaries x {replicas} replicas")
        super().__init__(host, ports or ())
        self.primary_count = primaries
        self.replica_count = replicas
        self.redis_server = redis_server
        self.node_timeout_ms = node_timeout_ms
        self.extra_args = tuple(extra_args)
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self._requested_ports = list(ports) if ports is not None else None
        self._requested_workdir = Path(workdir) if workdir is not None else None
        self._workdir: Path | None = None
        self._owns_workdir = False
        self._detached = False
        self._procs: dict[int, RedisProcess] = {}
        self._nodeset: NodeSpawner | None = None
        self._atexit_registered = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0, *, detach: bool = False) -> Self:
        """Start the servers, build the cluster and wait until it is healthy; return self."""
        if self._procs:
            raise LocalClusterError("this LocalCluster is already started")
        binary = resolve_binary(self.redis_server)
        deadline = Deadline(timeout)
        if detach:
            self._claim_state_dir()
        self._detached = detach
        self._workdir, self._owns_workdir = self._make_workdir(detach)
        nodeset = NodeSpawner(
            binary,
            self.host,
            self._workdir,
            self._node_args(),
            fixed_ports=self._requested_ports is not None,
            detach=detach,
        )
        nodeset.cluster = True
        self._nodeset = nodeset
        size = self.primary_count * (1 + self.replica_count)
        try:
            ports = self._requested_ports or pick_ports(size, self.host)
            for port in ports:
                # A node config left from an earlier run would make the node rejoin that cluster.
                (self._workdir / f"nodes-{port}.conf").unlink(missing_ok=True)
            procs = nodeset.start_all(list(ports), deadline, set(ports))
            self._ports = [p.port for p in procs]
            self._procs = {p.port: p for p in procs}
            self._create(deadline)
            self.wait_ok(deadline.remaining())
            if detach:
                self._write_state()
        except LocalClusterError as exc:
            # The node logs say why: keep them for whoever reads this error.
            kept = self._workdir
            self._owns_workdir = False
            self._teardown()
            raise LocalClusterError(f"{exc} (node logs kept in {kept})") from exc
        except BaseException:
            self._teardown()
            raise
        if not detach:
            atexit.register(self._stop_at_exit)
            self._atexit_registered = True
        return self

    def stop(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL past a deadline) and remove what start made."""
        self._teardown()

    @property
    def _started(self) -> bool:
        return bool(self._procs)

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self._teardown()

    def _teardown(self) -> None:
        procs = list(self._procs.values())
        if self._detached:
            # Recorded PIDs may have been reused since: signal only servers that are still ours.
            procs = [p for p in procs if p.attached or p.is_ours()]
        terminate_all(procs)
        self._procs = {}
        self._paused.clear()
        if self._atexit_registered:
            atexit.unregister(self._stop_at_exit)
            self._atexit_registered = False
        if self._detached:
            (self.state_dir / _STATE_FILE).unlink(missing_ok=True)
        if self._owns_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._owns_workdir = False

    def _node_args(self) -> list[str]:
        return [
            "--cluster-node-timeout", str(self.node_timeout_ms),
            *self.extra_args,
        ]  # fmt: skip

    def _make_workdir(self, detach: bool) -> tuple[Path, bool]:
        if self._requested_workdir is not None:
            self._requested_workdir.mkdir(parents=True, exist_ok=True)
            return self._requested_workdir.resolve(), False
        if detach:
            data = self.state_dir / "data"
            # No live cluster claims this directory (checked before): clear what a dead one left.
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(parents=True)
            return data.resolve(), True
        return Path(tempfile.mkdtemp(prefix="clusterinval-cluster-")).resolve(), True

    # -- building the cluster ----------------------------------------------------------------

    def _create(self, deadline: Deadline) -> None:
        host = self.host
        primaries = self._ports[: self.primary_count]
        ids = {port: str(node_command(host, port, "CLUSTER", "MYID")) for port in self._ports}
        for epoch, port in enumerate(self._ports, start=1):
            # Distinct epochs up front spare the nodes a round of collision resolution.
            node_command(host, port, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for i, port in enumerate(primaries):
            lo = i * SLOT_COUNT // self.primary_count
            hi = (i + 1) * SLOT_COUNT // self.primary_count - 1
            self._add_slots(port, lo, hi)
            self._roles[port] = ROLE_PRIMARY
        for i, port in enumerate(self._ports):
            # Every pair meets directly: waiting for gossip to spread the news takes ~1 s more.
            for other in self._ports[i + 1 :]:
                node_command(host, port, "CLUSTER", "MEET", host, other)
        self._wait(deadline, lambda: self._join_problem(ids), "nodes did not all meet")
        for i, primary in enumerate(primaries):
            start = self.primary_count + i * self.replica_count
            for replica in self._ports[start : start + self.replica_count]:
                node_command(host, replica, "CLUSTER", "REPLICATE", ids[primary])
                self._roles[replica] = ROLE_REPLICA

    def _add_slots(self, port: int, lo: int, hi: int) -> None:
        try:
            node_command(self.host, port, "CLUSTER", "ADDSLOTSRANGE", lo, hi)
        except redis.ResponseError:
            # Redis 6.2 has no ADDSLOTSRANGE.
            node_command(self.host, port, "CLUSTER", "ADDSLOTS", *range(lo, hi + 1))

    def _join_problem(self, ids: dict[int, str]) -> str | None:
        """Say which node does not yet know every other node as a connected peer, if any."""
        want = set(ids.values())
        for port in self._ports:
            text = str(node_command(self.host, port, "CLUSTER", "NODES"))
            seen: set[str] = set()
            for line in text.splitlines():
                parts = line.split()
                if len(parts) < 8:
                    continue
                flags = parts[2].split(",")
                if "handshake" in flags or "noaddr" in flags:
                    return f"{port} is still in handshake with {parts[1]}"
                if "myself" not in flags and parts[7] != "connected":
                    return f"{port} has no link to {parts[1]}"
                seen.add(parts[0])
            if seen != want:
                return f"{port} knows {len(seen & want)} of {len(want)} nodes"
        return None

    # -- health and inspection ---------------------------------------------------------------

    def _live_ports(self) -> list[int]:
        return [p for p in self._ports if p not in self._paused and self._procs[p].alive()]

    @property
    def workdir(self) -> Path | None:
        """The directory holding node configs and logs (None before start)."""
        return self._workdir

    def _node_ports(self) -> list[int]:
        # Empty, not an error, before start.
        return [p for p in self._ports if p in self._procs]

    def _listed_by_role(self, node: LocalNode) -> bool:
        # A paused process is still alive, and still listed under the role it had.
        return node.alive

    def node_for_port(self, port: int) -> LocalNode:
        """The snapshot of the node on ``port``; KeyError if no node of ours listens there."""
        if port not in self._procs:
            raise KeyError(f"no node of this cluster on port {port}")
        return self._snapshot(port)

    def _snapshot(self, port: int) -> LocalNode:
        proc = self._procs[port]
        alive = proc.alive()
        paused = port in self._paused
        if alive and not paused:
            self._roles[port] = self._query_role(port) or self._roles.get(port, ROLE_PRIMARY)
        return LocalNode(
            port=port,
            pid=proc.pid,
            url=f"redis://{self.host}:{port}",
            role=self._roles.get(port, ROLE_PRIMARY),
            host=self.host,
            alive=alive,
            paused=paused,
        )

    def status(self) -> ClusterStatus:
        """Report the URL, each node (role, port, PID, alive) and the cluster_state seen."""
        self._require_started()
        nodes = tuple(self._snapshot(p) for p in self._ports)
        state = "down"
        for node in nodes:
            if node.alive and not node.paused:
                try:
                    info = parse_fields(str(node_command(self.host, node.port, "CLUSTER", "INFO")))
                except redis.RedisError:
                    continue
                state = info.get("cluster_state", "unknown")
                break
        return ClusterStatus(self.url, nodes, state, str(self._workdir))

    # -- faults ------------------------------------------------------------------------------

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the node on ``port``; for a terminating signal, wait until it is gone."""
        proc = self._proc(port)
        proc.send(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            if port in self._paused and sig != signal.SIGKILL:
                proc.send(signal.SIGCONT)
            self._paused.discard(port)
            if not proc.wait_exit(10.0):
                raise LocalClusterError(f"node {port} (pid {proc.pid}) did not exit after {sig}")
            proc.reap()

    def pause(self, port: int) -> None:
        """Freeze the node on ``port`` (SIGSTOP): it holds its sockets but answers nothing."""
        self._proc(port).send(signal.SIGSTOP)
        self._paused.add(port)

    def resume(self, port: int) -> None:
        """Thaw a node frozen by ``pause`` (SIGCONT)."""
        self._proc(port).send(signal.SIGCONT)
        self._paused.discard(port)

    def restart(self, port: int, timeout: float = 10.0) -> LocalNode:
        """Start the node on ``port`` again (stopping it first), same identity; wait for PING."""
        proc = self._proc(port)
        if self._nodeset is None:
            raise LocalClusterError("cannot restart a node of a cluster this process did not start")
        if proc.alive():
            terminate_all([proc], timeout=timeout)
        self._paused.discard(port)
        new = self._nodeset.spawn(port)
        self._procs[port] = new
        if not wait_ready(self.host, new, Deadline(timeout)):
            raise LocalClusterError(
                f"node {port} exited on restart; its log ends:\n"
                f"{log_tail(self._nodeset.log_path(port))}"
            )
        if self._detached:
            self._write_state()
        return self._snapshot(port)

    def _proc(self, port: int) -> RedisProcess:
        self._require_started()
        try:
            return self._procs[port]
        except KeyError:
            raise KeyError(f"no node of this cluster on port {port}") from None

    # -- detached mode -----------------------------------------------------------------------

    def _claim_state_dir(self) -> None:
        running = LocalCluster.from_state(self.state_dir)
        if running is not None:
            raise LocalClusterError(
                f"a local cluster is already running at {running.url} "
                f"(state in {self.state_dir}); stop it first (`clusterinval cluster down`)"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def _write_state(self) -> None:
        state = {
            "version": _STATE_VERSION,
            "url": self.url,
            "host": self.host,
            "primaries": self.primary_count,
            "replicas": self.replica_count,
            "ports": self._ports,
            "pids": [self._procs[p].pid for p in self._ports],
            "workdir": str(self._workdir),
            "owns_workdir": self._owns_workdir,
            "redis_server": self.redis_server,
            "node_timeout_ms": self.node_timeout_ms,
            "extra_args": list(self.extra_args),
            "started_at": time.time(),
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / f".{_STATE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_dir / _STATE_FILE)

    @classmethod
    def from_state(cls, state_dir: str | os.PathLike[str] | None = None) -> LocalCluster | None:
        """Return the detached cluster recorded in ``state_dir`` while any server of it runs."""
        directory = Path(state_dir) if state_dir is not None else default_state_dir()
        path = directory / _STATE_FILE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LocalClusterError(f"unreadable cluster state {path}: {exc}") from exc
        cluster = cls(
            primaries=int(state["primaries"]),
            replicas=int(state["replicas"]),
            host=str(state["host"]),
            ports=[int(p) for p in state["ports"]],
            redis_server=str(state.get("redis_server", "redis-server")),
            workdir=str(state["workdir"]),
            extra_args=[str(a) for a in state.get("extra_args", [])],
            node_timeout_ms=int(state.get("node_timeout_ms", 2000)),
            state_dir=directory,
        )
        workdir = Path(state["workdir"])
        cluster._workdir = workdir
        cluster._owns_workdir = bool(state.get("owns_workdir", False))
        cluster._detached = True
        cluster._procs = {
            int(port): RedisProcess(int(port), int(pid), workdir)
            for port, pid in zip(state["ports"], state["pids"], strict=True)
        }
        if not any(p.is_ours() for p in cluster._procs.values()):
            # Nothing of it runs any more (a reboot, a kill): forget the stale record.
            path.unlink(missing_ok=True)
            if cluster._owns_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            return None
        binary = shutil.which(cluster.redis_server)
        if binary is not None:
            nodeset = NodeSpawner(
                binary, cluster.host, workdir, cluster._node_args(), fixed_ports=True, detach=True
            )
            nodeset.cluster = True
            cluster._nodeset = nodeset
        return cluster

    def __repr__(self) -> str:
        return (
            f"LocalCluster(primaries={self.primary_count}, replicas={self.replica_count}, "
            f"ports={self._ports})"
        )


class LocalRedis:
    """A standalone (non-cluster) redis-server on a free loopback port."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        redis_server: str = "redis-server",
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._requested_workdir = Path(workdir) if workdir is not None else None
        self.extra_args = tuple(extra_args)
        self.redis_server = redis_server
        self._proc: RedisProcess | None = None
        self._workdir: Path | None = None
        self._owns_workdir = False
        self._atexit_registered = False

    def start(self, timeout: float = 10.0) -> Self:
        """Start the server and wait until it answers PING; return self."""
        if self._proc is not None:
            raise LocalClusterError("this LocalRedis is already started")
        binary = resolve_binary(self.redis_server)
        if self._requested_workdir is not None:
            self._requested_workdir.mkdir(parents=True, exist_ok=True)
            self._workdir, self._owns_workdir = self._requested_workdir, False
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="clusterinval-redis-"))
            self._owns_workdir = True
        nodeset = NodeSpawner(
            binary,
            self.host,
            self._workdir,
            self.extra_args,
            fixed_ports=self._requested_port is not None,
            detach=False,
        )
        try:
            port = self._requested_port or pick_ports(1, self.host, cluster_bus=False)[0]
            self._proc = nodeset.start_all([port], Deadline(timeout), {port})[0]
        except BaseException:
            self._cleanup_dir()
            raise
        atexit.register(self._stop_at_exit)
        self._atexit_registered = True
        return self

    def stop(self) -> None:
        """Stop the server by PID and remove the directory start made."""
        if self._proc is not None:
            terminate_all([self._proc])
            self._proc = None
        if self._atexit_registered:
            atexit.unregister(self._stop_at_exit)
            self._atexit_registered = False
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._owns_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._owns_workdir = False

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()

    def _running(self) -> RedisProcess:
        if self._proc is None:
            raise LocalClusterError("the server is not started")
        return self._proc

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self._running().port

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self._running().pid

    @property
    def url(self) -> str:
        """The server's redis:// URL."""
        return f"redis://{self.host}:{self.port}"

    def flushall(self) -> None:
        """Empty the server."""
        node_command(self.host, self.port, "FLUSHALL")

    def __enter__(self) -> Self:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
