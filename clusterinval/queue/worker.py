"""QueueWorker: a consumer-group worker that applies queued requests through one invalidator.

It reads requests in batches, runs a batch concurrently on one ``ClusterInvalidator`` (whose
shared passes merge concurrent pattern calls), and acknowledges a request only once its
invalidation is complete. A failed attempt stays pending and is retried with back-off; entries
a dead worker left pending are claimed after ``claim_idle_s``; after ``max_attempts`` a request
goes to the dead-letter stream with its last error.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Final

import anyio
from redis.exceptions import RedisError

from clusterinval._invalidator import ClusterInvalidator
from clusterinval.errors import ClusterConnectionError, InvalidInputError
from clusterinval.metrics import Metrics
from clusterinval.queue.request import QueueRequest, RequestDecodeError, decode
from clusterinval.queue.stream import DEFAULT_GROUP, Entry, StreamStore

__all__ = ["QueueWorker", "WorkerOptions", "WorkerStats", "default_consumer"]

log = logging.getLogger("clusterinval.queue")

_UNREACHABLE = (RedisError, OSError, TimeoutError)
_MAX_ERROR_CHARS: Final = 500


def default_consumer() -> str:
    """A consumer name unique to this process on this host."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker reads, retries, claims and stops."""

    group: str = DEFAULT_GROUP
    consumer: str | None = None       # default: host-pid
    batch_size: int = 100             # entries read per round (XREADGROUP COUNT)
    concurrency: int = 100            # invalidations running at once
    max_attempts: int = 5             # deliveries before a failing request is dead-lettered
    retry_base_s: float = 0.5         # back-off of the first retry, doubled per attempt
    retry_max_s: float = 30.0         # longest back-off
    claim_idle_s: float = 30.0        # a pending entry idle this long is claimed (dead worker)
    block_s: float = 1.0              # how long one read waits for new entries
    drain_grace_s: float = 30.0       # on stop, how long the current batch may still run
    status_every_s: float = 5.0       # how often the queue gauges are refreshed
    stream_timeout_s: float = 10.0    # deadline of one stream command

    def __post_init__(self) -> None:
        for name in ("batch_size", "concurrency", "max_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        for name in ("retry_base_s", "retry_max_s", "claim_idle_s", "block_s", "drain_grace_s",
                     "status_every_s", "stream_timeout_s"):
            if getattr(self, name) <= 0:
                raise InvalidInputError(f"{name} must be positive, got {getattr(self, name)!r}")


@dataclass
class WorkerStats:
    """What one worker did since it started."""

    applied: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    batches: int = 0


@dataclass
class _Retry:
    entry: Entry
    attempts: int
    due: float
    counted: bool          # the next try is a new delivery (XCLAIM), counted toward the maximum
    failures: int = 1
    error: str = ""


@dataclass
class _Work:
    entry: Entry
    attempts: int
    failures: int = 0
    error: str = ""


@dataclass
class _State:
    retries: dict[str, _Retry] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    cursor: str = "0-0"
    next_claim: float = 0.0


class QueueWorker:
    """Applies the requests of one stream as one consumer of a consumer group."""

    def __init__(
        self,
        invalidator: ClusterInvalidator,
        store: StreamStore,
        options: WorkerOptions | None = None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.options = options or WorkerOptions()
        self.consumer = self.options.consumer or default_consumer()
        self.stats = WorkerStats()
        self._inv = invalidator
        self._store = store
        self._metrics = metrics or invalidator.metrics
        self._state = _State()
        self._stopping = anyio.Event()
        self._batch_scope: anyio.CancelScope | None = None
        self.ready = anyio.Event()

    def stop(self) -> None:
        """Stop reading; the current batch may finish within ``drain_grace_s``, then run ends."""
        self._stopping.set()
        if self._batch_scope is not None:
            self._batch_scope.deadline = min(self._batch_scope.deadline,
                                             anyio.current_time() + self.options.drain_grace_s)

    async def run(self) -> None:
        """Work until ``stop()``; unfinished entries stay pending for this or another worker."""
        opts = self.options
        await self._until_reachable(lambda: self._store.ensure_group(opts.group))
        if self._stopping.is_set():
            return
        log.info("worker %s reading %s as group %s", self.consumer, self._store.names.stream,
                 opts.group)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._keep_claimed)
            tg.start_soon(self._watch_depth)
            self.ready.set()
            first = True
            failures = 0
            while not self._stopping.is_set():
                try:
                    batch = await self._next_batch(first)
                    first = False
                    failures = 0
                except _UNREACHABLE as exc:
                    failures += 1
                    delay = min(opts.retry_max_s, 0.2 * 2 ** min(failures, 8))
                    log.warning("worker %s cannot read %s (%s); again in %.1f s", self.consumer,
                                self._store.names.stream, _why(exc), delay)
                    with anyio.move_on_after(delay):
                        await self._stopping.wait()
                    continue
                if batch:
                    await self._run_batch(batch)
            tg.cancel_scope.cancel()
        log.info("worker %s stopped: %s", self.consumer, self.stats)

    async def _until_reachable(self, step: object) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            try:
                with anyio.fail_after(self.options.stream_timeout_s):
                    await step()  # type: ignore[operator]
                return
            except _UNREACHABLE as exc:
                log.warning("stream %s unreachable (%s); again in %.1f s",
                            self._store.names.stream, _why(exc), delay)
                with anyio.move_on_after(delay):
                    await self._stopping.wait()
                delay = min(delay * 2, self.options.retry_max_s)

    # -- reading ---------------------------------------------------------------------------------

    async def _next_batch(self, first: bool) -> list[_Work]:
        opts, st, store = self.options, self._state, self._store
        timeout = opts.stream_timeout_s
        work: dict[str, _Work] = {}
        if first:
            # What this consumer name held before a restart comes back first.
            with anyio.fail_after(timeout):
                own = await store.read_own(opts.group, self.consumer, opts.batch_size)
                counts = await store.deliveries(opts.group, self.consumer,
                                                [e.entry_id for e in own])
            for e in own:
                work[e.entry_id] = _Work(e, counts.get(e.entry_id, 1))
        now = time.monotonic()
        due = sorted((r for r in st.retries.values() if r.due <= now), key=lambda r: r.due)
        for retry in due[: max(0, opts.batch_size - len(work))]:
            del st.retries[retry.entry.entry_id]
            if retry.counted:
                with anyio.fail_after(timeout):
                    claimed = await store.claim(opts.group, self.consumer,
                                                [retry.entry.entry_id])
                if not claimed:
                    continue  # acknowledged or dead-lettered elsewhere meanwhile
                work[retry.entry.entry_id] = _Work(claimed[0], retry.attempts + 1,
                                                   retry.failures, retry.error)
            else:
                work[retry.entry.entry_id] = _Work(retry.entry, retry.attempts, retry.failures,
                                                   retry.error)
        room = opts.batch_size - len(work)
        if room > 0 and now >= st.next_claim:
            st.next_claim = now + min(opts.claim_idle_s / 2, 5.0)
            with anyio.fail_after(timeout):
                st.cursor, stolen = await store.autoclaim(
                    opts.group, self.consumer, int(opts.claim_idle_s * 1000), st.cursor, room)
                stolen = [e for e in stolen if e.entry_id not in work
                          and e.entry_id not in st.retries]
                counts = await store.deliveries(opts.group, self.consumer,
                                                [e.entry_id for e in stolen])
            for e in stolen:
                log.warning("worker %s claimed %s, left pending by another worker",
                            self.consumer, e.entry_id)
                work[e.entry_id] = _Work(e, counts.get(e.entry_id, 2))
            room = opts.batch_size - len(work)
        if room > 0:
            block = 0.0
            if not work:
                soonest = min((r.due for r in st.retries.values()), default=now + opts.block_s)
                block = max(0.0, min(opts.block_s, soonest - now))
            with anyio.fail_after(timeout + block):
                fresh = await store.read_new(opts.group, self.consumer, room, int(block * 1000))
            for e in fresh:
                work[e.entry_id] = _Work(e, 1)
        return list(work.values())

    # -- running ---------------------------------------------------------------------------------

    async def _run_batch(self, batch: list[_Work]) -> None:
        limiter = anyio.CapacityLimiter(self.options.concurrency)
        self.stats.batches += 1
        # Which requests are already applied, asked once for the batch: the invalidations
        # then start together and share passes of the keyspace, instead of trickling in one
        # marker reading at a time.
        ids = {w.entry.entry_id: _request_id(w.entry) for w in batch}
        try:
            with anyio.fail_after(self.options.stream_timeout_s):
                done: set[str] | None = await self._store.done_among(
                    [r for r in ids.values() if r is not None])
        except _UNREACHABLE:
            done = None  # each entry asks for itself

        async def one(work: _Work) -> None:
            async with limiter:
                self._state.running.add(work.entry.entry_id)
                request_id = ids[work.entry.entry_id]
                known = None if done is None or request_id is None else request_id in done
                try:
                    await self._process(work, known)
                except Exception as exc:
                    # One entry must never stop the worker (a client bug, an unexpected
                    # reply): it stays pending and is tried again later.
                    log.exception("worker %s: unexpected error on entry %s",
                                  self.consumer, work.entry.entry_id)
                    self._state.retries[work.entry.entry_id] = _Retry(
                        work.entry, work.attempts, time.monotonic() + self.options.retry_base_s,
                        False, work.failures + 1, _why(exc))
                finally:
                    self._state.running.discard(work.entry.entry_id)

        with anyio.CancelScope() as scope:
            self._batch_scope = scope
            if self._stopping.is_set():
                scope.deadline = anyio.current_time() + self.options.drain_grace_s
            try:
                async with anyio.create_task_group() as tg:
                    for work in batch:
                        tg.start_soon(one, work)
            finally:
                self._batch_scope = None
        if scope.cancelled_caught:
            log.warning("worker %s stopped mid-batch: unfinished requests stay pending and are "
                        "claimed by another worker after %.0f s", self.consumer,
                        self.options.claim_idle_s)

    async def _process(self, work: _Work, known_done: bool | None = None) -> None:
        opts, store, entry = self.options, self._store, work.entry
        try:
            request = decode(entry.fields)
        except RequestDecodeError as exc:
            await self._dead(work, self._metrics.overflow_label, f"undecodable entry: {exc}")
            return
        if work.attempts > opts.max_attempts:
            await self._dead(work, request.operation, work.error or (
                f"delivered {work.attempts} times without finishing (workers died or stopped?)"))
            return
        try:
            with anyio.fail_after(opts.stream_timeout_s):
                applied = (await store.is_done(request.id) if known_done is None
                           else known_done)
                if applied:
                    await store.finish(opts.group, entry.entry_id, request.id)
                    self.stats.duplicates += 1
                    return
        except _UNREACHABLE as exc:
            self._schedule(work, request, exc, counted=False)
            return
        try:
            await self._inv.invalidate(request.keys or None, request.patterns or None,
                                       request.operation,
                                       allow_match_all=request.allow_match_all,
                                       tags=request.tags or None)
        except InvalidInputError as exc:
            # Validated at submit: only an entry written by other means lands here.
            await self._dead(work, request.operation, f"refused input: {exc}")
            return
        except ClusterConnectionError as exc:
            # The cluster, not the request, is at fault: retry without using up an attempt.
            self._schedule(work, request, exc, counted=False)
            return
        except Exception as exc:
            if work.attempts >= opts.max_attempts:
                await self._dead(work, request.operation, _why(exc))
            else:
                self._schedule(work, request, exc, counted=True)
            return
        try:
            with anyio.fail_after(opts.stream_timeout_s):
                first = await store.finish(opts.group, entry.entry_id, request.id)
        except _UNREACHABLE as exc:
            # Applied but not acknowledged: running it again is harmless.
            self._schedule(work, request, exc, counted=False)
            return
        if first:
            self.stats.applied += 1
            self._metrics.queue_applied(request.operation)
        else:
            self.stats.duplicates += 1

    def _schedule(self, work: _Work, request: QueueRequest, exc: BaseException, *,
                  counted: bool) -> None:
        opts = self.options
        failures = work.failures + 1
        step = work.attempts if counted else failures
        delay = min(opts.retry_max_s, opts.retry_base_s * 2 ** max(0, step - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: workers retrying together spread out
        reason = _why(exc)
        self._state.retries[work.entry.entry_id] = _Retry(
            work.entry, work.attempts, time.monotonic() + delay, counted, failures, reason)
        self.stats.retried += 1
        self._metrics.queue_retried(request.operation)
        log.warning("request %s (%s) attempt %d failed: %s; retry in %.1f s%s", request.id,
                    request.operation, work.attempts, reason, delay,
                    "" if counted else " (not counted: the cluster or stream is unreachable)")

    async def _dead(self, work: _Work, operation: str, error: str) -> None:
        opts = self.options
        try:
            with anyio.fail_after(opts.stream_timeout_s):
                await self._store.dead_letter(opts.group, work.entry, error, work.attempts)
        except _UNREACHABLE as exc:
            log.warning("could not dead-letter %s yet (%s)", work.entry.entry_id, _why(exc))
            self._state.retries[work.entry.entry_id] = _Retry(
                work.entry, work.attempts, time.monotonic() + opts.retry_base_s, False,
                work.failures + 1, error)
            return
        self.stats.dead_lettered += 1
        self._metrics.queue_dead_lettered(operation)
        log.error("request in entry %s (%s) dead-lettered after %d attempts: %s",
                  work.entry.entry_id, operation, work.attempts, error)

    # -- background ------------------------------------------------------------------------------

    async def _keep_claimed(self) -> None:
        """Reset the idle time of entries this worker holds, so nobody claims them from it."""
        opts = self.options
        while True:
            await anyio.sleep(opts.claim_idle_s / 3)
            held = sorted(self._state.running | set(self._state.retries))
            try:
                with anyio.fail_after(opts.stream_timeout_s):
                    await self._store.claim(opts.group, self.consumer, held, justid=True)
            except _UNREACHABLE as exc:
                log.debug("could not refresh held entries: %s", exc)

    async def _watch_depth(self) -> None:
        """Refresh the queue gauges (waiting, pending, dead letters, oldest age)."""
        opts = self.options
        while True:
            try:
                with anyio.fail_after(opts.stream_timeout_s):
                    length, pending, dead, oldest = await self._store.counts(opts.group)
                age = 0.0 if oldest is None else max(0.0, time.time() - oldest)
                self._metrics.queue_depth(max(0, length - pending), pending, dead, age)
            except _UNREACHABLE as exc:
                log.debug("could not read the queue's depth: %s", exc)
            await anyio.sleep(opts.status_every_s)


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:_MAX_ERROR_CHARS]


def _request_id(entry: Entry) -> str | None:
    """The request id an entry carries, read without decoding the whole request."""
    raw = entry.fields.get(b"id")
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else None
