"""What every test-cluster backend offers: lifecycle, addresses, health, data and fault verbs.

``ClusterBackend`` holds the behaviour the backends share (waiting for health, emptying the
cluster, addresses, node selection by role) and names the verbs each one implements its own way:
``LocalCluster`` signals redis-server processes, ``RedisClusterContainer`` drives containers. A
test written against these verbs runs on either::

    cluster.kill(port)       # the node goes away (process killed, container stopped)
    cluster.wait_ok()        # a replica has taken over
    cluster.restart(port)    # it comes back with its cluster identity
    cluster.pause(port)      # frozen: holds its sockets, answers nothing
    cluster.resume(port)
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import ClassVar, Generic, Protocol, Self, TypeVar

import redis

from clusterinval.testing._node import Deadline, cluster_health_problem, node_command

__all__ = ["ROLE_PRIMARY", "ROLE_REPLICA", "ClusterBackend", "ClusterNode"]

ROLE_PRIMARY = "primary"
ROLE_REPLICA = "replica"


class ClusterNode(Protocol):
    """What every backend's node snapshot tells: its address, its role, whether it is paused."""

    @property
    def port(self) -> int:
        """The node's client port."""
        ...

    @property
    def host(self) -> str:
        """The address the node listens on."""
        ...

    @property
    def url(self) -> str:
        """The node's redis:// URL."""
        ...

    @property
    def role(self) -> str:
        """``"primary"`` or ``"replica"`` (a backend may add its own value for "cannot tell")."""
        ...

    @property
    def paused(self) -> bool:
        """True while the node is frozen by ``pause``."""
        ...


NodeT = TypeVar("NodeT", bound=ClusterNode)


class ClusterBackend(ABC, Generic[NodeT]):
    """A throwaway Redis Cluster for tests; subclasses say how nodes run, stop, freeze and return.

    Subclasses set ``_error`` (raised for every failure of the cluster itself) and ``_poll_s``,
    keep ``_ports`` in creation order (primaries first) and ``_paused`` up to date, and implement
    the abstract members below.
    """

    _error: ClassVar[type[Exception]] = RuntimeError
    _poll_s: ClassVar[float] = 0.05

    def __init__(self, host: str, ports: Sequence[int] = ()) -> None:
        self.host = host
        self._ports: list[int] = list(ports)
        # The last role each node reported: kept up to date by every health check.
        self._roles: dict[int, str] = {}
        self._paused: set[int] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    @abstractmethod
    def start(self) -> Self:
        """Start every node, form the cluster and wait until it is healthy; return self."""

    @abstractmethod
    def stop(self) -> None:
        """Stop every node and remove whatever ``start`` made."""

    @property
    @abstractmethod
    def _started(self) -> bool:
        """True while nodes of this cluster exist (started and not yet stopped)."""

    def __enter__(self) -> Self:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _require_started(self) -> None:
        if not self._started:
            raise self._error("the cluster is not started")

    def _require_ports(self) -> None:
        if not self._ports:
            raise self._error("the cluster is not started")

    # -- waiting -------------------------------------------------------------------------------

    def _wait(self, deadline: Deadline, probe: Callable[[], str | None], what: str) -> None:
        """Poll ``probe`` (a problem, or None when there is none) until it is None or time is up."""
        while True:
            try:
                problem = probe()
            except redis.RedisError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem is None:
                return
            if deadline.expired():
                raise self._error(f"{what} within {deadline.seconds:.1f}s: {problem}")
            time.sleep(self._poll_s)

    # -- health --------------------------------------------------------------------------------

    @abstractmethod
    def _live_ports(self) -> list[int]:
        """The ports of the nodes that run now and are not paused."""

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every live node is ok, agrees on slot owners, and replica links are up."""
        self._require_started()
        self._wait(Deadline(timeout), self._health_problem, "the cluster did not become healthy")

    def _health_problem(self) -> str | None:
        """Say what keeps the live nodes from being one healthy cluster; None when nothing."""
        return cluster_health_problem(self.host, self._live_ports(), self._roles)

    # -- addresses and nodes -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The redis:// URL of the first node (a primary when the cluster was created)."""
        self._require_ports()
        return f"redis://{self.host}:{self._ports[0]}"

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """Every node as (host, port), for cluster clients' startup_nodes."""
        self._require_ports()
        return [(self.host, p) for p in self._ports]

    @property
    def ports(self) -> list[int]:
        """The client port of every node, in creation order (primaries first)."""
        return list(self._ports)

    @abstractmethod
    def _node_ports(self) -> list[int]:
        """The ports ``nodes`` reports on."""

    @abstractmethod
    def _snapshot(self, port: int) -> NodeT:
        """A snapshot of the node on ``port``, with the role it reports now."""

    @abstractmethod
    def _listed_by_role(self, node: NodeT) -> bool:
        """True when ``primaries()`` and ``replicas()`` list ``node`` under its role."""

    @property
    def nodes(self) -> list[NodeT]:
        """A snapshot of every node, with the role each running node reports now."""
        return [self._snapshot(p) for p in self._node_ports()]

    def primaries(self) -> list[NodeT]:
        """The running nodes that are primaries now."""
        return [n for n in self.nodes if self._listed_by_role(n) and n.role == ROLE_PRIMARY]

    def replicas(self) -> list[NodeT]:
        """The running nodes that are replicas now."""
        return [n for n in self.nodes if self._listed_by_role(n) and n.role == ROLE_REPLICA]

    def _query_role(self, port: int) -> str | None:
        """The role the node on ``port`` reports, or None when it does not answer."""
        try:
            reply = node_command(self.host, port, "ROLE")
        except redis.RedisError:
            return None
        return ROLE_REPLICA if str(reply[0]) == "slave" else ROLE_PRIMARY

    # -- data ----------------------------------------------------------------------------------

    def flushall(self, timeout: float = 10.0) -> None:
        """Empty every primary, then wait until every live replica is empty too."""
        self._require_started()
        flushed: set[int] = set()

        def flush_then_check() -> str | None:
            # Roles are asked each round: a failover may have moved the primary role meanwhile.
            for port in self._live_ports():
                if port not in flushed and self._query_role(port) == ROLE_PRIMARY:
                    node_command(self.host, port, "FLUSHALL")
                    flushed.add(port)
            for port in self._live_ports():
                size = int(node_command(self.host, port, "DBSIZE"))
                if size:
                    return f"node {port} still holds {size} keys"
            return None

        self._wait(Deadline(timeout), flush_then_check, "FLUSHALL did not empty every node")

    # -- faults --------------------------------------------------------------------------------

    @abstractmethod
    def kill(self, port: int) -> None:
        """Take the node on ``port`` down and wait until it is gone."""

    @abstractmethod
    def pause(self, port: int) -> None:
        """Freeze the node on ``port``: it keeps its sockets but answers nothing."""

    @abstractmethod
    def resume(self, port: int) -> None:
        """Thaw a node frozen by ``pause``."""

    @abstractmethod
    def restart(self, port: int, timeout: float = 10.0) -> NodeT:
        """Bring the node on ``port`` back with its cluster identity; wait until it answers."""
