"""SyncClusterInvalidator: the async API for blocking code (Django, Flask, Celery workers).

It is a thin blocking portal, not a second engine: one event loop thread runs one
``ClusterInvalidator``, and every blocking call is handed to it. Calls from several threads at
once run concurrently on that loop.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from clusterinval._invalidator import ClusterInvalidator
from clusterinval.errors import ClusterInvalError, InvalidInputError
from clusterinval.result import Explanation, InvalidationResult, TagGcResult

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from clusterinval.rules import RuleSet

__all__ = ["SyncClusterInvalidator"]

T = TypeVar("T")


class _LoopThread:
    """An event loop in a daemon thread, reachable through a BlockingPortal.

    A daemon thread, unlike the executor thread of ``start_blocking_portal``, cannot keep the
    interpreter from exiting when an application forgets ``close()``.
    """

    def __init__(self) -> None:
        handoff: queue.Queue[BlockingPortal | BaseException] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(
            target=self._main, args=(handoff,), name="clusterinval-sync", daemon=True
        )
        self._thread.start()
        got = handoff.get()
        if isinstance(got, BaseException):
            raise got
        self.portal = got

    @staticmethod
    def _main(handoff: queue.Queue[BlockingPortal | BaseException]) -> None:
        async def serve() -> None:
            async with BlockingPortal() as portal:
                handoff.put(portal)
                await portal.sleep_until_stopped()

        try:
            anyio.run(serve)
        except BaseException as exc:  # reported to the starting thread if it still waits
            if handoff.empty():
                handoff.put(exc)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (cancelling what still runs on it) and wait for the thread."""
        # RuntimeError: the loop already ended.
        with contextlib.suppress(RuntimeError):
            self.portal.call(self.portal.stop, True)
        self._thread.join(timeout)


class SyncClusterInvalidator:
    """Blocking twin of ClusterInvalidator: same ``invalidate`` arguments, results and errors."""

    def __init__(
        self,
        url: str | None = None,
        *,
        registry: CollectorRegistry | None = None,
        rules: RuleSet | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise InvalidInputError("SyncClusterInvalidator needs a redis:// or rediss:// URL")
        self._url = url
        self._registry = registry
        self._rules = rules
        self._options = options
        self._lock = threading.Lock()
        self._loop: _LoopThread | None = None
        self._invalidator: ClusterInvalidator | None = None
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        registry: CollectorRegistry | None = None,
        rules: RuleSet | None = None,
        **options: Any,
    ) -> SyncClusterInvalidator:
        """A blocking invalidator for the cluster (or standalone server) at ``url``."""
        return cls(url, registry=registry, rules=rules, **options)

    def __enter__(self) -> SyncClusterInvalidator:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Start the loop thread, connect and read the topology (idempotent)."""
        self._ready()

    def close(self) -> None:
        """Close the connections and stop the loop thread (idempotent)."""
        with self._lock:
            self._closed = True
            loop, inv = self._loop, self._invalidator
            self._loop = self._invalidator = None
        if loop is None:
            return
        try:
            if inv is not None:
                loop.portal.call(inv.aclose)
        finally:
            loop.stop()

    @property
    def invalidator(self) -> ClusterInvalidator:
        """The async invalidator the portal drives (use it only from that loop)."""
        return self._ready()[1]

    def invalidate(
        self,
        keys: Iterable[str | bytes] | None = None,
        patterns: Iterable[str | bytes] | None = None,
        operation_name: str = "cache",
        dry_run: bool = False,
        *,
        allow_match_all: bool = False,
        tags: Iterable[str | bytes] | None = None,
    ) -> InvalidationResult:
        """Delete ``keys``, keys matching ``patterns`` and keys tagged with ``tags``; raise
        InvalidationError if incomplete."""
        # Materialise iterables here: a generator must not be consumed on another thread.
        key_list = None if keys is None else list(keys)
        pattern_list = None if patterns is None else list(patterns)
        tag_list = None if tags is None else _listed("tags", tags)

        def call(inv: ClusterInvalidator) -> Awaitable[InvalidationResult]:
            return inv.invalidate(
                key_list, pattern_list, operation_name, dry_run, allow_match_all=allow_match_all,
                tags=tag_list,
            )

        return self._run(call)

    def tag(self, keys: Iterable[str | bytes], tags: Iterable[str | bytes]) -> int:
        """Index existing ``keys`` under ``tags``; how many (key, tag) entries were new."""
        key_list, tag_list = _listed("keys", keys), _listed("tags", tags)
        return self._run(lambda inv: inv.tag(key_list, tag_list))

    def gc_tags(self, tags: Iterable[str | bytes] | None = None) -> TagGcResult:
        """Drop index members whose keys no longer exist (every tag when ``tags`` is None)."""
        tag_list = None if tags is None else _listed("tags", tags)
        return self._run(lambda inv: inv.gc_tags(tag_list))

    def explain(
        self,
        keys: Iterable[str | bytes] | None = None,
        patterns: Iterable[str | bytes] | None = None,
        *,
        allow_match_all: bool = False,
    ) -> Explanation:
        """What invalidating ``keys`` and ``patterns`` would cost; nothing is deleted."""
        key_list = None if keys is None else list(keys)
        pattern_list = None if patterns is None else list(patterns)

        def call(inv: ClusterInvalidator) -> Awaitable[Explanation]:
            return inv.explain(key_list, pattern_list, allow_match_all=allow_match_all)

        return self._run(call)

    def invalidate_rule(
        self, name: str, *, rules: RuleSet | None = None, dry_run: bool = False, **params: Any
    ) -> InvalidationResult:
        """Run the named rule (see ``clusterinval.rules``) with ``params`` filled in."""
        table = rules or self._rules

        def call(inv: ClusterInvalidator) -> Awaitable[InvalidationResult]:
            return inv.invalidate_rule(name, rules=table, dry_run=dry_run, **params)

        return self._run(call)

    # -- internals ---------------------------------------------------------------------------

    def _run(self, call: Callable[[ClusterInvalidator], Awaitable[T]]) -> T:
        portal, inv = self._ready()

        async def task() -> T:
            return await call(inv)

        return portal.call(task)

    def _ready(self) -> tuple[BlockingPortal, ClusterInvalidator]:
        with self._lock:
            if self._closed:
                raise ClusterInvalError("this SyncClusterInvalidator is closed")
            if self._loop is not None and self._invalidator is not None:
                return self._loop.portal, self._invalidator
            loop = _LoopThread()
            try:
                inv = loop.portal.call(self._open_async)
            except BaseException:
                loop.stop()
                raise
            self._loop, self._invalidator = loop, inv
            return loop.portal, inv

    async def _open_async(self) -> ClusterInvalidator:
        inv = ClusterInvalidator.from_url(
            self._url, registry=self._registry, rules=self._rules, **self._options
        )
        try:
            await inv.open()
        except BaseException:
            await inv.aclose()
            raise
        return inv


def _listed(name: str, values: Iterable[str | bytes]) -> list[str | bytes]:
    """``values`` as a list; a lone string is a mistake worth a clear message."""
    if isinstance(values, str | bytes):
        raise InvalidInputError(f"{name} must be a list of strings, not a single "
                                f"{type(values).__name__}; wrap it: {name}=[{values!r:.60}]")
    return list(values)
