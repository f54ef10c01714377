"""Invalidation events for in-process (L1) caches: published after each run, read by subscribers.

With ``ClusterInvalidator.from_url(url, publish_events=True)`` every finished run (complete or
not; dry runs excepted) publishes one :class:`InvalidationEvent` on the channel
``clusterinval:{events}``: with sharded pub/sub (``SPUBLISH``, to the primary that owns the
channel's slot) where the server has it, with plain ``PUBLISH`` otherwise (Redis 6.2, and
standalone servers). Processes that keep a local copy of cached values follow those events::

    async with subscribe(url) as events:
        async for ev in events:
            apply_event(local_cache, ev)

A subscription follows the channel's slot owner across failover and resharding. After any
reconnection it emits a *resync* event first: messages published while it was away are lost, so
a local cache must drop everything. :func:`follow` does the whole loop for a dict-like cache;
:class:`SyncSubscription` and :class:`SyncFollower` are the blocking twins for threaded apps.
The wire format is in ``docs/events.md``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol
from weakref import WeakKeyDictionary

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream, TaskStatus
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError, ResponseError

from clusterinval._core.glob import Glob, compile_pattern
from clusterinval._core.slots import key_slot
from clusterinval._core.values import ClusterView, NodeAddr
from clusterinval._engine.retry import Backoff, describe
from clusterinval._engine.topology import Topology
from clusterinval._io.redis_io import RedisClusterIO, command
from clusterinval.errors import (
    ClusterConnectionError,
    ClusterInvalError,
    ClusterPermissionError,
    InvalidInputError,
    InvalidPatternError,
)

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

    from clusterinval.result import InvalidationResult
    from clusterinval.sync import _LoopThread

__all__ = [
    "EVENTS_CHANNEL",
    "EventStream",
    "InvalidationEvent",
    "SyncFollower",
    "SyncSubscription",
    "apply_event",
    "follow",
    "publish_event",
    "subscribe",
]

log = logging.getLogger("clusterinval.events")

EVENTS_CHANNEL: Final = b"clusterinval:{events}"
"""The channel events travel on; the hash tag pins it to one slot (one shard)."""

CHANNEL_SLOT: Final = key_slot(EVENTS_CHANNEL)
PAYLOAD_VERSION: Final = 1
RESYNC: Final = "resync"

PUBLISH_TIMEOUT_S: Final = 5.0
# How long a lost subscription waits before its next try (capped exponential, full jitter).
_RECONNECT: Final = Backoff(base_s=0.05, cap_s=1.0)

# Per topology: does the server have sharded pub/sub? Absent means "not yet known".
_SHARDED: WeakKeyDictionary[Topology, bool] = WeakKeyDictionary()


# -- the event ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvalidationEvent:
    """One finished invalidation run, or a *resync* order (drop the whole local cache).

    ``keys`` are the exact keys the run deleted, ``patterns`` its Redis globs, ``deleted`` how
    many keys it removed and ``complete`` whether every slot was covered. ``published_at`` is the
    publisher's wall clock (``time.time()``); ``reason`` says why a resync was emitted.
    """

    operation: str
    keys: tuple[bytes, ...] = ()
    patterns: tuple[bytes, ...] = ()
    deleted: int = 0
    complete: bool = True
    published_at: float | None = None
    resync: bool = False
    reason: str = ""

    @classmethod
    def resync_event(cls, reason: str) -> InvalidationEvent:
        """An event telling a local cache to drop everything, because of ``reason``."""
        return cls(operation=RESYNC, complete=False, resync=True, reason=reason)

    def to_payload(self) -> bytes:
        """The compact JSON message published for this event (keys and patterns base64)."""
        if self.resync:
            raise InvalidInputError("resync events are local to a subscriber; never published")
        data = {
            "v": PAYLOAD_VERSION,
            "operation": self.operation,
            "keys": [_b64(k) for k in self.keys],
            "patterns": [_b64(p) for p in self.patterns],
            "deleted": self.deleted,
            "complete": self.complete,
            "at": self.published_at,
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_payload(cls, payload: bytes | str) -> InvalidationEvent:
        """Parse a published message; InvalidInputError when it is not a version-1 event."""
        try:
            data = json.loads(payload)
            if not isinstance(data, dict) or data.get("v") != PAYLOAD_VERSION:
                raise InvalidInputError(f"not a version {PAYLOAD_VERSION} invalidation event")
            operation = data["operation"]
            deleted = data["deleted"]
            complete = data["complete"]
            at = data.get("at")
            if (not isinstance(operation, str) or type(deleted) is not int
                    or not isinstance(complete, bool)
                    or not (at is None or isinstance(at, int | float))):
                raise InvalidInputError("invalidation event with fields of the wrong type")
            return cls(
                operation=operation,
                keys=tuple(_unb64(k) for k in data["keys"]),
                patterns=tuple(_unb64(p) for p in data["patterns"]),
                deleted=deleted,
                complete=complete,
                published_at=None if at is None else float(at),
            )
        except InvalidInputError:
            raise
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise InvalidInputError(f"unreadable invalidation event: {describe(exc)}") from None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise TypeError("keys and patterns must be base64 strings")
    return base64.b64decode(text, validate=True)


# -- publishing ---------------------------------------------------------------------------------


async def publish_event(
    topology: Topology,
    result: InvalidationResult,
    keys: Sequence[bytes],
    patterns: Sequence[bytes],
) -> None:
    """Publish one event describing ``result``; never raises (a failure is logged)."""
    try:
        event = InvalidationEvent(
            operation=result.operation,
            keys=tuple(keys),
            patterns=tuple(patterns),
            deleted=result.deleted,
            complete=result.complete,
            published_at=time.time(),
        )
        with anyio.fail_after(PUBLISH_TIMEOUT_S):
            receivers = await _publish(topology, event.to_payload())
        log.debug("invalidation event for %s published to %d receiver(s)",
                  result.operation, receivers)
    except Exception as exc:  # the run itself is done; a lost event must not fail it
        log.warning("invalidation event for %s not published: %s",
                    getattr(result, "operation", "?"), describe(exc))


def _client(topology: Topology, node: NodeAddr) -> Redis:
    """A redis-py client on ``node``: events need pub/sub, which is outside the engine's seam."""
    io = topology.io
    if not isinstance(io, RedisClusterIO):
        raise TypeError(f"events need a Redis connection, not {type(io).__name__}")
    return io.client(node)


async def _publish(topology: Topology, payload: bytes) -> int:
    """SPUBLISH (or PUBLISH) ``payload``; one topology refresh and retry on a moved slot."""
    view = topology.view or await topology.refresh()
    for attempt in (1, 2):
        try:
            node = _channel_node(view)
            client = _client(topology, node)
            if not view.standalone and _SHARDED.get(topology, True):
                try:
                    return int(await command(client, "SPUBLISH", EVENTS_CHANNEL, payload))
                except ResponseError as exc:
                    if not _unknown_command(exc):
                        raise
                    log.info("server has no sharded pub/sub; events use PUBLISH")
                    _SHARDED[topology] = False
            return int(await command(client, "PUBLISH", EVENTS_CHANNEL, payload))
        except (RedisError, OSError, ClusterConnectionError):
            if attempt == 2:
                raise
            view = await topology.refresh()
    raise AssertionError("unreachable")  # pragma: no cover


def _channel_node(view: ClusterView) -> NodeAddr:
    node = view.primaries[0] if view.standalone else view.owner(CHANNEL_SLOT)
    if node is None:
        raise ClusterConnectionError(
            f"no primary serves slot {CHANNEL_SLOT} of the events channel (failover under way?)"
        )
    return node


def _unknown_command(exc: ResponseError) -> bool:
    return "unknown command" in str(exc).lower()


# -- subscribing --------------------------------------------------------------------------------


class _Lost(Exception):
    """The subscription ended (node gone, slot moved, no PONG); reconnect."""


_RETRYABLE = (RedisError, OSError, TimeoutError, ClusterInvalError, _Lost)
_FATAL_AT_START = (NoPermissionError, AuthenticationError, ClusterPermissionError)


class EventStream:
    """The events of one subscription, as an async iterator (``async for ev in events``)."""

    def __init__(self, receive: ObjectReceiveStream[InvalidationEvent],
                 state: _Subscriber) -> None:
        self._receive = receive
        self._state = state

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> InvalidationEvent:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def receive(self) -> InvalidationEvent:
        """The next event (wrap in ``anyio.fail_after`` to bound the wait)."""
        return await self._receive.receive()

    @property
    def node(self) -> str | None:
        """``host:port`` of the node the subscription currently listens on."""
        return self._state.node.name if self._state.node else None

    @property
    def sharded(self) -> bool:
        """Whether the subscription uses sharded pub/sub (SSUBSCRIBE)."""
        return self._state.sharded

    @property
    def reconnects(self) -> int:
        """How many times the subscription was re-established (each one emitted a resync)."""
        return self._state.reconnects


class _Subscriber:
    """The task behind one subscription: connect, listen, and reconnect when it is lost."""

    def __init__(self, topology: Topology, send: ObjectSendStream[InvalidationEvent], *,
                 heartbeat_s: float, recheck_s: float, connect_timeout_s: float) -> None:
        self.topology = topology
        self.send = send
        self.heartbeat_s = heartbeat_s
        self.recheck_s = recheck_s
        self.connect_timeout_s = connect_timeout_s
        self.node: NodeAddr | None = None
        self.sharded = False
        self.reconnects = 0

    async def first_connection(self) -> AbstractConnection:
        """The first subscription, retried for about ``connect_timeout_s``, or a clear error."""
        give_up_at = anyio.current_time() + self.connect_timeout_s
        failures = 0
        while True:
            try:
                return await self._connect()
            except _RETRYABLE as exc:
                if isinstance(exc, _FATAL_AT_START):
                    raise ClusterPermissionError(
                        f"cannot subscribe to the invalidation events: {describe(exc)}"
                    ) from exc
                if anyio.current_time() >= give_up_at:
                    raise ClusterConnectionError(
                        "could not subscribe to the invalidation events within "
                        f"{self.connect_timeout_s:g} s: {describe(exc)}"
                    ) from exc
                failures += 1
                log.debug("event subscription not established yet: %s", describe(exc))
                await anyio.sleep(_backoff(failures))

    async def run(self, conn: AbstractConnection) -> None:
        """Listen on ``conn``; whenever the subscription is lost, re-establish it and resync."""
        async with self.send:
            while True:
                try:
                    await self._listen(conn)
                except _RETRYABLE as exc:
                    log.warning("event subscription on %s lost (%s); reconnecting",
                                self.node, describe(exc))
                finally:
                    with anyio.CancelScope(shield=True):
                        await conn.disconnect()
                conn = await self._reconnect()
                self.reconnects += 1
                log.info("event subscription re-established on %s; emitting resync", self.node)
                await self.send.send(InvalidationEvent.resync_event("reconnected"))

    async def _reconnect(self) -> AbstractConnection:
        """Subscribe again on the channel's current owner, retrying with back-off until it works."""
        failures = 0
        while True:
            try:
                return await self._connect()
            except _RETRYABLE as exc:
                failures += 1
                (log.warning if failures % 20 == 0 else log.debug)(
                    "event subscription not re-established yet (%d attempts): %s",
                    failures, describe(exc))
                await anyio.sleep(_backoff(failures))

    async def _connect(self) -> AbstractConnection:
        """A new connection subscribed to the events channel on the node serving it."""
        with anyio.fail_after(self.connect_timeout_s):
            view = await self.topology.refresh()
            node = _channel_node(view)
            pool = _client(self.topology, node).connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                sharded = not view.standalone and _SHARDED.get(self.topology, True)
                if sharded:
                    await conn.send_command("SSUBSCRIBE", EVENTS_CHANNEL)
                    try:
                        reply = await conn.read_response(push_request=True)
                    except ResponseError as exc:
                        if not _unknown_command(exc):
                            raise
                        _SHARDED[self.topology] = sharded = False
                if not sharded:
                    await conn.send_command("SUBSCRIBE", EVENTS_CHANNEL)
                    reply = await conn.read_response(push_request=True)
                if not (isinstance(reply, list) and reply
                        and reply[0] in (b"ssubscribe", b"subscribe")):
                    raise _Lost(f"unexpected reply to the subscription: {reply!r:.80}")
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await conn.disconnect()
                raise
        self.node, self.sharded = node, sharded
        return conn

    async def _listen(self, conn: AbstractConnection) -> None:
        """Forward messages until the subscription is lost (raises _Lost or a Redis error)."""
        awaiting_pong = False
        last_check = anyio.current_time()
        while True:
            msg = await conn.read_response(timeout=self.heartbeat_s, push_request=True)
            if msg is None:  # silence for a heartbeat: is the node still there, still the owner?
                if awaiting_pong:
                    raise _Lost(f"no answer to PING within {self.heartbeat_s:g} s")
                if anyio.current_time() - last_check >= self.recheck_s:
                    last_check = anyio.current_time()
                    await self._check_owner()
                await conn.send_command("PING")
                awaiting_pong = True
                continue
            kind = msg[0] if isinstance(msg, list) and msg else msg
            if kind in (b"smessage", b"message") and len(msg) >= 3:
                await self.send.send(_decode(msg[2]))
            elif kind in (b"pong", b"PONG"):
                awaiting_pong = False
            elif kind in (b"sunsubscribe", b"unsubscribe"):
                raise _Lost("the server ended the subscription (the channel's slot moved)")

    async def _check_owner(self) -> None:
        """_Lost unless this node is still in the shard serving the channel's slot.

        SPUBLISH reaches the whole shard, so a node demoted to replica of the new owner (a
        manual failover) still receives everything; plain PUBLISH reaches every node.
        """
        if not self.sharded:
            return
        with anyio.fail_after(self.connect_timeout_s):
            view = await self.topology.refresh()
            owner = _channel_node(view)
            if self._in_shard(view, owner):
                return
            # The node that answered may lag behind a failover. What the owner itself knows
            # decides: it forwards each SPUBLISH to the shard members it knows of.
            own = await self.topology.io.node(owner).cluster_view()
        if own is None or own.owner(CHANNEL_SLOT) != owner or not self._in_shard(own, owner):
            raise _Lost(f"the events channel's slot moved to {owner}")

    def _in_shard(self, view: ClusterView, owner: NodeAddr) -> bool:
        return self.node == owner or self.node in view.replicas.get(owner, ())


def _decode(payload: object) -> InvalidationEvent:
    if not isinstance(payload, bytes | str):
        return InvalidationEvent.resync_event("unreadable message")
    try:
        return InvalidationEvent.from_payload(payload)
    except InvalidInputError as exc:
        log.warning("dropping an unreadable invalidation event (%s); emitting resync", exc)
        return InvalidationEvent.resync_event("unreadable message")


def _backoff(failures: int) -> float:
    return _RECONNECT.delay(min(failures, 10) + 1)


@contextlib.asynccontextmanager
async def subscribe(
    url: str,
    *,
    heartbeat_s: float = 1.0,
    recheck_s: float = 5.0,
    connect_timeout_s: float = 10.0,
    buffer: int = 1024,
    **connection_options: Any,
) -> AsyncIterator[EventStream]:
    """Subscribe to the invalidation events of the cluster (or standalone server) at ``url``.

    Entering waits until the subscription is confirmed (ClusterConnectionError after
    ``connect_timeout_s``). A node silent for ``heartbeat_s`` is sent a PING; no answer within
    another ``heartbeat_s`` counts as lost. Every ``recheck_s`` of silence the slot owner is read
    again. A lost subscription is re-established on the channel's current owner, then a resync
    event is emitted. ``connection_options`` are those of ``ClusterInvalidator.from_url``.
    """
    for name, value in (("heartbeat_s", heartbeat_s), ("recheck_s", recheck_s),
                        ("connect_timeout_s", connect_timeout_s)):
        if not isinstance(value, int | float) or value <= 0:
            raise InvalidInputError(f"{name} must be a positive number, got {value!r}")
    io, seeds = RedisClusterIO.from_url(url, **connection_options)
    topology = Topology(io, seeds, timeout_s=io.socket_timeout)
    try:
        send, receive = anyio.create_memory_object_stream[InvalidationEvent](buffer)
        state = _Subscriber(topology, send, heartbeat_s=heartbeat_s, recheck_s=recheck_s,
                            connect_timeout_s=connect_timeout_s)
        # Both ends are closed here whatever happens: the subscriber task may be cancelled
        # before it ever ran (and closed the sending end itself).
        with send, receive:
            conn = await state.first_connection()
            async with anyio.create_task_group() as tg:
                tg.start_soon(state.run, conn, name="clusterinval-events-subscriber")
                try:
                    yield EventStream(receive, state)
                finally:
                    tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await topology.aclose()


# -- applying events to a local cache -----------------------------------------------------------


def apply_event(cache: MutableMapping[Any, Any], event: InvalidationEvent) -> int:
    """Remove from ``cache`` what ``event`` invalidates (everything on resync); return the count.

    Cache keys are the Redis keys, as ``str`` (UTF-8) or ``bytes``; other keys are left alone
    except on resync. Patterns match exactly as Redis's ``SCAN ... MATCH`` would.
    """
    if event.resync:
        removed = len(cache)
        cache.clear()
        return removed
    try:
        globs = [compile_pattern(p) for p in event.patterns]
    except InvalidPatternError:  # cannot tell what it covers: drop everything
        removed = len(cache)
        cache.clear()
        return removed
    removed = 0
    if not globs:
        for key in event.keys:
            for variant in _variants(key):
                if variant in cache:
                    del cache[variant]
                    removed += 1
        return removed
    exact = frozenset(event.keys)
    for held in list(cache):
        raw = _raw_key(held)
        # pop, not del: another thread may have removed it meanwhile.
        if (raw is not None and (raw in exact or _any_match(globs, raw))
                and cache.pop(held, _MISSING) is not _MISSING):
            removed += 1
    return removed


_MISSING: Final = object()


def _variants(key: bytes) -> tuple[bytes | str, ...]:
    try:
        return (key, key.decode("utf-8"))
    except UnicodeDecodeError:
        return (key,)


def _raw_key(key: object) -> bytes | None:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    return None


def _any_match(globs: Sequence[Glob], key: bytes) -> bool:
    return any(g.match(key) for g in globs)


class _Lock(Protocol):
    def __enter__(self) -> object: ...

    def __exit__(self, *exc: object) -> object: ...


EventCallback = Callable[[InvalidationEvent, int], object]


async def follow(
    url: str,
    cache: MutableMapping[Any, Any],
    *,
    lock: _Lock | None = None,
    on_event: EventCallback | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    **subscribe_options: Any,
) -> None:
    """Keep ``cache`` in step with the invalidations of ``url`` until cancelled.

    Start it with ``await tg.start(follow, url, cache)`` to resume once subscribed. Each event is
    applied under ``lock`` (if given), then ``on_event(event, removed)`` is called.
    """
    async with subscribe(url, **subscribe_options) as events:
        task_status.started()
        async for event in events:
            if lock is not None:
                with lock:
                    removed = apply_event(cache, event)
            else:
                removed = apply_event(cache, event)
            if on_event is not None:
                on_event(event, removed)


# -- blocking twins -----------------------------------------------------------------------------


class _Background:
    """One coroutine on a daemon loop thread, started and stopped from blocking code."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: _LoopThread | None = None
        self._future: Future[None] | None = None

    def start(self, main: Callable[[TaskStatus[None]], Any]) -> None:
        """Run ``main`` on a new loop thread; return once it calls ``task_status.started()``."""
        from clusterinval.sync import _LoopThread

        loop = _LoopThread()
        self._loop = loop

        async def run_then_report(*, task_status: TaskStatus[None]) -> None:
            await main(task_status)

        try:
            self._future, _ = loop.portal.start_task(run_then_report, name=self._name)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the coroutine and stop the loop thread (idempotent)."""
        loop, future = self._loop, self._future
        self._loop = self._future = None
        if future is not None:
            future.cancel()
        if loop is not None:
            loop.stop(timeout)


class SyncSubscription:
    """Blocking twin of :func:`subscribe`: ``with SyncSubscription(url) as events:``.

    Events are queued by a daemon loop thread; ``get(timeout)`` returns the next one (None on
    timeout) and iterating blocks until the next. If more than ``max_pending`` events wait
    unread, they are replaced by one resync event, so memory stays bounded.
    """

    def __init__(self, url: str, *, max_pending: int = 10_000, **subscribe_options: Any) -> None:
        self._url = url
        self._options = subscribe_options
        self._max_pending = max_pending
        self._queue: queue.SimpleQueue[InvalidationEvent | None] = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._background = _Background("clusterinval-events")
        self._closed = False

    def open(self) -> None:
        """Subscribe (blocking until confirmed; ClusterConnectionError when it cannot)."""
        self._background.start(self._main)

    async def _main(self, task_status: TaskStatus[None]) -> None:
        try:
            async with subscribe(self._url, **self._options) as events:
                task_status.started()
                async for event in events:
                    self._put(event)
        finally:
            self._queue.put(None)

    def _put(self, event: InvalidationEvent) -> None:
        with self._pending_lock:
            if self._pending >= self._max_pending:
                with contextlib.suppress(queue.Empty):
                    while True:
                        self._queue.get_nowait()
                self._pending = 0
                event = InvalidationEvent.resync_event("subscriber fell behind")
            self._pending += 1
            self._queue.put(event)

    def get(self, timeout: float | None = None) -> InvalidationEvent | None:
        """The next event, or None after ``timeout`` seconds (or once closed)."""
        try:
            event = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if event is None:
            self._queue.put(None)  # keep the end marker for other readers
            return None
        with self._pending_lock:
            self._pending = max(0, self._pending - 1)
        return event

    def __iter__(self) -> Iterator[InvalidationEvent]:
        while True:
            event = self.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        """Stop listening and the loop thread (idempotent)."""
        if not self._closed:
            self._closed = True
            self._background.stop()
            self._queue.put(None)

    def __enter__(self) -> SyncSubscription:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class SyncFollower:
    """Blocking twin of :func:`follow`: keeps ``cache`` in step from a daemon loop thread.

    ``with SyncFollower(url, cache, lock=lock):`` returns once subscribed. Give the ``lock``
    your threads hold while they use ``cache`` (a ``dict`` needs none for get/set/pop).
    ``events`` and ``removed`` count what was applied.
    """

    def __init__(self, url: str, cache: MutableMapping[Any, Any], *, lock: _Lock | None = None,
                 on_event: EventCallback | None = None, **subscribe_options: Any) -> None:
        self._url = url
        self._cache = cache
        self._lock = lock
        self._on_event = on_event
        self._options = subscribe_options
        self._background = _Background("clusterinval-follow")
        self.events = 0
        self.resyncs = 0
        self.removed = 0

    def open(self) -> None:
        """Subscribe and start applying events (blocking until subscribed)."""
        self._background.start(self._main)

    async def _main(self, task_status: TaskStatus[None]) -> None:
        await follow(self._url, self._cache, lock=self._lock, on_event=self._count,
                     task_status=task_status, **self._options)

    def _count(self, event: InvalidationEvent, removed: int) -> None:
        self.events += 1
        self.resyncs += event.resync
        self.removed += removed
        if self._on_event is not None:
            self._on_event(event, removed)

    def close(self) -> None:
        """Stop following (idempotent)."""
        self._background.stop()

    def __enter__(self) -> SyncFollower:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
