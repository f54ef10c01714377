"""The cluster as the library sees it: primaries, who owns which slot, and a client per node.

A standalone (non-cluster) server is modelled as one primary that owns every slot, so the engine
has a single code path for both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import Connection, parse_url
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError, ResponseError

from clusterinval.errors import ClusterConnectionError, ClusterPermissionError, InvalidInputError
from clusterinval.retry import describe
from clusterinval.slots import SLOT_COUNT, SlotSet

__all__ = ["ClusterView", "NodeAddr", "NodeOwnership", "Topology", "command"]

log = logging.getLogger("clusterinval.topology")

# Connection settings a caller may pass through from_url(...) next to the library's options.
CONNECTION_OPTIONS = frozenset({
    "username", "password", "client_name", "socket_timeout", "socket_connect_timeout",
    "socket_keepalive", "ssl", "ssl_ca_certs", "ssl_ca_data", "ssl_certfile", "ssl_keyfile",
    "ssl_cert_reqs", "ssl_check_hostname", "ssl_ciphers", "ssl_min_version", "ssl_password",
    "protocol", "retry_on_timeout", "health_check_interval", "credential_provider",
    "max_connections",
})


async def command(client: Redis, *args: Any) -> Any:
    """Run one raw command on a node client (redis-py leaves ``execute_command`` untyped)."""
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True, order=True)
class NodeAddr:
    """A node's address as the cluster announces it."""

    host: str
    port: int

    @property
    def name(self) -> str:
        """``host:port``, the label used in results, logs and metrics."""
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class NodeOwnership:
    """What one node says about itself: the slots it serves, those in migration, its epoch.

    ``epoch`` is the node's config epoch. A node takes a new one whenever it takes over a slot
    (the last step of an import, or a failover), so an unchanged epoch between two readings
    means no slot came to it in between, not even one that left and came back.
    """

    owned: SlotSet
    migrating: SlotSet
    importing: SlotSet
    epoch: int = 0

    @property
    def stable(self) -> SlotSet:
        """Owned slots that are not being migrated away."""
        return self.owned.difference(self.migrating)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One consistent reading of slot ownership."""

    owners: tuple[NodeAddr | None, ...]
    replicas: Mapping[NodeAddr, tuple[NodeAddr, ...]] = field(default_factory=dict)
    standalone: bool = False
    # Slots per primary, derived once from ``owners`` (runs read it for every job).
    _by_node: dict[NodeAddr, SlotSet] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_node = self._by_node
        start = 0
        owners = self.owners
        for i in range(1, len(owners) + 1):
            if i == len(owners) or owners[i] is not owners[start]:
                node = owners[start]
                if node is not None:
                    by_node.setdefault(node, SlotSet()).add_range(start, i - 1)
                start = i

    @property
    def primaries(self) -> tuple[NodeAddr, ...]:
        """Every node that owns at least one slot, sorted."""
        return tuple(sorted(self._by_node))

    def owner(self, slot: int) -> NodeAddr | None:
        """The primary serving ``slot``, or None when no node serves it."""
        return self.owners[slot]

    def slots_of(self, node: NodeAddr) -> SlotSet:
        """The slots ``node`` serves in this view."""
        found = self._by_node.get(node)
        return found.copy() if found is not None else SlotSet()

    def unowned(self) -> SlotSet:
        """Slots no node serves (a failover in progress, or a broken cluster)."""
        owned = SlotSet()
        for s in self._by_node.values():
            owned.update(s)
        return SlotSet.full().difference(owned)


class Topology:
    """Connection settings, one client per node, and the latest ``ClusterView``."""

    def __init__(
        self,
        seeds: Sequence[NodeAddr],
        connection_kwargs: Mapping[str, Any],
        connection_class: type[Connection] = Connection,
        *,
        command_timeout_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        max_connections: int = 16,
    ) -> None:
        if not seeds:
            raise InvalidInputError("at least one seed node is needed")
        self._seeds = list(seeds)
        kwargs = dict(connection_kwargs)
        # Per-node settings are ours to choose; everything else (auth, TLS, timeouts) is kept.
        for drop in ("host", "port", "db", "decode_responses", "response_callbacks",
                     "max_connections", "connection_class", "path", "retry"):
            kwargs.pop(drop, None)
        kwargs.setdefault("socket_timeout", command_timeout_s)
        kwargs.setdefault("socket_connect_timeout", connect_timeout_s)
        if kwargs["socket_timeout"] is None:
            kwargs["socket_timeout"] = command_timeout_s
        if kwargs["socket_connect_timeout"] is None:
            kwargs["socket_connect_timeout"] = connect_timeout_s
        self._kwargs = kwargs
        self._connection_class = connection_class
        self._max_connections = max_connections
        self._clients: dict[NodeAddr, Redis] = {}
        self._view: ClusterView | None = None
        self._refresh_lock = anyio.Lock()
        self._generation = 0

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **connection_options: Any) -> Topology:
        """A topology seeded by a ``redis://`` or ``rediss://`` URL."""
        try:
            parsed = dict(parse_url(url))
        except ValueError as exc:
            raise InvalidInputError(f"bad Redis URL: {exc}") from None
        if "path" in parsed:
            raise InvalidInputError("unix:// URLs are not supported; use redis:// or rediss://")
        if str(parsed.get("db", 0) or 0) != "0":
            raise InvalidInputError("only database 0 exists on a Redis Cluster; drop the /db part")
        host = str(parsed.pop("host", "127.0.0.1"))
        port = int(str(parsed.pop("port", 6379)))
        connection_class: Any = parsed.pop("connection_class", Connection)
        if connection_options.pop("ssl", False):
            from redis.asyncio.connection import SSLConnection

            connection_class = SSLConnection
        parsed.update(connection_options)
        max_conn = int(str(parsed.pop("max_connections", 16)))
        return cls([NodeAddr(host, port)], parsed, connection_class, max_connections=max_conn)

    @classmethod
    async def from_client(cls, client: RedisCluster | Redis) -> Topology:
        """A topology that connects like ``client`` does (same auth, TLS and timeouts)."""
        if isinstance(client, RedisCluster):
            await client.initialize()
            kwargs = dict(client.get_connection_kwargs())
            cluster_conn: Any = kwargs.pop("connection_class", None)
            seeds = [NodeAddr(n.host, int(n.port)) for n in client.get_nodes()]
            return cls(seeds, kwargs, cluster_conn or _node_connection_class(client))
        if isinstance(client, Redis):
            pool = client.connection_pool
            kwargs = dict(pool.connection_kwargs)
            host = str(kwargs.get("host", "127.0.0.1"))
            seeds = [NodeAddr(host, int(kwargs.get("port") or 6379))]
            if int(kwargs.get("db", 0) or 0) != 0:
                raise InvalidInputError("only database 0 can be invalidated")
            conn_class: Any = pool.connection_class
            return cls(seeds, kwargs, conn_class)
        raise InvalidInputError(
            "expected redis.asyncio.RedisCluster or redis.asyncio.Redis, "
            f"got {type(client).__name__}"
        )

    # -- clients ------------------------------------------------------------------------------

    def client(self, node: NodeAddr) -> Redis:
        """The (lazily created) client for one node; bytes in, bytes out."""
        existing = self._clients.get(node)
        if existing is not None:
            return existing
        pool = ConnectionPool(
            connection_class=self._connection_class,
            host=node.host,
            port=node.port,
            decode_responses=False,
            max_connections=self._max_connections,
            **self._kwargs,
        )
        created = Redis.from_pool(pool)  # the client owns its pool and closes it
        self._clients[node] = created
        return created

    async def aclose(self) -> None:
        """Close every node client."""
        clients, self._clients = self._clients, {}
        for c in clients.values():
            with anyio.CancelScope(shield=True):
                await c.aclose()

    # -- views --------------------------------------------------------------------------------

    @property
    def view(self) -> ClusterView | None:
        """The latest view, or None before the first refresh."""
        return self._view

    @property
    def generation(self) -> int:
        """Increments on every successful refresh; lets callers avoid redundant refreshes."""
        return self._generation

    def known_nodes(self) -> list[NodeAddr]:
        """Every node worth asking about the cluster: primaries, replicas, then seeds."""
        seen: dict[NodeAddr, None] = {}
        if self._view is not None:
            for p in self._view.primaries:
                seen[p] = None
            for reps in self._view.replicas.values():
                for r in reps:
                    seen[r] = None
        for s in self._seeds:
            seen[s] = None
        return list(seen)

    async def refresh(self, *, if_generation: int | None = None) -> ClusterView:
        """Read slot ownership from the first node that answers."""
        async with self._refresh_lock:
            if if_generation is not None and if_generation != self._generation and self._view:
                return self._view  # another task refreshed while we waited
            errors: list[str] = []
            for node in self.known_nodes():
                try:
                    with anyio.fail_after(self._kwargs["socket_timeout"] or 5.0):
                        view = await self._read_view(node)
                except ClusterPermissionError:
                    raise
                except (RedisError, OSError, TimeoutError) as exc:
                    errors.append(f"{node.name}: {describe(exc)}")
                    continue
                if view is None:
                    continue
                self._view = view
                self._generation += 1
                for p in view.primaries:
                    if p not in self._seeds:
                        self._seeds.append(p)
                return view
            raise ClusterConnectionError(
                "no node of the cluster answered: " + "; ".join(errors[:6]),
                tuple(n.name for n in self.known_nodes()),
            )

    async def _read_view(self, node: NodeAddr) -> ClusterView | None:
        client = self.client(node)
        try:
            reply = await command(client, "CLUSTER", "SLOTS")
        except (NoPermissionError, AuthenticationError) as exc:
            raise ClusterPermissionError(
                f"{node.name} refused the connection or CLUSTER SLOTS: {describe(exc)}", node.name
            ) from None
        except ResponseError as exc:
            if "cluster support disabled" in str(exc).lower():
                # A standalone server: one primary serving every slot.
                return ClusterView(owners=(node,) * SLOT_COUNT, standalone=True)
            raise
        return _parse_cluster_slots(reply, node)

    async def ownership(self, node: NodeAddr) -> NodeOwnership:
        """What ``node`` itself says it serves, including slots in migration."""
        view = self._view
        if view is not None and view.standalone:
            full = SlotSet.full()
            return NodeOwnership(full, SlotSet(), SlotSet())
        raw = await command(self.client(node), "CLUSTER", "NODES")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return parse_myself_line(text)


def _node_connection_class(client: RedisCluster) -> type[Connection]:
    nodes = client.get_nodes()
    cls = getattr(nodes[0], "connection_class", None) if nodes else None
    return cls if isinstance(cls, type) and issubclass(cls, Connection) else Connection


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _parse_cluster_slots(reply: Any, asked: NodeAddr) -> ClusterView | None:
    """Parse a raw or redis-py-parsed CLUSTER SLOTS reply."""
    owners: list[NodeAddr | None] = [None] * SLOT_COUNT
    replicas: dict[NodeAddr, set[NodeAddr]] = {}

    def addr(entry: Any) -> NodeAddr:
        host = _text(entry[0]) if entry[0] else ""
        if host in ("", "?"):
            host = asked.host  # the node did not announce an endpoint: it is the one we asked
        return NodeAddr(host, int(entry[1]))

    rows: Iterable[tuple[int, int, NodeAddr, list[NodeAddr]]]
    if isinstance(reply, dict):  # redis-py's parsed form {(lo, hi): {"primary": ..}}
        rows = [
            (int(lo), int(hi), addr(v["primary"]), [addr(r) for r in v.get("replicas", [])])
            for (lo, hi), v in reply.items()
        ]
    else:
        rows = [
            (int(r[0]), int(r[1]), addr(r[2]), [addr(x) for x in r[3:]]) for r in reply or []
        ]
    any_row = False
    for lo, hi, primary, reps in rows:
        any_row = True
        for s in range(lo, hi + 1):
            owners[s] = primary
        replicas.setdefault(primary, set()).update(reps)
    if not any_row:
        return None  # a node that knows no slots (fresh, or not yet joined): ask another
    return ClusterView(
        owners=tuple(owners), replicas={k: tuple(sorted(v)) for k, v in replicas.items()}
    )


def parse_myself_line(cluster_nodes: str) -> NodeOwnership:
    """The owned/migrating/importing slots on the ``myself`` line of CLUSTER NODES output."""
    owned, migrating, importing = SlotSet(), SlotSet(), SlotSet()
    epoch = -1  # no "myself" line: a reading that matches no other
    for line in cluster_nodes.splitlines():
        parts = line.split()
        if len(parts) < 8 or "myself" not in parts[2].split(","):
            continue
        epoch = int(parts[6])
        for item in parts[8:]:
            if item.startswith("["):
                slot_text, _, _ = item[1:].partition("-")
                if "->-" in item:
                    migrating.add(int(slot_text))
                elif "-<-" in item:
                    importing.add(int(slot_text))
            elif "-" in item:
                lo, hi = item.split("-", 1)
                owned.add_range(int(lo), int(hi))
            else:
                owned.add(int(item))
    return NodeOwnership(owned, migrating, importing, epoch)
