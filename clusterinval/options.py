"""Tunables of a run, with defaults that suit a live production cluster."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from clusterinval.errors import InvalidInputError

__all__ = ["InvalidatorOptions"]


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

    def __post_init__(self) -> None:
        for name in ("scan_count", "server_scan_count", "unlink_batch", "buffer_keys",
                     "stream_depth", "deleters_per_node", "max_operation_names",
                     "max_keys_per_call"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInputError(f"option {name} must be a positive integer, got {value!r}")
        for name in ("timeout_s", "command_timeout_s", "connect_timeout_s", "backoff_cap_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise InvalidInputError(f"option {name} must be a positive number, got {value!r}")
        if self.retries < 0 or self.sample_size < 0 or self.backoff_base_s < 0:
            raise InvalidInputError("options retries, sample_size, backoff_base_s must be >= 0")
        for name in ("keys_per_second", "node_keys_per_second", "adaptive_latency_ms"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise InvalidInputError(f"option {name} must be a positive number or None")

    def with_overrides(self, **overrides: Any) -> InvalidatorOptions:
        """A copy with some fields replaced; unknown names are an error, not ignored."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InvalidInputError(
                f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return replace(self, **overrides)
