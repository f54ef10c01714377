"""The seam on redis-py: one connection pool per node, raw pipelined commands, the Lua steps.

Connections come from bounded per-node pools (auth, TLS and timeouts as the caller configured
them); a caller waits for a free connection rather than failing (see ``_pool``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import anyio
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import Connection, parse_url
from redis.exceptions import NoScriptError, RedisError, ResponseError

from clusterinval._core.cluster_text import parse_cluster_slots, parse_myself_line
from clusterinval._core.slots import SLOT_COUNT, SlotSet
from clusterinval._core.values import (
    ClusterView,
    NodeAddr,
    NodeOwnership,
    Replication,
    ScanStep,
    SlotBatch,
    SlotWalkStep,
)
from clusterinval._io.lua import SCRIPTS, batch_argv, batch_offsets, sparse_counts, walk_step
from clusterinval._io.protocol import KeyCommand, OnReply, ScriptName, WalkStepHandler
from clusterinval._io.redis_tags import RedisTagStore
from clusterinval._io.resp import (
    Commands,
    Exchange,
    begin,
    call,
    pack,
    pack_args,
    pack_with,
    read_reply,
    read_settled,
    send_many,
    write,
)
from clusterinval.errors import InvalidInputError

__all__ = ["CONNECTION_OPTIONS", "NodePool", "RedisClusterIO", "RedisNode", "command"]

log = logging.getLogger("clusterinval.engine")

# Connection settings a caller may pass through from_url(...) next to the library's options.
CONNECTION_OPTIONS = frozenset({
    "username", "password", "client_name", "socket_timeout", "socket_connect_timeout",
    "socket_keepalive", "ssl", "ssl_ca_certs", "ssl_ca_data", "ssl_certfile", "ssl_keyfile",
    "ssl_cert_reqs", "ssl_check_hostname", "ssl_ciphers", "ssl_min_version", "ssl_password",
    "protocol", "retry_on_timeout", "health_check_interval", "credential_provider",
    "max_connections",
})

# Per-node settings are ours to choose; everything else (auth, TLS, timeouts) is kept.
_DROPPED = ("host", "port", "db", "decode_responses", "response_callbacks", "max_connections",
            "connection_class", "path", "retry")


async def command(client: Redis, *args: Any) -> Any:
    """Run one raw command on a node client (redis-py leaves ``execute_command`` untyped)."""
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


class RedisClusterIO:
    """Connections to a cluster's nodes: one bounded pool per node, created on first use."""

    def __init__(
        self,
        connection_kwargs: Mapping[str, Any],
        connection_class: type[Connection] = Connection,
        *,
        command_timeout_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        max_connections: int = 16,
    ) -> None:
        kwargs = {k: v for k, v in connection_kwargs.items() if k not in _DROPPED}
        if kwargs.get("socket_timeout") is None:
            kwargs["socket_timeout"] = command_timeout_s
        if kwargs.get("socket_connect_timeout") is None:
            kwargs["socket_connect_timeout"] = connect_timeout_s
        self._kwargs = kwargs
        self._connection_class = connection_class
        self._max_connections = max_connections
        self._nodes: dict[NodeAddr, RedisNode] = {}

    @property
    def socket_timeout(self) -> float:
        """How long one command may take on the wire."""
        return float(self._kwargs["socket_timeout"])

    @classmethod
    def from_url(cls, url: str, **connection_options: Any) -> tuple[RedisClusterIO, list[NodeAddr]]:
        """Connections configured by a ``redis://`` or ``rediss://`` URL, and the seed node."""
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
        io = cls(parsed, connection_class, max_connections=max_conn)
        return io, [NodeAddr(host, port)]

    @classmethod
    async def from_client(cls, client: RedisCluster | Redis
                          ) -> tuple[RedisClusterIO, list[NodeAddr]]:
        """Connections made like ``client``'s (same auth, TLS and timeouts), and its nodes."""
        if isinstance(client, RedisCluster):
            await client.initialize()
            kwargs = dict(client.get_connection_kwargs())
            cluster_conn: Any = kwargs.pop("connection_class", None)
            seeds = [NodeAddr(n.host, int(n.port)) for n in client.get_nodes()]
            return cls(kwargs, cluster_conn or _node_connection_class(client)), seeds
        if isinstance(client, Redis):
            pool = client.connection_pool
            kwargs = dict(pool.connection_kwargs)
            host = str(kwargs.get("host", "127.0.0.1"))
            if int(kwargs.get("db", 0) or 0) != 0:
                raise InvalidInputError("only database 0 can be invalidated")
            conn_class: Any = pool.connection_class
            return cls(kwargs, conn_class), [NodeAddr(host, int(kwargs.get("port") or 6379))]
        raise InvalidInputError(
            "expected redis.asyncio.RedisCluster or redis.asyncio.Redis, "
            f"got {type(client).__name__}"
        )

    def node(self, addr: NodeAddr) -> RedisNode:
        """The node at ``addr`` (its pool is created on first use)."""
        found = self._nodes.get(addr)
        if found is None:
            found = self._nodes[addr] = RedisNode(addr, self._client(addr))
        return found

    def client(self, addr: NodeAddr) -> Redis:
        """A redis-py client on the node's pool, for commands outside the seam (pub/sub)."""
        return self.node(addr).client

    def _client(self, addr: NodeAddr) -> Redis:
        # A blocking pool: under a burst of concurrent callers a command waits for a free
        # connection (within its own timeout) instead of failing with "Too many connections".
        pool = NodePool(
            connection_class=self._connection_class,
            host=addr.host,
            port=addr.port,
            decode_responses=False,
            max_connections=self._max_connections,
            timeout=self._kwargs["socket_timeout"],
            **self._kwargs,
        )
        return Redis.from_pool(pool)  # the client owns its pool and closes it

    async def aclose(self) -> None:
        """Close every node's connections."""
        nodes, self._nodes = self._nodes, {}
        for n in nodes.values():
            with anyio.CancelScope(shield=True):
                await n.client.aclose()


class NodePool(BlockingConnectionPool):
    """redis-py's blocking pool, with a get and a release that cost nothing when uncontended.

    The blocking pool takes a condition, a timer and observability hooks on every get and every
    release: for an invalidation of a few keys that is as much client time as its commands. When
    a connection is idle and no caller is queued, it is handed out (and taken back) at once; in
    every other case (none idle, callers waiting, maintenance) the pool's own path keeps its bound
    and its order. A handed-out connection is checked like the pool checks it: connected, no
    unread data, not closed by the server.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The fast path reads the pool's own lists; a redis-py without them keeps its own path,
        # and so does a pool whose credentials rotate (its release re-authenticates).
        self._fast = all(hasattr(self, a) for a in ("_available_connections",
                                                    "_in_use_connections", "_condition")) and (
            self.connection_kwargs.get("credential_provider") is None)

    def _uncontended(self) -> bool:
        return (self._fast and not getattr(self, "_in_maintenance", False)
                and not getattr(self._condition, "_waiters", True))

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """A connection: an idle one at once when nobody waits, else the pool's blocking path."""
        if self._uncontended() and self._available_connections:
            conn: Any = self._available_connections.pop()
            self._in_use_connections.add(conn)
            try:
                clean = (conn.is_connected and not conn.should_reconnect()
                         and not await conn.can_read())
            except (RedisError, OSError):
                clean = False
            if clean:
                return conn
            # Let the pool's own path reconnect it (or hand out another one).
            self._in_use_connections.discard(conn)
            self._available_connections.append(conn)
        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]

    def idle_ready(self) -> bool:
        """Whether ``get_connection`` would hand out an idle, connected connection at once."""
        if not (self._uncontended() and self._available_connections):
            return False
        return bool(self._available_connections[-1].is_connected)

    async def release(self, connection: Any) -> None:
        """Take ``connection`` back (straight to the idle list when nobody waits for one)."""
        if not self.release_nowait(connection):
            await super().release(connection)

    def release_nowait(self, connection: Any) -> bool:
        """Take ``connection`` back to the idle list now if nobody waits for one; False when the
        pool's own ``release`` must (callers queued, maintenance, a reconnect due)."""
        if (self._uncontended() and connection in self._in_use_connections
                and not connection.should_reconnect()):
            self._in_use_connections.remove(connection)
            self._available_connections.append(connection)
            return True
        return False


def _node_connection_class(client: RedisCluster) -> type[Connection]:
    nodes = client.get_nodes()
    cls = getattr(nodes[0], "connection_class", None) if nodes else None
    return cls if isinstance(cls, type) and issubclass(cls, Connection) else Connection


def _scan_step(reply: Any) -> ScanStep:
    matched = int(reply[1])
    if len(reply) < 7:
        return ScanStep(int(reply[0]), matched, int(reply[2]), list(reply[3] or []))
    return ScanStep(int(reply[0]), matched, int(reply[2]), list(reply[3] or []),
                    sparse_counts(reply[4]), sparse_counts(reply[5]), int(reply[6]))


class _PackedCalls:
    """Batch-step calls packed one by one as they are sent (see ``send_many``)."""

    __slots__ = ("_calls", "_sha")

    def __init__(self, sha: bytes, calls: Sequence[Sequence[SlotBatch]]) -> None:
        self._sha = sha
        self._calls = calls

    def __len__(self) -> int:
        return len(self._calls)

    def __getitem__(self, index: int) -> bytes:
        # The keys are bytes already: packed as a tail, without ``pack``'s per-argument check.
        argv = batch_argv(self._calls[index])
        return pack_with(pack_args(argv), len(argv), b"EVALSHA", self._sha, b"0")


class RedisNode:
    """One node through redis-py: raw commands and the server-side steps."""

    def __init__(self, addr: NodeAddr, client: Redis) -> None:
        self._addr = addr
        self.client = client
        self._standalone = False
        # SHA per script, or None where the node refused it.
        self._shas: dict[ScriptName, bytes | None] = {}
        # The last CLUSTER SLOTS reply and its view: an unchanged reply is not parsed again
        # (building a view of 16384 slots costs the client about a millisecond).
        self._slots_reply: Any = None
        self._slots_view: ClusterView | None = None
        # The prefixes of the last SCAN step, packed: a pass sends the same ones every step.
        self._prefix_tail: tuple[Sequence[bytes], bytes] = ((), b"")

    def _packed_prefixes(self, prefixes: Sequence[bytes]) -> bytes:
        known, tail = self._prefix_tail
        if known is not prefixes and tuple(known) != tuple(prefixes):
            tail = pack_args(prefixes)
            self._prefix_tail = (prefixes, tail)
        return tail

    @property
    def addr(self) -> NodeAddr:
        """The node's address."""
        return self._addr

    @property
    def tags(self) -> RedisTagStore:
        """The node's side of the tag index."""
        return RedisTagStore(self.client)

    async def ttls(self, keys: Sequence[bytes]) -> list[Any]:
        """PTTL of each key, pipelined; errors as instances."""
        return await send_many(self.client, [pack(b"PTTL", k) for k in keys], window=256)

    async def write(self, key: bytes, value: bytes, ttl_ms: int | None) -> Any:
        """SET, with PX when a TTL is given; True, or the error instance the node answered."""
        args = (b"SET", key, value) if ttl_ms is None else (b"SET", key, value, b"PX", ttl_ms)
        (reply,) = await send_many(self.client, [pack(*args)], window=1)
        return reply if isinstance(reply, BaseException) else True

    async def cluster_view(self) -> ClusterView | None:
        """Slot ownership as this node sees it (CLUSTER SLOTS)."""
        try:
            reply = await call(self.client, b"CLUSTER", b"SLOTS")
        except ResponseError as exc:
            if "cluster support disabled" in str(exc).lower():
                # A standalone server: one primary serving every slot.
                self._standalone = True
                return ClusterView(owners=(self._addr,) * SLOT_COUNT, standalone=True)
            raise
        if reply != self._slots_reply or self._slots_view is None:
            self._slots_view = parse_cluster_slots(reply, self._addr)
            self._slots_reply = reply
        return self._slots_view

    async def ownership(self) -> NodeOwnership:
        """What the node itself serves, in migration, and its config epoch."""
        if self._standalone:
            return NodeOwnership(SlotSet.full(), SlotSet(), SlotSet())
        raw = await call(self.client, b"CLUSTER", b"NODES")
        return parse_myself_line(raw.decode() if isinstance(raw, bytes) else str(raw))

    async def dbsize(self) -> int:
        """Keys the node holds."""
        return int(await call(self.client, b"DBSIZE"))

    async def scan(self, cursor: int, match: bytes, count: int) -> tuple[int, list[bytes]]:
        """One SCAN call."""
        next_cursor, keys = await call(self.client, b"SCAN", cursor, b"MATCH", match,
                                       b"COUNT", count)
        return int(next_cursor), list(keys)

    async def keys_in_slot(self, slot: int, limit: int) -> list[bytes]:
        """CLUSTER GETKEYSINSLOT."""
        keys: list[bytes] = await call(self.client, b"CLUSTER", b"GETKEYSINSLOT", slot, limit)
        return list(keys)

    async def replication(self) -> Replication:
        """The node's replication offset (a replica: applied offset and link state)."""
        info = await self.client.info("replication")
        if info.get("role") == "slave":
            return Replication(int(info.get("slave_repl_offset", -1)),
                               info.get("master_link_status") == "up")
        return Replication(int(info.get("master_repl_offset", 0)))

    async def key_commands(
        self, command: KeyCommand, key_lists: Sequence[Sequence[bytes]], *, window: int,
        on_reply: OnReply | None = None,
    ) -> list[Any]:
        """One ``command`` per key list, pipelined as a sliding window."""
        name = command.encode()
        packed: Commands = [pack(name, *keys) for keys in key_lists]
        return await send_many(self.client, packed, window=window, on_reply=on_reply)

    def can_begin(self) -> bool:
        """Whether a connection is ready now (see ``StagedKeyCommands.can_begin``)."""
        pool = self.client.connection_pool
        return isinstance(pool, NodePool) and pool.idle_ready()

    async def begin_key_commands(
        self, command: KeyCommand, key_lists: Sequence[Sequence[bytes]], *,
        on_reply: OnReply | None = None,
    ) -> Exchange:
        """Send one ``command`` per key list, all at once; the replies are read later."""
        name = command.encode()
        return await begin(self.client, [pack(name, *keys) for keys in key_lists],
                           on_reply=on_reply)

    async def asking(self, command: KeyCommand, keys: Sequence[bytes]) -> Any:
        """ASKING then ``command``, on one connection: the reply or the error instance."""
        pool = self.client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await write(conn, pack(b"ASKING") + pack(command.encode(), *keys))
            asked = await read_reply(conn)
            reply = await read_reply(conn)
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        if isinstance(asked, BaseException):
            return asked
        return reply

    async def script_ready(self, name: ScriptName) -> bool:
        """Whether the node runs the named step (loaded on first ask)."""
        try:
            return await self._sha(name) is not None
        except (RedisError, OSError):
            return False

    async def _sha(self, name: ScriptName) -> bytes | None:
        if name in self._shas:
            return self._shas[name]
        try:
            sha = await call(self.client, b"SCRIPT", b"LOAD", SCRIPTS[name])
        except ResponseError as exc:
            # Older servers reject the shebang; ACLs may forbid scripting: use plain UNLINK.
            # Any other refusal is a script the server cannot compile: worth a WARNING.
            text = str(exc)
            expected = ("near '#'" in text or text.startswith("NOPERM")
                        or "no permissions" in text)
            log.log(logging.INFO if expected else logging.WARNING,
                    "server step %s unavailable on %s (%s); using pipelined UNLINK",
                    name, self._addr, exc)
            self._shas[name] = None
            return None
        self._shas[name] = sha if isinstance(sha, bytes) else str(sha).encode()
        return self._shas[name]

    async def _loaded(self, name: ScriptName) -> bytes:
        sha = await self._sha(name)
        if sha is None:
            raise RuntimeError(f"script_ready({name!r}) must be checked first")
        return sha

    async def _reload(self, name: ScriptName) -> bytes | None:
        # The node lost its script cache (restart, or a replica promoted): load it again.
        self._shas.pop(name, None)
        return await self._sha(name)

    async def batch_calls(
        self, calls: Sequence[Sequence[SlotBatch]], *, window: int,
        on_reply: OnReply | None = None,
    ) -> list[Any]:
        """The batch step once per call, pipelined; replies ``(removed, failed indexes)``."""
        if not calls:
            return []

        replies: list[Any] = [None] * len(calls)

        def seen(index: int, raw: Any) -> None:
            # Each reply is converted once, as it is read; a NOSCRIPT reply waits for the retry.
            if isinstance(raw, BaseException):
                replies[index] = raw
                if isinstance(raw, NoScriptError):
                    return
            else:
                failed = raw[1]
                if failed:
                    offsets = batch_offsets(calls[index])
                    failed = [offsets[int(i)] for i in failed]
                replies[index] = (int(raw[0]), failed or [])
            if on_reply is not None:
                on_reply(index, replies[index])

        sha = await self._loaded("batch")
        await send_many(self.client, _PackedCalls(sha, calls), window=window, on_reply=seen)
        again = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if again:
            new_sha = await self._reload("batch")
            if new_sha is not None:

                def seen_again(k: int, raw: Any) -> None:
                    seen(again[k], raw)

                await send_many(self.client, _PackedCalls(new_sha, [calls[i] for i in again]),
                                window=window, on_reply=seen_again)
        return replies

    async def scan_step(self, cursor: int, match: bytes, count: int, *,
                        on_late: Callable[[ScanStep], None] | None = None,
                        prefixes: Sequence[bytes] = (), empty_key: bool = False) -> ScanStep:
        """One server-side SCAN step that unlinks what it finds (with ``prefixes``: what
        starts with one of them)."""
        args: tuple[bytes, ...] = (b"%d" % cursor, match, b"%d" % count)
        tail = b""
        if prefixes:
            args = (*args, b"1" if empty_key else b"0")
            tail = self._packed_prefixes(prefixes)

        def late(reply: Any) -> None:
            if on_late is not None and not isinstance(reply, BaseException):
                on_late(_scan_step(reply))

        pool = self.client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            for _attempt in (1, 2):
                sha = await self._loaded("scan_step")
                await write(conn, pack_with(tail, len(prefixes), b"EVALSHA", sha, b"0", *args))
                reply = await read_settled(conn, late)
                if isinstance(reply, NoScriptError) and await self._reload("scan_step"):
                    continue
                if isinstance(reply, BaseException):
                    raise reply
                return _scan_step(reply)
            raise reply
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)

    async def slot_walk(
        self, prefixes: Sequence[bytes], ranges: deque[tuple[int, int]], *, budget: int,
        cap: int, on_step: WalkStepHandler, max_calls: int, empty_key: bool, probe: bytes = b"",
    ) -> None:
        """Walk slot ranges server-side, one call at a time on one held connection."""
        pool = self.client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            reloads = 0
            sha = await self._loaded("slot_walk")

            def handle(lo: int, hi: int, reply: Any) -> None:
                nonlocal max_calls
                max_calls -= 1
                ranges.popleft()
                step: SlotWalkStep = walk_step(reply)
                if step.next_slot != -1:
                    ranges.appendleft((step.next_slot, hi))
                on_step(lo, hi if step.next_slot == -1 else step.next_slot - 1, step)

            def late(lo: int, hi: int, reply: Any) -> None:
                if not isinstance(reply, BaseException):
                    handle(lo, hi, reply)

            # The prefixes are the same in every call: packed once (a shared pass may carry
            # hundreds).
            tail = pack_args(prefixes)
            while ranges and max_calls > 0:
                lo, hi = ranges[0]
                await write(conn, pack_with(tail, len(prefixes), b"EVALSHA", sha, b"0",
                                            b"%d" % budget, b"%d" % cap, b"%d" % lo, b"%d" % hi,
                                            b"1" if empty_key else b"0",
                                            probe if lo == hi else b""))
                reply = await read_settled(conn, partial(late, lo, hi))
                if isinstance(reply, NoScriptError):
                    reloads += 1
                    new_sha = await self._reload("slot_walk") if reloads <= 3 else None
                    if new_sha is None:
                        raise reply
                    sha = new_sha
                    continue
                if isinstance(reply, BaseException):
                    raise reply
                handle(lo, hi, reply)
        except BaseException:
            # A reply may be left unread (timeout, cancellation): the connection is not reusable.
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
