"""The queue's Redis side: one stream, its dead letters and per-request markers, in one slot.

Every key of a queue shares the stream's hash slot, so each multi-key step (add once, finish,
dead-letter, revive) is one short server script: atomic, one round trip, never cross-slot.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from clusterinval._core.slots import hash_tag, key_slot
from clusterinval.errors import InvalidInputError
from clusterinval.queue.request import F_AT, QueueRequest, encode

__all__ = ["DEFAULT_GROUP", "DEFAULT_STREAM", "Entry", "QueueConnection", "StreamNames",
           "StreamStore"]

DEFAULT_STREAM: Final = "clusterinval:{queue}"
DEFAULT_GROUP: Final = "clusterinval"

# A spooled request may wait this long for the stream and still be added exactly once.
SEEN_TTL_S: Final = 7 * 24 * 3600
# How long wait() can learn that a request was applied.
DONE_TTL_S: Final = 24 * 3600

_ADD_ONCE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
end
return false
"""
_FINISH = """
local new = redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if new then return 1 end
return 0
"""
_DEAD_LETTER = """
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return id
"""
_REVIVE = """
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"""


@dataclass(frozen=True)
class StreamNames:
    """The keys of one queue: the stream, its dead letters, its markers, all in one slot."""

    stream: str
    dead: str
    prefix: str

    @classmethod
    def of(cls, stream: str) -> StreamNames:
        """The keys of the queue whose stream is ``stream``; InvalidInputError for a bad name."""
        if not isinstance(stream, str) or not stream:
            raise InvalidInputError("stream must be a non-empty key name")
        raw = stream.encode()
        # A name without a hash tag gets one around it for the other keys: "{name}:dead"
        # hashes exactly like "name".
        prefix = stream if hash_tag(raw) != raw else "{" + stream + "}"
        names = cls(stream, f"{prefix}:dead", prefix)
        if key_slot(names.dead.encode()) != key_slot(raw):
            raise InvalidInputError(
                f"stream name {stream!r} has braces that are not a hash tag; use a name such "
                "as 'clusterinval:{queue}'")
        return names

    def seen(self, request_id: str) -> str:
        """The marker that says ``request_id`` is already in the stream."""
        return f"{self.prefix}:seen:{request_id}"

    def done(self, request_id: str) -> str:
        """The marker that says ``request_id`` was applied."""
        return f"{self.prefix}:done:{request_id}"


@dataclass(frozen=True)
class Entry:
    """One stream entry: its stream id and raw fields."""

    entry_id: str
    fields: Mapping[bytes, bytes]


def _entries(raw: Any) -> list[Entry]:
    out: list[Entry] = []
    for item in raw or ():
        if item is None:
            continue
        entry_id, fields = item
        if fields is None:  # deleted while pending: nothing left to run
            continue
        out.append(Entry(_s(entry_id), dict(fields)))
    return out


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class QueueConnection:
    """A client for the queue's Redis, made on first use: a cluster, or a standalone server."""

    def __init__(self, url: str, *, timeout_s: float = 5.0, **options: Any) -> None:
        self.url = url
        # Enough connections for a worker's concurrent finishes; StreamStore bounds its own
        # commands below this, so callers wait for a connection instead of failing.
        self._options = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
                         "max_connections": 128, **options}
        self._client: Redis | RedisCluster | None = None
        self._lock = anyio.Lock()

    async def client(self) -> Redis | RedisCluster:
        """The connected client; raises redis/OS errors while the server cannot be reached."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                self._client = await self._connect()
        return self._client

    async def _connect(self) -> Redis | RedisCluster:
        probe = Redis.from_url(self.url, **self._options)
        try:
            info = await probe.info("cluster")
        except BaseException:
            await probe.aclose()
            raise
        if not int(info.get("cluster_enabled", 0) or 0):
            return probe
        await probe.aclose()
        cluster = RedisCluster.from_url(self.url, **self._options)
        try:
            await cluster.initialize()
        except BaseException:
            await cluster.aclose()
            raise
        return cluster

    async def aclose(self) -> None:
        """Close the client (a later use connects again)."""
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()


class StreamStore:
    """The commands the queue and its workers send to the stream's slot."""

    def __init__(self, conn: QueueConnection, names: StreamNames, *,
                 max_in_flight: int = 64) -> None:
        self.conn = conn
        self.names = names
        self._shas: dict[str, str] = {}
        # Back-pressure, not errors: past this many commands at once, callers wait.
        self._in_flight = anyio.CapacityLimiter(max_in_flight)

    async def _script(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        client = await self.conn.client()
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = hashlib.sha1(script.encode()).hexdigest()
        async with self._in_flight:
            try:
                return await client.evalsha(sha, len(keys), *keys, *args)
            except NoScriptError:
                # First use on this node, or a restarted or failed-over node lost its scripts.
                return await client.eval(script, len(keys), *keys, *args)

    async def add(self, request: QueueRequest) -> str | None:
        """Append ``request`` unless its id is already in; the entry id, or None if it was."""
        n = self.names
        flat: list[bytes] = []
        for key, value in encode(request).items():
            flat += [key, value]
        reply = await self._script(_ADD_ONCE, [n.stream, n.seen(request.id)], [SEEN_TTL_S, *flat])
        return None if reply is None else _s(reply)

    async def add_raw(self, fields: Mapping[bytes, bytes]) -> str:
        """Append an entry as is (no once-only check): for retry-dead and for tests."""
        client = await self.conn.client()
        return _s(await client.xadd(self.names.stream, dict(fields)))  # type: ignore[arg-type]

    async def ensure_group(self, group: str) -> None:
        """Create the consumer group (and the stream) unless it exists; it starts at the top."""
        client = await self.conn.client()
        try:
            await client.xgroup_create(self.names.stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_new(self, group: str, consumer: str, count: int, block_ms: int
                       ) -> list[Entry]:
        """Up to ``count`` entries never delivered to the group, waiting up to ``block_ms``."""
        client = await self.conn.client()
        reply = await client.xreadgroup(group, consumer, {self.names.stream: ">"}, count=count,
                                        block=block_ms or None)
        return _entries(_stream_of(reply))

    async def read_own(self, group: str, consumer: str, count: int) -> list[Entry]:
        """Entries delivered to ``consumer`` and not acknowledged (a restarted worker's)."""
        client = await self.conn.client()
        reply = await client.xreadgroup(group, consumer, {self.names.stream: "0"}, count=count)
        return _entries(_stream_of(reply))

    async def autoclaim(self, group: str, consumer: str, min_idle_ms: int, start: str,
                        count: int) -> tuple[str, list[Entry]]:
        """Claim entries idle longer than ``min_idle_ms`` from any consumer; (next cursor, them)."""
        client = await self.conn.client()
        reply = await client.xautoclaim(self.names.stream, group, consumer, min_idle_ms,
                                        start_id=start, count=count)
        return _s(reply[0]), _entries(reply[1])

    async def claim(self, group: str, consumer: str, ids: Sequence[str], *,
                    justid: bool = False) -> list[Entry]:
        """Take ``ids`` for ``consumer`` now; with ``justid``, only reset their idle time."""
        if not ids:
            return []
        client = await self.conn.client()
        reply = await client.xclaim(self.names.stream, group, consumer, 0, list(ids),
                                    justid=justid)
        return [] if justid else _entries(reply)

    async def deliveries(self, group: str, consumer: str, ids: Sequence[str]) -> dict[str, int]:
        """How many times each of ``ids`` was delivered (read or claimed)."""
        if not ids:
            return {}
        client = await self.conn.client()
        ordered = sorted(ids, key=_id_key)
        rows = await client.xpending_range(self.names.stream, group, ordered[0], ordered[-1],
                                           count=max(len(ids) * 4, 100), consumername=consumer)
        return {_s(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def finish(self, group: str, entry_id: str, request_id: str) -> bool:
        """Acknowledge and drop a done entry, marking its request done; True the first time."""
        n = self.names
        reply = await self._script(_FINISH, [n.stream, n.done(request_id)],
                                   [group, entry_id, DONE_TTL_S])
        return bool(int(reply))

    async def is_done(self, request_id: str) -> bool:
        """Whether a worker marked ``request_id`` applied (within DONE_TTL_S)."""
        client = await self.conn.client()
        # GET, not EXISTS: redis-py's cluster client splits EXISTS as a multi-key command
        # through a pipeline, a slower path that also misbehaves under heavy concurrency.
        async with self._in_flight:
            return await client.get(self.names.done(request_id)) is not None

    async def done_among(self, request_ids: list[str]) -> set[str]:
        """The requests among ``request_ids`` a worker marked applied: one MGET (the markers
        share the stream's slot)."""
        if not request_ids:
            return set()
        client = await self.conn.client()
        async with self._in_flight:
            found = await client.mget([self.names.done(r) for r in request_ids])
        return {r for r, value in zip(request_ids, found, strict=True) if value is not None}

    async def dead_letter(self, group: str, entry: Entry, error: str, attempts: int) -> str:
        """Move ``entry`` to the dead-letter stream with its last error, acknowledged."""
        n = self.names
        fields = dict(entry.fields)
        fields.update({b"error": error.encode("utf-8", "replace")[:2000],
                       b"attempts": str(attempts).encode(),
                       b"failed_at": repr(time.time()).encode(),
                       b"entry": entry.entry_id.encode()})
        flat: list[bytes] = []
        for key, value in fields.items():
            flat += [key, value]
        return _s(await self._script(_DEAD_LETTER, [n.stream, n.dead], [group, entry.entry_id,
                                                                         *flat]))

    async def dead_letters(self, count: int) -> list[Entry]:
        """The oldest ``count`` dead letters."""
        client = await self.conn.client()
        return _entries(await client.xrange(self.names.dead, count=count))

    async def revive(self, dead: Entry) -> str:
        """Put a dead letter back on the stream as a fresh delivery; its new entry id."""
        n = self.names
        flat: list[bytes] = []
        for key, value in dead.fields.items():
            if key in (b"error", b"attempts", b"failed_at", b"entry"):
                continue
            flat += [key, value]
        return _s(await self._script(_REVIVE, [n.dead, n.stream], [dead.entry_id, *flat]))

    async def counts(self, group: str) -> tuple[int, int, int, float | None]:
        """(entries in the stream, pending in ``group``, dead letters, oldest submit time)."""
        client = await self.conn.client()
        n = self.names
        length = int(await client.xlen(n.stream))
        dead = int(await client.xlen(n.dead))
        try:
            summary = await client.xpending(n.stream, group)
            pending = int(summary["pending"])
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            pending = 0
        first = _entries(await client.xrange(n.stream, count=1))
        oldest: float | None = None
        if first:
            try:
                oldest = float(first[0].fields[F_AT])
            except (KeyError, ValueError):
                oldest = _id_key(first[0].entry_id)[0] / 1000.0
        return length, pending, dead, oldest


def _stream_of(reply: Any) -> Any:
    # RESP2 gives [[name, entries]], RESP3 {name: [entries]}.
    if not reply:
        return []
    if isinstance(reply, dict):
        return next(iter(reply.values()))
    return reply[0][1]


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
