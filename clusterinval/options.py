"""Tunables of a run, with defaults that suit a live production cluster."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from clusterinval.errors import InvalidInputError

__all__ = ["InvalidatorOptions"]

# Whole-number options and the range each may take. The upper bounds keep one server call short
# (a SCAN COUNT of 10**9 holds a node for a fifth of a second) and client memory bounded.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "scan_count": (1, 10_000),
    "server_scan_count": (1, 10_000),
    "unlink_batch": (1, 10_000),
    "buffer_keys": (1, 10_000_000),
    "stream_depth": (1, 1024),
    "deleters_per_node": (1, 64),
    "retries": (0, 100),
    "max_operation_names": (1, 100_000),
    "sample_size": (0, 100_000),
    "max_keys_per_call": (1, 100_000_000),
}


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if type(value) is not int or not lo <= value <= hi:
        raise InvalidInputError(
            f"option {name} must be a whole number from {lo} to {hi}, got {value!r}")


def _check_number(name: str, value: object, *, allow_zero: bool, or_none: bool = False) -> None:
    ok = (isinstance(value, int | float) and not isinstance(value, bool)
          and math.isfinite(value) and (value > 0 or (allow_zero and value == 0)))
    if not ok:
        want = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise InvalidInputError(
            f"option {name} must be {want}{' or None' if or_none else ''}, got {value!r}")


@dataclass(frozen=True, slots=True)
class InvalidatorOptions:
    """How hard and how long an invalidation may work.

    ``scan_count`` is the COUNT hint of each SCAN (work per call on the server, kept small so no
    call blocks a node for long); ``server_scan_count`` is the same for the server-side step that
    also deletes what it finds (smaller, as that step does more per key); ``unlink_batch`` caps
    the keys of one UNLINK; ``buffer_keys`` caps the keys a node's deleters hold before they must
    flush, which bounds client memory.

    Gentleness: ``keys_per_second`` caps deletions for the whole run and ``node_keys_per_second``
    for each primary (token buckets, 0.1 s of burst); ``adaptive_latency_ms`` makes scanners
    pause before a node's next call while its round trips exceed that many milliseconds;
    ``scan_on_replicas`` runs SCAN on a caught-up replica of each primary (deletes stay on the
    primary). See docs/resilience.md.

    Application traffic: with ``shared_passes`` concurrent calls that must read the whole
    keyspace share one reading of it, and concurrent tag invalidations share batches (each call
    still gets its own result); a call with such patterns waits up to ``gather_window_s`` for
    others to join. See docs/performance.md.
    """

    scan_count: int = 1000
    server_scan_count: int = 250
    unlink_batch: int = 500
    buffer_keys: int = 20_000
    stream_depth: int = 8
    deleters_per_node: int = 2
    timeout_s: float = 300.0
    command_timeout_s: float = 5.0
    connect_timeout_s: float = 5.0
    retries: int = 6
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 2.0
    max_operation_names: int = 100
    sample_size: int = 20
    max_keys_per_call: int = 1_000_000
    keys_per_second: float | None = None
    node_keys_per_second: float | None = None
    scan_on_replicas: bool = False
    adaptive_latency_ms: float | None = None
    server_scripts: bool = True
    publish_events: bool = False
    shared_passes: bool = True
    gather_window_s: float = 0.002

    def __post_init__(self) -> None:
        for name, (lo, hi) in _INT_RANGES.items():
            _check_int(name, getattr(self, name), lo, hi)
        for name in ("timeout_s", "command_timeout_s", "connect_timeout_s", "backoff_cap_s"):
            _check_number(name, getattr(self, name), allow_zero=False)
        _check_number("backoff_base_s", self.backoff_base_s, allow_zero=True)
        _check_number("gather_window_s", self.gather_window_s, allow_zero=True)
        if self.gather_window_s > 1.0:
            raise InvalidInputError(
                f"option gather_window_s must be at most 1 s (it delays every full-keyspace "
                f"call), got {self.gather_window_s!r}")
        for name in ("keys_per_second", "node_keys_per_second", "adaptive_latency_ms"):
            value = getattr(self, name)
            if value is not None:
                _check_number(name, value, allow_zero=False, or_none=True)
        for name in ("scan_on_replicas", "server_scripts", "publish_events", "shared_passes"):
            value = getattr(self, name)
            if type(value) is not bool:
                raise InvalidInputError(f"option {name} must be True or False, got {value!r}")

    def with_overrides(self, **overrides: Any) -> InvalidatorOptions:
        """A copy with some fields replaced; unknown names are an error, not ignored."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InvalidInputError(
                f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return replace(self, **overrides)
