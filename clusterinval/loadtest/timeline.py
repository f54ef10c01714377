"""When things happened during a load test: each cache operation, invalidation, error and phase.

Times are seconds since the timeline started (``time.perf_counter`` based). The HTML report draws
its charts from this; the JSON report keeps only the summaries.
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass, field

__all__ = ["InvalidationWindow", "Timeline"]


@dataclass(frozen=True, slots=True)
class InvalidationWindow:
    """One invalidation: when it started and ended, what it deleted, whether it succeeded."""

    start_s: float
    end_s: float
    deleted: int
    ok: bool
    kind: str


@dataclass(slots=True)
class Timeline:
    """Events of one load test, in seconds since ``t0``."""

    t0: float = field(default_factory=time.perf_counter)
    # Cache operations, one entry per operation in three parallel arrays (compact at 10^5 ops):
    # the time the operation ended, its latency in seconds, and 0 GET / 1 SET / 2 failed.
    op_end_s: array[float] = field(default_factory=lambda: array("d"))
    op_latency_s: array[float] = field(default_factory=lambda: array("d"))
    op_kind: array[int] = field(default_factory=lambda: array("b"))
    invalidations: list[InvalidationWindow] = field(default_factory=list)
    phases: list[tuple[str, float]] = field(default_factory=list)

    GET = 0
    SET = 1
    FAILED = 2

    def now(self) -> float:
        """Seconds since the timeline started."""
        return time.perf_counter() - self.t0

    def cache_op(self, is_set: bool, latency_s: float, ok: bool) -> None:
        """Record a cache operation that has just ended."""
        self.op_end_s.append(self.now())
        self.op_latency_s.append(latency_s)
        self.op_kind.append(self.FAILED if not ok else self.SET if is_set else self.GET)

    def invalidation(self, start_s: float, deleted: int, ok: bool, kind: str) -> None:
        """Record an invalidation that started at ``start_s`` and has just ended."""
        self.invalidations.append(InvalidationWindow(start_s, self.now(), deleted, ok, kind))

    def phase(self, name: str) -> None:
        """Record that phase ``name`` starts now."""
        self.phases.append((name, self.now()))
