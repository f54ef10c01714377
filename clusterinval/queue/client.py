"""InvalidationQueue: submit requests durably (the stream, else the local spool), ask how far
the workers are, wait for one request; while open, move spooled requests to the stream."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import anyio
from anyio.abc import TaskGroup
from redis.exceptions import RedisError

from clusterinval.errors import InvalidInputError, QueueUnavailableError
from clusterinval.metrics import Metrics
from clusterinval.queue.request import QueueRequest, new_request
from clusterinval.queue.spool import Spool, SpoolError
from clusterinval.queue.status import QueueStatus
from clusterinval.queue.stream import (
    DEFAULT_GROUP,
    DEFAULT_STREAM,
    QueueConnection,
    StreamNames,
    StreamStore,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["InvalidationQueue", "Receipt"]

log = logging.getLogger("clusterinval.queue")

# What reaching the stream can raise: server errors, sockets, and our own deadline.
_UNREACHABLE = (RedisError, OSError, TimeoutError)
_MOVE_BATCH = 100


@dataclass(frozen=True)
class Receipt:
    """Where a submitted request was stored."""

    request_id: str
    destination: Literal["stream", "spool"]


class InvalidationQueue:
    """A durable queue of invalidation requests on a Redis Stream, with a local spool behind it.

    ``async with`` owns a background task that moves spooled requests to the stream as soon as
    it can be reached; ``submit`` also works on a queue that was not entered (then spooled
    requests move on the next successful submit, or when any queue on that spool is opened).
    """

    def __init__(
        self,
        connection: QueueConnection,
        *,
        stream: str = DEFAULT_STREAM,
        spool: str | os.PathLike[str] | None = None,
        group: str = DEFAULT_GROUP,
        registry: CollectorRegistry | None = None,
        metrics: Metrics | None = None,
        stream_timeout_s: float = 2.0,
        max_keys_per_call: int = 1_000_000,
        spool_poll_s: float = 5.0,
    ) -> None:
        if stream_timeout_s <= 0:
            raise InvalidInputError(f"stream_timeout_s must be positive, got {stream_timeout_s}")
        self.names = StreamNames.of(stream)
        self.group = group
        self._conn = connection
        self._store = StreamStore(connection, self.names)
        self._spool = Spool(spool) if spool is not None else None
        self._metrics = metrics or Metrics(registry)
        self._timeout = stream_timeout_s
        self._max_keys = max_keys_per_call
        self._spool_poll_s = spool_poll_s
        self._tg: TaskGroup | None = None
        self._spooled = anyio.Event()
        self._move_lock = anyio.Lock()
        # Unknown at first: another process may have left requests in the spool file.
        self._spool_dirty = self._spool is not None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        spool: str | os.PathLike[str] | None = None,
        queue_url: str | None = None,
        group: str = DEFAULT_GROUP,
        registry: CollectorRegistry | None = None,
        metrics: Metrics | None = None,
        stream_timeout_s: float = 2.0,
        **connection_options: Any,
    ) -> InvalidationQueue:
        """A queue whose stream lives in the cluster at ``url`` (or the Redis at ``queue_url``).

        No I/O happens here; an unreachable stream is not an error until nothing can store.
        """
        target = queue_url or url
        if not isinstance(target, str) or not target.startswith(("redis://", "rediss://")):
            raise InvalidInputError("url must be a redis:// or rediss:// URL")
        conn = QueueConnection(target, timeout_s=max(stream_timeout_s, 1.0), **connection_options)
        return cls(conn, stream=stream, spool=spool, group=group, registry=registry,
                   metrics=metrics, stream_timeout_s=stream_timeout_s)

    @property
    def stream(self) -> str:
        """The stream's key."""
        return self.names.stream

    @property
    def url(self) -> str:
        """The URL of the Redis holding the stream."""
        return self._conn.url

    @property
    def spool_path(self) -> str | None:
        """The spool file, if any."""
        return None if self._spool is None else str(self._spool.path)

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> InvalidationQueue:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._background)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg, self._tg = self._tg, None
        try:
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the connection and the spool file."""
        await self._conn.aclose()
        if self._spool is not None:
            self._spool.close()

    # -- submitting ------------------------------------------------------------------------------

    async def submit(
        self,
        keys: Iterable[str | bytes] | None = None,
        patterns: Iterable[str | bytes] | None = None,
        operation_name: str = "cache",
        *,
        allow_match_all: bool = False,
        tags: Iterable[str | bytes] | None = None,
    ) -> str:
        """Store an invalidation durably and return its request id; QueueUnavailableError when
        neither the stream nor the spool could store it."""
        receipt = await self.submit_receipt(keys, patterns, operation_name,
                                            allow_match_all=allow_match_all, tags=tags)
        return receipt.request_id

    async def submit_receipt(
        self,
        keys: Iterable[str | bytes] | None = None,
        patterns: Iterable[str | bytes] | None = None,
        operation_name: str = "cache",
        *,
        allow_match_all: bool = False,
        tags: Iterable[str | bytes] | None = None,
    ) -> Receipt:
        """Like ``submit``, also saying where the request was stored."""
        label = self._metrics.operation_label(operation_name)  # validates the name
        try:
            request = new_request(keys, patterns, operation_name,
                                  allow_match_all=allow_match_all, max_keys=self._max_keys,
                                  tags=tags)
        except InvalidInputError:
            self._metrics.error(label, "input")
            raise
        destination = await self._store_request(request)
        self._metrics.queue_submitted(label, spooled=destination == "spool")
        if destination == "stream" and self._spool_dirty and self._tg is None:
            # Nobody moves the spool in the background: the stream answers again, so move it now.
            await self._try_move()
        return Receipt(request.id, destination)

    async def _store_request(self, request: QueueRequest) -> Literal["stream", "spool"]:
        try:
            with anyio.fail_after(self._timeout):
                await self._store.add(request)
            return "stream"
        except _UNREACHABLE as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._spool is None:
            raise QueueUnavailableError(
                f"the stream {self.stream} could not store request {request.id} ({reason}) and "
                "no spool was given")
        try:
            await self._spool.put(request)
        except SpoolError as exc:
            raise QueueUnavailableError(
                f"neither the stream {self.stream} ({reason}) nor the spool could store request "
                f"{request.id}: {exc}") from exc
        self._spool_dirty = True
        self._spooled.set()
        log.warning("stream %s unreachable (%s): %s request %s spooled to %s", self.stream,
                    reason, request.operation, request.id, self._spool.path)
        return "spool"

    # -- the spool -------------------------------------------------------------------------------

    async def move_spooled(self) -> int:
        """Move every spooled request to the stream (each once); how many were moved."""
        if self._spool is None:
            return 0
        moved = 0
        async with self._move_lock:
            while True:
                rows = await self._spool.take(_MOVE_BATCH)
                if not rows:
                    self._spool_dirty = False
                    break
                done: list[str] = []
                try:
                    for row in rows:
                        if row.request is None:
                            log.error("spooled request %s is unreadable and is dropped: %s",
                                      row.id, row.error)
                        else:
                            with anyio.fail_after(self._timeout):
                                await self._store.add(row.request)
                            moved += 1
                        done.append(row.id)
                finally:
                    # A row added but not yet removed is added again next time: the add
                    # is once-only by request id, so it reaches the stream once.
                    with anyio.CancelScope(shield=True):
                        await self._spool.remove(done)
        if moved:
            log.info("moved %d spooled requests to the stream %s", moved, self.stream)
        return moved

    async def _try_move(self) -> None:
        if self._move_lock.locked():
            return
        try:
            await self.move_spooled()
        except (*_UNREACHABLE, SpoolError) as exc:
            log.info("spooled requests stay spooled for now: %s", exc)

    async def _background(self) -> None:
        """Move spooled requests whenever there are some and the stream answers."""
        delay = 0.1
        while True:
            self._spooled = anyio.Event()
            try:
                await self.move_spooled()
                delay = 0.1
                if self._spool is None:
                    return
                # Another process may spool to the same file: look again now and then.
                with anyio.move_on_after(self._spool_poll_s):
                    await self._spooled.wait()
            except (*_UNREACHABLE, SpoolError) as exc:
                log.debug("spool not moved yet (%s); next try in %.1f s", exc, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- reading ---------------------------------------------------------------------------------

    async def status(self) -> QueueStatus:
        """Waiting, pending, dead letters, spooled, and the age of the oldest unfinished request."""
        spooled, spool_oldest = 0, None
        if self._spool is not None:
            spooled, spool_oldest = await self._spool.stats()
        reachable = True
        length = pending = dead = 0
        oldest: float | None = None
        try:
            with anyio.fail_after(self._timeout):
                length, pending, dead, oldest = await self._store.counts(self.group)
        except _UNREACHABLE:
            reachable = False
        times = [t for t in (oldest, spool_oldest) if t is not None]
        age = max(0.0, time.time() - min(times)) if times else 0.0
        return QueueStatus(
            stream=self.stream, waiting=max(0, length - pending), pending=pending,
            dead_letters=dead, spooled=spooled, oldest_age_s=round(age, 3), reachable=reachable,
        )

    # The issue names this signature: wait(request_id, timeout).
    async def retry_dead(self, limit: int = 1000) -> int:
        """Put up to ``limit`` dead letters back on the stream; how many were re-submitted."""
        revived = 0
        try:
            while revived < limit:
                with anyio.fail_after(self._timeout):
                    dead = await self._store.dead_letters(min(100, limit - revived))
                if not dead:
                    break
                for entry in dead:
                    with anyio.fail_after(self._timeout):
                        await self._store.revive(entry)
                    revived += 1
        except _UNREACHABLE as exc:
            raise QueueUnavailableError(
                f"the stream {self.stream} is unreachable after re-submitting {revived} dead "
                f"letters: {exc}") from exc
        if revived:
            log.info("re-submitted %d dead-lettered requests to %s", revived, self.stream)
        return revived

    async def wait(self, request_id: str, timeout: float) -> bool:  # noqa: ASYNC109
        """Whether the request was applied within ``timeout`` seconds (True as soon as it is)."""
        delay = 0.02
        with anyio.move_on_after(timeout):
            while True:
                try:
                    with anyio.fail_after(self._timeout):
                        if await self._store.is_done(request_id):
                            return True
                except _UNREACHABLE:
                    pass  # keep asking until the deadline: the stream may come back
                await anyio.sleep(delay)
                delay = min(delay * 1.5, 0.5)
        return False
