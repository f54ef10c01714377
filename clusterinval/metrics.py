"""Prometheus instruments of clusterinval, labelled by operation, with a cap on label cardinality.

Every metric is listed with its meaning in ``docs/metrics.md``. The instruments are created once
per ``CollectorRegistry`` and shared by every ``Metrics`` object built on that registry, so several
invalidators in one process (all on the global registry by default) never collide with
"Duplicated timeseries", and the cap on distinct ``operation`` values holds for the registry as a
whole rather than per object.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, get_args

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from clusterinval._core.planning import is_short_identifier, validate_operation_name
from clusterinval._core.values import ErrorKind
from clusterinval.errors import InvalidInputError

if TYPE_CHECKING:
    from clusterinval.result import InvalidationResult

__all__ = [
    "DURATION_BUCKETS",
    "ERROR_KINDS",
    "KEYS_BUCKETS",
    "METRIC_NAMES",
    "NODE_SCAN_BUCKETS",
    "OUTCOMES",
    "SHARED_PASS_BUCKETS",
    "ErrorKind",
    "Metrics",
    "Outcome",
]

log = logging.getLogger("clusterinval.metrics")

Outcome = Literal["complete", "partial", "failed"]
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)
ERROR_KINDS: Final[tuple[ErrorKind, ...]] = get_args(ErrorKind)

# 1 ms .. 5 min: an exact-key UNLINK takes about a millisecond, a pattern sweep of a large
# keyspace minutes; the default timeout_s is 300 s, so the last finite bucket is the timeout.
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)
# Fewer buckets per node: this histogram is multiplied by the number of primaries.
NODE_SCAN_BUCKETS: Final[tuple[float, ...]] = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
)
# Keys removed by one run: from "nothing matched" to a ten-million-key sweep.
KEYS_BUCKETS: Final[tuple[float, ...]] = (
    0, 1, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 1_000_000, 10_000_000,
)
# Calls one shared pass served: alone, a few, or a storm of concurrent callers.
SHARED_PASS_BUCKETS: Final[tuple[float, ...]] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

# Exposed family names (counters gain ``_total``, histograms ``_bucket``/``_sum``/``_count``).
METRIC_NAMES: Final[tuple[str, ...]] = (
    "clusterinval_invalidations_total",
    "clusterinval_dry_runs_total",
    "clusterinval_keys_deleted_total",
    "clusterinval_keys_matched_total",
    "clusterinval_keys_scanned_total",
    "clusterinval_errors_total",
    "clusterinval_invalidation_duration_seconds",
    "clusterinval_keys_per_invalidation",
    "clusterinval_node_scan_duration_seconds",
    "clusterinval_node_keys_scanned_total",
    "clusterinval_invalidations_in_progress",
    "clusterinval_last_success_timestamp_seconds",
    "clusterinval_shared_pass_calls",
    "clusterinval_tag_invalidations_total",
    "clusterinval_tag_members_removed_total",
    "clusterinval_tag_set_size",
    "clusterinval_queue_submitted_total",
    "clusterinval_queue_spooled_total",
    "clusterinval_queue_applied_total",
    "clusterinval_queue_retried_total",
    "clusterinval_queue_dead_lettered_total",
    "clusterinval_queue_waiting",
    "clusterinval_queue_pending",
    "clusterinval_queue_dead_letters",
    "clusterinval_queue_oldest_age_seconds",
)

# A cluster has at most ~1000 nodes; this only guards against a node label churning without end
# (e.g. containers getting new ports on every restart of a long-lived process).
_MAX_NODES: Final = 1000
_NODE_OVERFLOW: Final = "other"


@dataclass(slots=True, eq=False)
class _RunChildren:
    """One operation's series that every run updates."""

    in_progress: Gauge
    outcomes: dict[str, Counter]
    duration: Histogram
    scanned: Counter
    matched: Counter
    dry_runs: Counter
    deleted: Counter
    keys_per_run: Histogram
    last_success: Gauge | None = None  # created by the first complete run (absent until then)


@dataclass(eq=False)
class _Instruments:
    """The collectors of one registry, and the label values already admitted on it."""

    invalidations: Counter
    dry_runs: Counter
    deleted: Counter
    matched: Counter
    scanned: Counter
    errors: Counter
    duration: Histogram
    keys_per_run: Histogram
    node_scan: Histogram
    node_scanned: Counter
    in_progress: Gauge
    last_success: Gauge
    shared_pass: Histogram
    tag_invalidations: Counter
    tag_removed: Counter
    tag_set_size: Histogram
    queue_submitted: Counter
    queue_spooled: Counter
    queue_applied: Counter
    queue_retried: Counter
    queue_dead: Counter
    queue_waiting: Gauge
    queue_pending: Gauge
    queue_dead_letters: Gauge
    queue_oldest_age: Gauge
    lock: threading.Lock = field(default_factory=threading.Lock)
    operations: set[str] = field(default_factory=set)
    runs: dict[str, _RunChildren] = field(default_factory=dict)
    nodes: set[str] = field(default_factory=set)
    folded_warned: bool = False
    nodes_warned: bool = False

    @classmethod
    def create(cls, registry: CollectorRegistry) -> _Instruments:
        """Register every clusterinval collector on ``registry``."""
        op = ("operation",)
        return cls(
            invalidations=Counter(
                "clusterinval_invalidations", "Invalidation runs finished, by outcome.",
                (*op, "outcome"), registry=registry),
            dry_runs=Counter(
                "clusterinval_dry_runs", "Runs made with dry_run=True (also counted in "
                "clusterinval_invalidations_total).", op, registry=registry),
            deleted=Counter(
                "clusterinval_keys_deleted", "Keys removed (sum of UNLINK replies); dry runs "
                "add nothing.", op, registry=registry),
            matched=Counter(
                "clusterinval_keys_matched", "Keys found to match (what a dry run would delete).",
                op, registry=registry),
            scanned=Counter(
                "clusterinval_keys_scanned", "Keys examined by SCAN on the primaries.",
                op, registry=registry),
            errors=Counter(
                "clusterinval_errors", "Errors met during invalidations, by kind (retried ones "
                "included).", (*op, "error"), registry=registry),
            duration=Histogram(
                "clusterinval_invalidation_duration_seconds", "Wall time of one invalidation.",
                op, buckets=DURATION_BUCKETS, registry=registry),
            keys_per_run=Histogram(
                "clusterinval_keys_per_invalidation", "Keys deleted by one (non-dry, not failed) "
                "invalidation.", op, buckets=KEYS_BUCKETS, registry=registry),
            node_scan=Histogram(
                "clusterinval_node_scan_duration_seconds", "Time one primary spent on one run "
                "that scanned it.",
                (*op, "node"), buckets=NODE_SCAN_BUCKETS, registry=registry),
            node_scanned=Counter(
                "clusterinval_node_keys_scanned", "Keys examined by SCAN, per primary.",
                (*op, "node"), registry=registry),
            in_progress=Gauge(
                "clusterinval_invalidations_in_progress", "Invalidations running now.",
                op, registry=registry),
            last_success=Gauge(
                "clusterinval_last_success_timestamp_seconds", "Unix time the last complete "
                "invalidation finished.", op, registry=registry),
            shared_pass=Histogram(
                "clusterinval_shared_pass_calls", "Calls served by one shared pass (concurrent "
                "full-keyspace invalidations merged into one reading of the keyspace).",
                buckets=SHARED_PASS_BUCKETS, registry=registry),
            tag_invalidations=Counter(
                "clusterinval_tag_invalidations", "Tags invalidated (each tag of a call counts "
                "once; dry runs excluded).", op, registry=registry),
            tag_removed=Counter(
                "clusterinval_tag_members_removed", "Tagged keys removed through their tags' "
                "indexes.", op, registry=registry),
            tag_set_size=Histogram(
                "clusterinval_tag_set_size", "Members of one tag's index when it was invalidated.",
                op, buckets=KEYS_BUCKETS, registry=registry),
            queue_submitted=Counter(
                "clusterinval_queue_submitted", "Requests stored by InvalidationQueue.submit "
                "(stream or spool).", op, registry=registry),
            queue_spooled=Counter(
                "clusterinval_queue_spooled", "Submitted requests that went to the local spool "
                "because the stream was unreachable.", op, registry=registry),
            queue_applied=Counter(
                "clusterinval_queue_applied", "Queued requests a worker applied completely "
                "(each request once, however often delivered).", op, registry=registry),
            queue_retried=Counter(
                "clusterinval_queue_retried", "Failed or incomplete attempts a worker left "
                "pending to retry.", op, registry=registry),
            queue_dead=Counter(
                "clusterinval_queue_dead_lettered", "Requests moved to the dead-letter stream "
                "after the maximum attempts.", op, registry=registry),
            # One queue per worker process: these describe the stream, not an operation.
            queue_waiting=Gauge(
                "clusterinval_queue_waiting", "Requests in the stream not yet delivered to a "
                "worker (as last read by this process).", registry=registry),
            queue_pending=Gauge(
                "clusterinval_queue_pending", "Requests delivered to a worker and not yet "
                "acknowledged.", registry=registry),
            queue_dead_letters=Gauge(
                "clusterinval_queue_dead_letters", "Requests in the dead-letter stream.",
                registry=registry),
            queue_oldest_age=Gauge(
                "clusterinval_queue_oldest_age_seconds", "Age of the oldest unfinished "
                "request: how stale a cache entry can be because of the queue.",
                registry=registry),
        )

    def children(self, operation: str) -> _RunChildren:
        """The per-run series of an admitted operation (looked up once, not on every run)."""
        found = self.runs.get(operation)
        if found is None:
            found = self.runs[operation] = _RunChildren(
                in_progress=self.in_progress.labels(operation),
                outcomes={o: self.invalidations.labels(operation, o) for o in OUTCOMES},
                duration=self.duration.labels(operation),
                scanned=self.scanned.labels(operation),
                matched=self.matched.labels(operation),
                dry_runs=self.dry_runs.labels(operation),
                deleted=self.deleted.labels(operation),
                keys_per_run=self.keys_per_run.labels(operation),
            )
        return found

    def admit(self, operation: str) -> None:
        """Export zeros for every child of a new operation, so rate() and ratios work at once."""
        for outcome in OUTCOMES:
            self.invalidations.labels(operation, outcome)
        for kind in ERROR_KINDS:
            self.errors.labels(operation, kind)
        self.dry_runs.labels(operation)
        self.deleted.labels(operation)
        self.matched.labels(operation)
        self.scanned.labels(operation)
        self.duration.labels(operation)
        self.keys_per_run.labels(operation)
        self.in_progress.labels(operation)
        self.tag_invalidations.labels(operation)
        self.tag_removed.labels(operation)
        self.tag_set_size.labels(operation)
        for queue_counter in (self.queue_submitted, self.queue_spooled, self.queue_applied,
                              self.queue_retried, self.queue_dead):
            queue_counter.labels(operation)

    def node_label(self, node: str) -> str:
        """``node`` while fewer than _MAX_NODES were seen on this registry, else the overflow."""
        with self.lock:
            if node in self.nodes:
                return node
            if len(self.nodes) < _MAX_NODES:
                self.nodes.add(node)
                return node
            warn = not self.nodes_warned
            self.nodes_warned = True
        if warn:
            log.warning("more than %d distinct node labels; further nodes are counted as %r",
                        _MAX_NODES, _NODE_OVERFLOW)
        return _NODE_OVERFLOW


# One set of instruments per registry; weak keys so a test's throwaway registry is freed.
_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, _Instruments] = (
    weakref.WeakKeyDictionary()
)
_BY_REGISTRY_LOCK = threading.Lock()


def _instruments_for(registry: CollectorRegistry) -> _Instruments:
    with _BY_REGISTRY_LOCK:
        found = _BY_REGISTRY.get(registry)
        if found is None:
            found = _Instruments.create(registry)
            _BY_REGISTRY[registry] = found
        return found


class Metrics:
    """Records invalidations into Prometheus instruments labelled by a capped ``operation``."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_operations: int = 100,
        overflow_label: str = "other",
    ) -> None:
        if isinstance(max_operations, bool) or not isinstance(max_operations, int) \
                or max_operations < 1:
            raise InvalidInputError(f"max_operations must be a positive integer, "
                                    f"got {max_operations!r}")
        if not is_short_identifier(overflow_label):
            raise InvalidInputError(f"overflow_label must be a short identifier, "
                                    f"got {overflow_label!r}")
        self._registry = REGISTRY if registry is None else registry
        self._max = max_operations
        self._overflow = overflow_label
        self._inst = _instruments_for(self._registry)

    @property
    def registry(self) -> CollectorRegistry:
        """The registry the instruments live in."""
        return self._registry

    @property
    def max_operations(self) -> int:
        """How many distinct operation values this object admits before folding."""
        return self._max

    @property
    def overflow_label(self) -> str:
        """The value every operation beyond the cap is counted under."""
        return self._overflow

    def operation_label(self, operation_name: str) -> str:
        """The label value to record ``operation_name`` under: itself, or the overflow value."""
        inst = self._inst
        if operation_name in inst.operations:
            return operation_name  # admitted before, so valid: no second check per call
        validate_operation_name(operation_name)
        warn = False
        with inst.lock:
            if operation_name in inst.operations:
                return operation_name
            if operation_name == self._overflow or len(inst.operations) < self._max:
                # The overflow value itself takes a slot the first time, so the series count
                # stays within max_operations + 1 whatever callers pass.
                label = operation_name
            else:
                label = self._overflow
                warn = not inst.folded_warned
                inst.folded_warned = True
            new = label not in inst.operations
            inst.operations.add(label)
        if new:
            inst.admit(label)
        if warn:
            log.warning(
                "more than %d distinct operation_name values; %r and later new names are "
                "counted as operation=%r (put ids in keys, not in operation_name)",
                self._max, operation_name, self._overflow,
            )
        return label

    def run_started(self, operation: str) -> None:
        """Count a run as in progress."""
        self._inst.children(self.operation_label(operation)).in_progress.inc()

    def run_finished(
        self, operation: str, result: InvalidationResult, outcome: Outcome
    ) -> None:
        """Record a finished run: outcome, key counts, duration, per-node scan work."""
        if outcome not in OUTCOMES:
            raise InvalidInputError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        op = self.operation_label(operation)
        inst = self._inst
        series = inst.children(op)
        series.in_progress.dec()
        series.outcomes[outcome].inc()
        series.duration.observe(max(result.duration_s, 0.0))
        # Adding zero changes nothing: small calls skip those counters' locks.
        if result.scanned > 0:
            series.scanned.inc(result.scanned)
        if result.matched > 0:
            series.matched.inc(result.matched)
        if result.dry_run:
            series.dry_runs.inc()
        else:
            if result.deleted > 0:
                series.deleted.inc(result.deleted)
            if outcome != "failed":
                series.keys_per_run.observe(max(result.deleted, 0))
        for node in result.nodes:
            if node.scan_calls < 1:
                # Exact keys only reached this node: no scan, nothing to time as scan work.
                continue
            node_label = inst.node_label(node.node)
            inst.node_scan.labels(op, node_label).observe(max(node.duration_s, 0.0))
            inst.node_scanned.labels(op, node_label).inc(max(node.scanned, 0))
        if outcome == "complete":
            # Created here, not ahead: the series is absent until a run completes.
            if series.last_success is None:
                series.last_success = inst.last_success.labels(op)
            series.last_success.set(time.time())

    def tags_finished(self, operation: str, sizes: Sequence[int], removed: int) -> None:
        """Record the tags of one run: each index's size, and the keys removed through them."""
        inst = self._inst
        op = self.operation_label(operation)
        inst.tag_invalidations.labels(op).inc(len(sizes))
        inst.tag_removed.labels(op).inc(max(removed, 0))
        for size in sizes:
            inst.tag_set_size.labels(op).observe(max(size, 0))

    def shared_pass(self, calls: int) -> None:
        """Record one shared pass and the number of calls it served."""
        self._inst.shared_pass.observe(max(calls, 0))

    def queue_submitted(self, operation: str, *, spooled: bool = False) -> None:
        """Count one request stored by ``submit`` (and as spooled when the spool took it)."""
        op = self.operation_label(operation)
        self._inst.queue_submitted.labels(op).inc()
        if spooled:
            self._inst.queue_spooled.labels(op).inc()

    def queue_applied(self, operation: str) -> None:
        """Count one queued request applied completely."""
        self._inst.queue_applied.labels(self.operation_label(operation)).inc()

    def queue_retried(self, operation: str) -> None:
        """Count one failed attempt left pending to retry."""
        self._inst.queue_retried.labels(self.operation_label(operation)).inc()

    def queue_dead_lettered(self, operation: str) -> None:
        """Count one request moved to the dead-letter stream."""
        self._inst.queue_dead.labels(self.operation_label(operation)).inc()

    def queue_depth(self, waiting: int, pending: int, dead_letters: int,
                    oldest_age_s: float) -> None:
        """Set the queue gauges from a status reading."""
        inst = self._inst
        inst.queue_waiting.set(max(waiting, 0))
        inst.queue_pending.set(max(pending, 0))
        inst.queue_dead_letters.set(max(dead_letters, 0))
        inst.queue_oldest_age.set(max(oldest_age_s, 0.0))

    def error(self, operation: str, kind: ErrorKind) -> None:
        """Count one error of ``kind`` (unknown kinds are counted as ``other``)."""
        label: ErrorKind = kind if kind in ERROR_KINDS else "other"
        self._inst.errors.labels(self.operation_label(operation), label).inc()
