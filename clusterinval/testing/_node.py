"""Starting single redis-server processes and talking to one node at a time."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from clusterinval._core.cluster_text import slot_ranges
from clusterinval._core.slots import SLOT_COUNT
from clusterinval.testing._ports import pick_ports
from clusterinval.testing._process import RedisProcess, log_tail, terminate_all

__all__ = [
    "CMD_TIMEOUT_S",
    "DEFAULT_SERVER",
    "SERVER_ENV",
    "Deadline",
    "LocalClusterError",
    "NodeSpawner",
    "RedisServerNotFoundError",
    "base_args",
    "node_client",
    "node_command",
    "node_info",
    "parse_fields",
    "resolve_binary",
    "wait_ready",
]

POLL_S = 0.02
DEFAULT_SERVER = "redis-server"
# Names the server binary every test cluster runs (the CI server matrix sets it).
SERVER_ENV = "CLUSTERINVAL_REDIS_SERVER"
CMD_TIMEOUT_S = 1.0
SPAWN_ATTEMPTS = 4


class LocalClusterError(RuntimeError):
    """Raised when a local redis-server or cluster cannot be started, joined or reached."""


class RedisServerNotFoundError(LocalClusterError):
    """Raised when the redis-server binary is not installed."""


def resolve_binary(name: str) -> str:
    """Return the full path of the server binary to run, or say how to install it.

    The default name, ``redis-server``, is replaced by ``$CLUSTERINVAL_REDIS_SERVER`` when that is
    set: a path (or a name on PATH) of any Redis 6.2+ or Valkey server build, so that every test
    cluster, and the whole test suite, runs on that server.
    """
    override = os.environ.get(SERVER_ENV, "").strip()
    if name == DEFAULT_SERVER and override:
        path = shutil.which(override)
        if path is None:
            raise RedisServerNotFoundError(
                f"{SERVER_ENV}={override!r} is not an executable server binary (a path, or a "
                "name on PATH)"
            )
        return path
    path = shutil.which(name)
    if path is None:
        raise RedisServerNotFoundError(
            f"redis-server not found (looked for {name!r} on PATH). Install it with "
            "`sudo apt-get install redis-server` (Debian/Ubuntu; `brew install redis` on macOS), "
            f"or pass redis_server=/path/to/redis-server, or set {SERVER_ENV}."
        )
    return path


def node_client(host: str, port: int, timeout: float = CMD_TIMEOUT_S) -> redis.Redis:
    """Return a client for one node that fails fast instead of retrying."""
    return redis.Redis(
        host=host,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        protocol=2,
        # One try: a retrying client turns a paused node into a multi-second stall.
        retry=Retry(NoBackoff(), 0),
    )


def node_command(host: str, port: int, *args: Any, timeout: float = CMD_TIMEOUT_S) -> Any:
    """Run one command on one node over a short-lived connection."""
    with node_client(host, port, timeout) as conn:
        return conn.execute_command(*args)


def node_info(host: str, port: int, section: str, timeout: float = CMD_TIMEOUT_S) -> dict[str, Any]:
    """Return one section of a node's INFO as a dict."""
    with node_client(host, port, timeout) as conn:
        info: dict[str, Any] = conn.info(section)
        return info


def parse_fields(text: str) -> dict[str, str]:
    """Parse "key:value" lines such as CLUSTER INFO's reply."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            fields[key] = value
    return fields


def base_args(binary: str, host: str, port: int, workdir: Path) -> list[str]:
    """Return the command line of a throw-away, non-persistent redis-server."""
    return [
        binary,
        "--port", str(port),
        "--bind", host,
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--dir", str(workdir),
    ]  # fmt: skip


class Deadline:
    """A point in time that waits are measured against."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        """True once the deadline has passed."""
        return time.monotonic() >= self._end


def wait_ready(host: str, proc: RedisProcess, deadline: Deadline) -> bool:
    """Wait until the server answers; return False if its process ended first."""
    while True:
        if not proc.alive():
            return False
        try:
            # Another server may hold the port (our bind failed): only our PID's answer counts.
            if node_info(host, proc.port, "server", timeout=0.5).get("process_id") == proc.pid:
                return True
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            pass
        if deadline.expired():
            raise LocalClusterError(
                f"redis-server on port {proc.port} (pid {proc.pid}) did not answer within "
                f"{deadline.seconds:.0f}s"
            )
        time.sleep(POLL_S)


class NodeSpawner:
    """Spawns redis-server processes by position, moving to a fresh port when a port is taken."""

    def __init__(
        self,
        binary: str,
        host: str,
        workdir: Path,
        extra_args: Sequence[str],
        fixed_ports: bool,
        detach: bool,
    ) -> None:
        self.binary = binary
        self.host = host
        self.workdir = workdir
        self.extra_args = list(extra_args)
        self.fixed_ports = fixed_ports
        self.detach = detach
        self.cluster = False

    def argv(self, port: int) -> list[str]:
        """Return the full redis-server command line for ``port``."""
        args = base_args(self.binary, self.host, port, self.workdir)
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.workdir / f"nodes-{port}.conf"),
                # Replicas sync an empty data set at once instead of waiting 5 s for company.
                "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0",
            ]  # fmt: skip
        return args + self.extra_args

    def log_path(self, port: int) -> Path:
        """Return where the server on ``port`` writes its log."""
        return self.workdir / f"redis-{port}.log"

    def spawn(self, port: int) -> RedisProcess:
        """Start one server on ``port`` without waiting for it."""
        return RedisProcess.spawn(
            self.argv(port), port, self.workdir, self.log_path(port), detach=self.detach
        )

    def start_all(
        self, ports: list[int], deadline: Deadline, taken: set[int]
    ) -> list[RedisProcess]:
        """Start one server per port in parallel and wait for each; return them in order."""
        procs: list[RedisProcess] = []
        try:
            for port in ports:
                procs.append(self.spawn(port))
            for i in range(len(procs)):
                self._ready_or_respawn(procs, i, deadline, taken)
        except BaseException:
            terminate_all(procs, timeout=5.0)
            raise
        return procs

    def _ready_or_respawn(
        self, procs: list[RedisProcess], i: int, deadline: Deadline, taken: set[int]
    ) -> None:
        """Wait for ``procs[i]``; if its port was taken meanwhile, replace it on a new port."""
        for _ in range(SPAWN_ATTEMPTS):
            proc = procs[i]
            if wait_ready(self.host, proc, deadline):
                return
            proc.reap()
            tail = log_tail(self.log_path(proc.port))
            if self.fixed_ports or "already in use" not in tail:
                raise LocalClusterError(
                    f"redis-server on port {proc.port} exited at start; its log ends:\n{tail}"
                )
            # Another user took the port between our check and the bind: move on.
            taken.add(proc.port)
            port = pick_ports(1, self.host, cluster_bus=self.cluster, avoid=taken)[0]
            taken.add(port)
            procs[i] = self.spawn(port)
        raise LocalClusterError(f"could not find a free port after {SPAWN_ATTEMPTS} attempts")


def cluster_health_problem(
    host: str, live: Sequence[int], roles: dict[int, str] | None = None
) -> str | None:
    """What keeps the running nodes ``live`` from being one healthy cluster; None when nothing.

    Healthy: every node says cluster_state:ok and knows every running node, all agree on who
    owns each slot, all 16384 slots are assigned to running nodes, and every replica's link to
    its primary is up. ``roles``, when given, receives each node's current role ("primary" or
    "replica").
    """
    if not live:
        return "no node is running"
    views: set[tuple[tuple[int, int, int], ...]] = set()
    for port in live:
        state = parse_fields(str(node_command(host, port, "CLUSTER", "INFO")))
        if state.get("cluster_state") != "ok":
            return f"node {port} reports cluster_state:{state.get('cluster_state')}"
        known = int(state.get("cluster_known_nodes", 0))
        if known < len(live):  # gossip has not yet introduced every node to every other
            return f"node {port} knows {known} of the {len(live)} running nodes"
        slots = node_command(host, port, "CLUSTER", "SLOTS")
        views.add(tuple(sorted((lo, hi, int(primary[1]))
                               for lo, hi, primary, _ in slot_ranges(slots))))
        repl = node_info(host, port, "replication")
        replica = repl.get("role") == "slave"
        if roles is not None:
            roles[port] = "replica" if replica else "primary"
        if replica and repl.get("master_link_status") != "up":
            return f"replica {port} has master_link_status:{repl.get('master_link_status')}"
    if len(views) > 1:
        return f"nodes disagree on slot owners ({len(views)} different views)"
    view = views.pop()
    covered = sum(hi - lo + 1 for lo, hi, _ in view)
    if covered != SLOT_COUNT:
        return f"{covered} of {SLOT_COUNT} slots are assigned"
    dead = sorted({owner for _, _, owner in view} - set(live))
    if dead:
        return f"slots still owned by node(s) that are down or paused: {dead}"
    return None
