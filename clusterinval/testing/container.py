"""A throwaway Redis Cluster in Docker containers, built on testcontainers.

``RedisClusterContainer`` starts one container per node with host networking, each running
``redis-server`` with cluster mode on a loopback port, joins them with ``redis-cli --cluster
create`` run inside the first node's container, and returns once every node reports
``cluster_state:ok``, agrees on who owns all 16384 slots, and every replica's link is up.
Single nodes can be killed (their container stopped), restarted (with their cluster identity),
paused and resumed (docker pause and unpause), for fault tests, with the verbs every
``ClusterBackend`` has::

    with RedisClusterContainer(primaries=3, replicas=1) as cluster:
        client = redis.RedisCluster.from_url(cluster.url)
        ...
        cluster.kill(cluster.primaries()[0].port)   # a replica takes over
        cluster.wait_ok(timeout=30)

Any image that has ``redis-server`` and ``redis-cli`` on its PATH and ``/bin/sh`` works: the
official ``redis:6.2`` and later images, or clusterinval's own node image (``docker/Dockerfile``
or, with no registry, ``docker/build-offline-image.sh``). The image defaults to
``$CLUSTERINVAL_REDIS_IMAGE``, else ``clusterinval/redis-node:local``.

Host networking means the Docker engine must run on this machine (Linux). Nodes bind 127.0.0.1
only. Without a registry, set ``TESTCONTAINERS_RYUK_DISABLED=true``: the Ryuk reaper image cannot
be pulled, and ``stop()`` removes every container this object started anyway.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import redis
from testcontainers.core.container import DockerContainer
from testcontainers.core.docker_client import DockerClient

from clusterinval.testing._node import Deadline, node_command
from clusterinval.testing._ports import BUS_OFFSET, is_port_free, pick_ports
from clusterinval.testing.base import ClusterBackend

__all__ = [
    "DEFAULT_IMAGE",
    "IMAGE_ENV",
    "ContainerNode",
    "RedisClusterContainer",
    "RedisClusterContainerError",
    "default_image",
]

IMAGE_ENV = "CLUSTERINVAL_REDIS_IMAGE"
"""The environment variable naming the node image everywhere (scripts, compose, tests)."""

DEFAULT_IMAGE = "clusterinval/redis-node:local"
"""The image used when ``CLUSTERINVAL_REDIS_IMAGE`` is not set."""

ROLE_UNKNOWN = "unknown"

_MIN_PRIMARIES = 3  # redis-cli --cluster create refuses fewer
_LOG_TAIL_LINES = 30


def default_image() -> str:
    """Return the node image named by ``$CLUSTERINVAL_REDIS_IMAGE``, else ``DEFAULT_IMAGE``."""
    return os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE


class RedisClusterContainerError(RuntimeError):
    """Raised when node containers cannot start, the cluster cannot form, or it stays unhealthy."""


@dataclass(frozen=True)
class ContainerNode:
    """A snapshot of one node: port, container, current role, and whether it runs or is paused."""

    port: int
    container_id: str
    role: str
    running: bool
    paused: bool
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """The node's redis:// URL."""
        return f"redis://{self.host}:{self.port}"


class RedisClusterContainer(ClusterBackend[ContainerNode]):
    """A Redis Cluster of N primaries with R replicas each, one container per node.

    Args:
        primaries: number of primaries (at least 3, as ``redis-cli --cluster create`` requires).
        replicas: replicas per primary.
        image: node image; defaults to ``$CLUSTERINVAL_REDIS_IMAGE`` or ``DEFAULT_IMAGE``.
        base_port: first client port; nodes use ``base_port .. base_port + n - 1`` (and the cluster
            bus 10000 above each). ``None`` picks free ports.
        node_timeout_ms: ``cluster-node-timeout``; small values make failover in tests quick.
        host: loopback address the nodes bind and announce.
        startup_timeout_s: deadline for ``start()`` (containers up, cluster formed and healthy).
        extra_args: more ``redis-server`` options for every node, e.g. ``("--maxmemory", "64mb")``.
        docker_client_kw: passed to testcontainers' Docker client (e.g. ``{"base_url": ...}``).
    """

    _error = RedisClusterContainerError
    _poll_s = 0.05

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 1,
        image: str | None = None,
        base_port: int | None = None,
        node_timeout_ms: int = 2000,
        *,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 60.0,
        extra_args: Sequence[str] = (),
        docker_client_kw: dict[str, Any] | None = None,
    ) -> None:
        if primaries < _MIN_PRIMARIES:
            raise ValueError(
                f"a container cluster needs at least {_MIN_PRIMARIES} primaries, got {primaries}"
            )
        if replicas < 0:
            raise ValueError(f"replicas must be zero or more, got {replicas}")
        if node_timeout_ms < 100:
            raise ValueError(f"node_timeout_ms must be at least 100, got {node_timeout_ms}")
        size = primaries * (1 + replicas)
        if base_port is not None and not 1024 <= base_port <= 65535 - BUS_OFFSET - size:
            raise ValueError(
                f"base_port {base_port} leaves no room for {size} nodes and their bus ports"
            )
        super().__init__(host)
        self.primary_count = primaries
        self.replica_count = replicas
        self.image = image or default_image()
        self.base_port = base_port
        self.node_timeout_ms = node_timeout_ms
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = tuple(extra_args)
        self._docker_client_kw = docker_client_kw
        self._token = secrets.token_hex(4)
        self._containers: dict[int, DockerContainer] = {}
        self._stopped: set[int] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start every node container, create the cluster, wait until it is healthy; return self."""
        if self._containers:
            raise RedisClusterContainerError("this RedisClusterContainer is already started")
        deadline = Deadline(self.startup_timeout_s)
        self._ports = self._choose_ports()
        self._ensure_image()
        try:
            for port in self._ports:
                # Recorded before start(): a container created but not started is removed too.
                container = self._containers[port] = self._node_container(port)
                container.start()
            for port in self._ports:
                self._wait_ping(port, deadline)
            self._create_cluster()
            self._wait(deadline, self._health_problem, "the cluster did not become healthy")
        except BaseException as exc:
            self._note_logs(exc)
            self._remove_all(raise_errors=False)
            self._ports = []
            raise
        return self

    def stop(self) -> None:
        """Remove every container this object started (running, stopped or paused)."""
        self._remove_all(raise_errors=True)

    @property
    def _started(self) -> bool:
        return bool(self._containers)

    def _choose_ports(self) -> list[int]:
        size = self.primary_count * (1 + self.replica_count)
        if self.base_port is None:
            return pick_ports(size, self.host)
        ports = list(range(self.base_port, self.base_port + size))
        taken = [
            p for port in ports for p in (port, port + BUS_OFFSET) if not is_port_free(self.host, p)
        ]
        if taken:
            raise RedisClusterContainerError(
                f"ports already in use on {self.host}: {taken}; choose another base_port "
                "or pass base_port=None to pick free ports"
            )
        return ports

    def _ensure_image(self) -> None:
        """Pull the image if it is not here; say how to get it when that fails."""
        # Checked once up front: otherwise every node container would try (and fail) to pull.
        from docker.errors import DockerException, ImageNotFound

        client = DockerClient(**(self._docker_client_kw or {})).client
        try:
            client.images.get(self.image)
        except ImageNotFound:
            try:
                client.images.pull(self.image)
            except DockerException as exc:
                raise RedisClusterContainerError(
                    f"image {self.image!r} is not present and could not be pulled ({exc}). "
                    "Build clusterinval's node image (docker/build-offline-image.sh needs no "
                    f"registry), or set {IMAGE_ENV} / image= to an image with redis-server and "
                    "redis-cli, such as redis:7.2"
                ) from exc
        finally:
            client.close()

    def _node_container(self, port: int) -> DockerContainer:
        # The entry point is redis-server itself, so any image with redis-server on PATH works,
        # whatever entry point it ships.
        argv = [
            "--port", str(port),
            "--bind", self.host,
            "--cluster-enabled", "yes",
            "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--save", "",
            "--appendonly", "no",
            "--dir", "/tmp",
            # Replicas sync an empty data set at once instead of waiting for company.
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip
        return (
            DockerContainer(self.image, docker_client_kw=self._docker_client_kw)
            .with_name(f"clusterinval-{self._token}-{port}")
            .with_command(argv)
            # `network` (not `network_mode`) also stops testcontainers choosing a network itself.
            .with_kwargs(entrypoint=["redis-server"], network="host")
        )

    def _remove_all(self, *, raise_errors: bool) -> None:
        failures: list[str] = []
        for port, container in list(self._containers.items()):
            try:
                container.stop()
            except Exception as exc:
                failures.append(f"{port}: {type(exc).__name__}: {exc}")
            else:
                del self._containers[port]
        self._stopped.clear()
        self._paused.clear()
        if failures and raise_errors:
            raise RedisClusterContainerError(
                "could not remove node containers: " + "; ".join(failures)
            )

    def _note_logs(self, exc: BaseException) -> None:
        """Attach the tail of every node's log to a start failure: the cause is usually there."""
        for port, container in self._containers.items():
            with contextlib.suppress(Exception):
                logs = container.get_wrapped_container().logs(tail=_LOG_TAIL_LINES)
                exc.add_note(f"--- node {port} log tail ---\n{logs.decode(errors='replace')}")

    # -- building the cluster ------------------------------------------------------------------

    def _create_cluster(self) -> None:
        # redis-cli in the first node's container: no redis-cli needed on the host, and the same
        # step as docker/docker-compose.yml's cluster-create service.
        addresses = [f"{self.host}:{p}" for p in self._ports]
        argv = [
            "redis-cli", "--cluster", "create", *addresses,
            "--cluster-replicas", str(self.replica_count),
            "--cluster-yes",
        ]  # fmt: skip
        code, output = self._containers[self._ports[0]].exec(argv)
        if code != 0:
            text = output.decode(errors="replace") if isinstance(output, bytes) else str(output)
            raise RedisClusterContainerError(
                f"redis-cli --cluster create exited with {code}:\n{text[-2000:]}"
            )

    def _wait_ping(self, port: int, deadline: Deadline) -> None:
        container = self._containers[port]
        while True:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                if node_command(self.host, port, "PING", timeout=0.5):
                    return
            wrapped = container.get_wrapped_container()
            wrapped.reload()
            if wrapped.status in ("exited", "dead"):
                raise RedisClusterContainerError(
                    f"the container for node {port} ({self.image}) exited at start"
                )
            if deadline.expired():
                raise RedisClusterContainerError(
                    f"node {port} did not answer PING within {deadline.seconds:.0f}s"
                )
            time.sleep(self._poll_s)

    # -- health and inspection -----------------------------------------------------------------

    def _live_ports(self) -> list[int]:
        return [p for p in self._ports if p not in self._stopped and p not in self._paused]

    def _node_ports(self) -> list[int]:
        self._require_started()
        return list(self._ports)

    def _listed_by_role(self, node: ContainerNode) -> bool:
        # A paused container cannot tell its role: it is listed under neither.
        return node.running and not node.paused

    def container(self, port: int) -> DockerContainer:
        """The testcontainers object of the node on ``port`` (for logs, exec and the like)."""
        self._require_started()
        try:
            return self._containers[port]
        except KeyError:
            raise KeyError(f"no node of this cluster on port {port}") from None

    def _snapshot(self, port: int) -> ContainerNode:
        container = self.container(port)
        running = port not in self._stopped
        paused = port in self._paused
        role = ROLE_UNKNOWN
        if running and not paused:
            role = self._query_role(port) or ROLE_UNKNOWN
        return ContainerNode(
            port=port,
            container_id=container.get_wrapped_container().id,
            role=role,
            running=running,
            paused=paused,
            host=self.host,
        )

    # -- faults --------------------------------------------------------------------------------

    def kill(self, port: int, timeout_s: int = 10) -> None:
        """Stop the container of the node on ``port`` (SIGTERM, SIGKILL after ``timeout_s``)."""
        wrapped = self.container(port).get_wrapped_container()
        if port in self._paused:
            # A frozen process cannot act on SIGTERM: thaw it first so it stops cleanly.
            wrapped.unpause()
            self._paused.discard(port)
        wrapped.stop(timeout=timeout_s)
        self._stopped.add(port)

    def restart(self, port: int, timeout: float = 30.0) -> ContainerNode:
        """Start the container of a node stopped by ``kill`` again, same identity; wait for PING."""
        wrapped = self.container(port).get_wrapped_container()
        if port not in self._stopped:
            raise RedisClusterContainerError(f"node {port} is not stopped")
        wrapped.start()
        self._stopped.discard(port)
        self._wait_ping(port, Deadline(timeout))
        return self._snapshot(port)

    def pause(self, port: int) -> None:
        """Freeze the node on ``port`` (docker pause): it keeps its sockets but answers nothing."""
        if port in self._stopped:
            raise RedisClusterContainerError(f"node {port} is stopped; cannot pause it")
        self.container(port).get_wrapped_container().pause()
        self._paused.add(port)

    def resume(self, port: int) -> None:
        """Thaw a node frozen by ``pause`` (docker unpause)."""
        if port not in self._paused:
            raise RedisClusterContainerError(f"node {port} is not paused")
        self.container(port).get_wrapped_container().unpause()
        self._paused.discard(port)

    def __repr__(self) -> str:
        return (
            f"RedisClusterContainer(primaries={self.primary_count}, "
            f"replicas={self.replica_count}, image={self.image!r}, ports={self._ports})"
        )
