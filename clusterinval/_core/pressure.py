"""Whether a caller runs full-keyspace patterns faster than a cluster can serve them (pure).

Each pattern that walks or SCANs every primary reads the whole keyspace. When passes of one
pattern shape (the pattern with its numbers masked: ``user:#:*``) keep the cluster reading for
more than half of the last minute, the caller is told once, with what would make them cheap.
"""

from __future__ import annotations

import re
from collections import deque

__all__ = ["PatternPressure", "shape_of"]

_NUMBER = re.compile(rb"[0-9]+")
# Over this share of the window spent in passes of one shape, the load is not sustainable.
_BUSY_SHARE = 0.5
_WINDOW_S = 60.0
# Never judged on fewer passes than this (one slow pass is not a habit).
_MIN_PASSES = 5


def shape_of(pattern: bytes) -> bytes:
    """``pattern`` with every run of digits masked as ``#`` (ids vary, the shape does not)."""
    return _NUMBER.sub(b"#", pattern)


class PatternPressure:
    """Per pattern shape, how long its full-keyspace passes kept the cluster busy lately."""

    def __init__(self, window_s: float = _WINDOW_S) -> None:
        self._window_s = window_s
        self._runs: dict[bytes, deque[tuple[float, float]]] = {}
        self._warned: set[bytes] = set()

    def observe(self, shape: bytes, now: float, duration_s: float) -> str | None:
        """Record one pass; the warning to give, the first time a shape is over the limit."""
        if shape in self._warned:
            return None
        runs = self._runs.setdefault(shape, deque())
        runs.append((now, duration_s))
        while runs and runs[0][0] < now - self._window_s:
            runs.popleft()
        busy = sum(d for _t, d in runs)
        span = max(now - runs[0][0] + runs[0][1], 1e-9)
        if len(runs) < _MIN_PASSES or busy / span <= _BUSY_SHARE:
            return None
        self._warned.add(shape)
        if len(self._warned) > 1000:  # bounded: shapes are few in a sane application
            self._warned.clear()
        return (f"{len(runs)} invalidations shaped {shape.decode('utf-8', 'backslashreplace')!r} "
                f"kept the cluster reading its whole keyspace {busy / span:.0%} of the last "
                f"{span:.1f} s; each reads every key. Put each entity's entries under one hash "
                "tag (see `clusterinval explain`) or use exact keys")
