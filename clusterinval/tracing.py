"""OpenTelemetry spans for invalidations, with a no-op default when OpenTelemetry is not installed.

With the ``tracing`` extra (``opentelemetry-api``) every invalidation is one span named
``clusterinval.invalidate`` and each node's pass one child span named ``clusterinval.node_pass``,
recorded through whatever tracer provider the application configured (none configured: no span
is made, at no cost). Without ``opentelemetry-api`` these functions do nothing at all.

Attributes of ``clusterinval.invalidate``: ``clusterinval.operation``,
``clusterinval.keys_requested``, ``clusterinval.patterns``, ``clusterinval.dry_run`` at the start;
``clusterinval.deleted``, ``clusterinval.matched``, ``clusterinval.scanned``,
``clusterinval.complete``, ``clusterinval.uncovered_slots`` and ``clusterinval.merged_with``
(how many other callers' requests this run served, when requests were coalesced) at the end.
An incomplete run or an error sets the span's status to ERROR. ``clusterinval.node_pass`` carries
``clusterinval.node`` (``host:port``) and ``clusterinval.match`` (the ``SCAN MATCH`` pattern).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from clusterinval.result import InvalidationResult

try:
    from opentelemetry import trace as _trace
    _NO_OP_PROVIDERS: tuple[type, ...] = (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider)
except ImportError:  # the optional extra is not installed: every span is a no-op
    _trace = None  # type: ignore[assignment]
    _NO_OP_PROVIDERS = ()

# A provider named by the environment (read, like the rest of the environment, at start-up).
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
_UNKNOWN = object()

__all__ = [
    "NODE_PASS_SPAN",
    "RUN_SPAN",
    "TRACER_NAME",
    "RunSpan",
    "enabled",
    "invalidation_span",
    "node_pass_span",
]

TRACER_NAME: Final = "clusterinval"
RUN_SPAN: Final = "clusterinval.invalidate"
NODE_PASS_SPAN: Final = "clusterinval.node_pass"


def enabled() -> bool:
    """Whether OpenTelemetry is installed (spans go to the application's tracer provider)."""
    return _trace is not None


def _tracer() -> Any:
    """The tracer spans go to; None without OpenTelemetry or while no tracer provider is
    configured (nothing would record)."""
    # Looked up per span, so a provider the application installs after import is used. Without
    # one the API hands out non-recording spans: making them would cost a small call more than
    # its own bookkeeping, for nothing.
    if _trace is None:
        return None
    if getattr(_trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not _PROVIDER_FROM_ENV:
        # No provider set (the API's own global, read without its environment lookup, which
        # costs a small call more than its bookkeeping); an API without that global is asked.
        return None
    provider = _trace.get_tracer_provider()
    if isinstance(provider, _NO_OP_PROVIDERS):
        return None
    return provider.get_tracer(TRACER_NAME)


class RunSpan:
    """The span of one invalidation; ``record`` adds the run's figures when it ends."""

    __slots__ = ("_span", "failed")

    def __init__(self, span: Any = None) -> None:
        self._span = span
        self.failed = False

    def __enter__(self) -> RunSpan:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def record(self, result: InvalidationResult, *, merged_with: int = 0) -> None:
        """Attach the run's figures to the span."""
        if self._span is None:
            return
        self._span.set_attributes({
            "clusterinval.deleted": result.deleted,
            "clusterinval.matched": result.matched,
            "clusterinval.scanned": result.scanned,
            "clusterinval.complete": result.complete,
            "clusterinval.uncovered_slots": result.uncovered_slot_count,
            "clusterinval.merged_with": merged_with,
        })
        if not result.complete and _trace is not None:
            self._span.set_status(_trace.Status(
                _trace.StatusCode.ERROR,
                f"incomplete: {result.uncovered_slot_count} slots not covered",
            ))

    def record_error(self, exc: BaseException) -> None:
        """Mark the span as failed with ``exc``."""
        self.failed = True
        if self._span is None or _trace is None:
            return
        self._span.record_exception(exc)
        self._span.set_status(_trace.Status(_trace.StatusCode.ERROR, _describe(exc)))


def invalidation_span(
    operation: str, *, keys: int, patterns: int, dry_run: bool
) -> contextlib.AbstractContextManager[RunSpan]:
    """A span around one invalidation (a no-op without OpenTelemetry)."""
    tracer = _tracer()
    if tracer is None:
        return RunSpan()  # its own do-nothing context: no generator to drive per call
    return _recording_span(tracer, {
        "clusterinval.operation": operation,
        "clusterinval.keys_requested": keys,
        "clusterinval.patterns": patterns,
        "clusterinval.dry_run": dry_run,
    })


@contextlib.contextmanager
def _recording_span(tracer: Any, attributes: dict[str, Any]) -> Iterator[RunSpan]:
    with tracer.start_as_current_span(
        RUN_SPAN, attributes=attributes, record_exception=False,
        set_status_on_exception=False,
    ) as span:
        run = RunSpan(span)
        try:
            yield run
        except BaseException as exc:
            if not run.failed:
                run.record_error(exc)
            raise


@contextlib.contextmanager
def node_pass_span(node: str, *, match: str) -> Iterator[None]:
    """A child span around one node's pass (a no-op without OpenTelemetry)."""
    tracer = _tracer()
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(
        NODE_PASS_SPAN,
        attributes={"clusterinval.node": node, "clusterinval.match": match},
        record_exception=False, set_status_on_exception=False,
    ) as span:
        try:
            yield None
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(_trace.Status(_trace.StatusCode.ERROR, _describe(exc)))
            raise


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
