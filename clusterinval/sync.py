"""SyncClusterInvalidator: the async API for blocking code (Django, Flask, Celery workers).

It is a thin blocking portal, not a second engine: one event loop thread runs one
``ClusterInvalidator``, and every blocking call is handed to it. Calls from several threads at
once run concurrently on that loop.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from clusterinval.errors import ClusterInvalError, InvalidInputError
from clusterinval.invalidator import ClusterInvalidator
from clusterinval.result import InvalidationResult

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from clusterinval.rules import RuleSet

__all__ = ["SyncClusterInvalidator"]

T = TypeVar("T")


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
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
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
            portal, cm, inv = self._portal, self._portal_cm, self._invalidator
            self._portal = self._portal_cm = self._invalidator = None
        if cm is None:
            return
        try:
            if portal is not None and inv is not None:
                portal.call(inv.aclose)
        finally:
            cm.__exit__(None, None, None)

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
    ) -> InvalidationResult:
        """Delete ``keys`` and keys matching ``patterns``; raise InvalidationError if incomplete."""
        # Materialise iterables here: a generator must not be consumed on another thread.
        key_list = None if keys is None else list(keys)
        pattern_list = None if patterns is None else list(patterns)

        def call(inv: ClusterInvalidator) -> Awaitable[InvalidationResult]:
            return inv.invalidate(
                key_list, pattern_list, operation_name, dry_run, allow_match_all=allow_match_all
            )

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
            if self._portal is not None and self._invalidator is not None:
                return self._portal, self._invalidator
            cm = start_blocking_portal()
            portal = cm.__enter__()
            try:
                inv = portal.call(self._open_async)
            except BaseException:
                cm.__exit__(None, None, None)
                raise
            self._portal_cm, self._portal, self._invalidator = cm, portal, inv
            return portal, inv

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
