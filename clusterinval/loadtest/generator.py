"""The load generator: cache traffic before and during a stream of invalidations, then a check.

Phases: fill the cluster with the ``Keyspace`` families; an idle baseline (traffic only); the
load phase (traffic plus invalidations at a target rate, each invalidation's keys written back
afterwards so the workload is steady); a final round of invalidations that are not written back;
and the check that the cluster holds exactly the expected keys.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from prometheus_client import CollectorRegistry, Counter, Histogram
from redis.asyncio import RedisCluster

from clusterinval._invalidator import ClusterInvalidator
from clusterinval.errors import ClusterInvalError
from clusterinval.loadtest.keyspace import Job, Keyspace
from clusterinval.loadtest.report import LatencySummary
from clusterinval.loadtest.timeline import Timeline
from clusterinval.loadtest.traffic import TrafficTally, run_traffic
from clusterinval.testing.fill import fill_keys, scan_all_keys

__all__ = ["LoadConfig", "LoadReport", "LoadState", "run_loadtest"]

_MAX_ERROR_TEXTS = 20
_CACHE_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """What to run: sizes, rates and durations (seconds)."""

    keys: int = 100_000
    duration_s: float = 20.0
    baseline_s: float = 5.0
    ops_per_second: float = 2000.0
    invalidations_per_second: float = 5.0
    workers: int = 16
    set_ratio: float = 0.2
    keys_per_second: float | None = None
    max_invalidations: int = 100_000

    def __post_init__(self) -> None:
        if self.keys < 1000:
            raise ValueError("keys must be at least 1000")
        if self.duration_s <= 0 or self.baseline_s <= 0:
            raise ValueError("duration_s and baseline_s must be positive")
        if self.ops_per_second <= 0 or self.invalidations_per_second <= 0:
            raise ValueError("rates must be positive")
        if not 0 <= self.set_ratio <= 1:
            raise ValueError("set_ratio must be within 0..1")


@dataclass(slots=True)
class LoadState:
    """Live counters a progress display reads while the test runs."""

    phase: str = "fill"
    phase_started: float = 0.0
    phase_length_s: float = 0.0
    cache_ops: int = 0
    invalidations: int = 0
    keys_deleted: int = 0
    errors: int = 0


@dataclass(slots=True)
class LoadReport:
    """Everything the load test measured."""

    config: LoadConfig
    keys_filled: int = 0
    before: TrafficTally = field(default_factory=TrafficTally)
    during: TrafficTally = field(default_factory=TrafficTally)
    inv_latencies: list[float] = field(default_factory=list)
    invalidations: int = 0
    invalidations_failed: int = 0
    keys_deleted: int = 0
    count_mismatches: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    inv_elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    survivors: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    final_jobs: int = 0
    hard_cap_hit: bool = False
    timeline: Timeline = field(default_factory=Timeline)

    @property
    def ok(self) -> bool:
        """The final check passed and every invalidation completed with the expected count."""
        return (not self.survivors and not self.lost and not self.unexpected
                and self.invalidations_failed == 0 and self.count_mismatches == 0
                and not self.hard_cap_hit)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        def rate(n: int, s: float) -> float:
            return round(n / s, 3) if s > 0 else 0.0

        return {
            "config": {k: getattr(self.config, k) for k in self.config.__dataclass_fields__},
            "keys_filled": self.keys_filled,
            "cache_before": LatencySummary.of(self.before.latencies).to_dict(),
            "cache_during": LatencySummary.of(self.during.latencies).to_dict(),
            "cache_ops_before": self.before.ops,
            "cache_ops_during": self.during.ops,
            "cache_ops_per_s_before": rate(self.before.ops, self.before.elapsed_s),
            "cache_ops_per_s_during": rate(self.during.ops, self.during.elapsed_s),
            "cache_hits_during": self.during.hits,
            "cache_errors": self.before.errors + self.during.errors,
            "cache_error_samples": (self.before.error_texts + self.during.error_texts)[:10],
            "invalidations": self.invalidations,
            "invalidations_failed": self.invalidations_failed,
            "invalidations_by_kind": dict(self.by_kind),
            "invalidations_per_s": rate(self.invalidations, self.inv_elapsed_s),
            "invalidation_latency": LatencySummary.of(self.inv_latencies).to_dict(),
            "keys_deleted": self.keys_deleted,
            "keys_deleted_per_s": rate(self.keys_deleted, self.inv_elapsed_s),
            "count_mismatches": self.count_mismatches,
            "errors": self.errors[:_MAX_ERROR_TEXTS],
            "hard_cap_hit": self.hard_cap_hit,
            "final_check": {
                "ok": self.ok,
                "final_invalidations": self.final_jobs,
                "survivors": len(self.survivors),
                "lost": len(self.lost),
                "unexpected": len(self.unexpected),
                "examples": (self.survivors + self.lost + self.unexpected)[:10],
            },
        }


class _LoadMetrics:
    """The load generator's own Prometheus instruments (beside the invalidator's)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ops = Counter("clusterinval_loadtest_cache_ops_total",
                           "Cache operations issued by the load generator.",
                           ["phase", "op"], registry=registry)
        self.latency = Histogram("clusterinval_loadtest_cache_latency_seconds",
                                 "Latency of the load generator's cache operations.",
                                 ["phase"], buckets=_CACHE_BUCKETS, registry=registry)
        self.errors = Counter("clusterinval_loadtest_errors_total",
                              "Failed cache operations or invalidations in the load test.",
                              ["source"], registry=registry)

    def on_op(
        self, phase: str, state: LoadState, timeline: Timeline
    ) -> Callable[[bool, float, bool], None]:
        record = timeline.cache_op
        ops_get = self.ops.labels(phase, "get")
        ops_set = self.ops.labels(phase, "set")
        hist = self.latency.labels(phase)
        err = self.errors.labels("cache")

        def note(is_set: bool, latency: float, ok: bool) -> None:
            (ops_set if is_set else ops_get).inc()
            record(is_set, latency, ok)
            state.cache_ops += 1
            if ok:
                hist.observe(latency)
            else:
                err.inc()
                state.errors += 1

        return note


def _picker(space: Keyspace, set_ratio: float) -> Callable[[int], tuple[bool, str]]:
    every = max(1, round(1 / set_ratio)) if set_ratio > 0 else 0

    def pick(n: int) -> tuple[bool, str]:
        # SETs only touch cache:item:*, which no invalidation matches: the keyspace stays known.
        if every and n % every == 0:
            return True, space.item((n * 31) % space.items)
        return False, space.sample_key(n)

    return pick


async def run_loadtest(
    url: str,
    config: LoadConfig,
    *,
    registry: CollectorRegistry | None = None,
    state: LoadState | None = None,
    hard_cap_s: float | None = None,
) -> LoadReport:
    """Run the whole load test against an empty cluster at ``url``; the report says if it passed."""
    state = state or LoadState()
    registry = registry if registry is not None else CollectorRegistry()
    metrics = _LoadMetrics(registry)
    report = LoadReport(config)
    space = Keyspace(config.keys)
    cap = hard_cap_s or (config.baseline_s + config.duration_s + 120.0)
    with anyio.move_on_after(cap) as scope:
        await _phases(url, config, space, report, state, metrics, registry)
    if scope.cancelled_caught:
        report.hard_cap_hit = True
        report.errors.append(f"hard cap of {cap:g} s reached; the run was cut short")
    state.phase = "done"
    return report


async def _phases(
    url: str,
    config: LoadConfig,
    space: Keyspace,
    report: LoadReport,
    state: LoadState,
    metrics: _LoadMetrics,
    registry: CollectorRegistry,
) -> None:
    state.phase, state.phase_started = "fill", time.monotonic()
    report.timeline.phase("fill")
    initial = space.all_keys()
    report.keys_filled = await anyio.to_thread.run_sync(fill_keys, url, initial)
    pick = _picker(space, config.set_ratio)
    client = RedisCluster.from_url(url)
    inv_options: dict[str, Any] = {"timeout_s": 30.0}
    if config.keys_per_second:
        inv_options["keys_per_second"] = config.keys_per_second
    try:
        async with ClusterInvalidator.from_url(url, registry=registry, **inv_options) as inv:
            await client.initialize()
            _enter(state, "baseline", config.baseline_s, report.timeline)
            await run_traffic(client, pick, rate=config.ops_per_second,
                              duration_s=config.baseline_s, workers=config.workers,
                              on_op=metrics.on_op("baseline", state, report.timeline),
                              tally=report.before)
            _enter(state, "load", config.duration_s, report.timeline)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_invalidations, inv, client, space, config, report, state, metrics)
                await run_traffic(client, pick, rate=config.ops_per_second,
                                  duration_s=config.duration_s, workers=config.workers,
                                  on_op=metrics.on_op("load", state, report.timeline),
                                  tally=report.during)
            _enter(state, "check", 0.0, report.timeline)
            removed = await _final_round(inv, space, report)
    finally:
        await client.aclose()
    expected = set(initial) - removed
    present = {k.decode() for k in await anyio.to_thread.run_sync(scan_all_keys, url)}
    report.survivors = sorted(present & removed)
    report.lost = sorted(expected - present)
    report.unexpected = sorted(present - expected - removed)


def _enter(state: LoadState, phase: str, length: float, timeline: Timeline) -> None:
    state.phase, state.phase_started, state.phase_length_s = phase, time.monotonic(), length
    timeline.phase(phase)


async def _invalidations(
    inv: ClusterInvalidator,
    client: RedisCluster,
    space: Keyspace,
    config: LoadConfig,
    report: LoadReport,
    state: LoadState,
    metrics: _LoadMetrics,
) -> None:
    """Invalidate at the target rate until the load phase ends, writing back what went."""
    start = anyio.current_time()
    until = start + config.duration_s
    interval = 1.0 / config.invalidations_per_second
    due = start
    failed = metrics.errors.labels("invalidation")
    for n in range(config.max_invalidations):
        now = anyio.current_time()
        if now >= until:
            break
        if due > now:
            await anyio.sleep(due - now)  # pacing to the target rate
        due = max(due + interval, anyio.current_time() - interval)
        job = space.job(n)
        ok = await _run_job(inv, job, report)
        if ok:
            state.invalidations += 1
            state.keys_deleted = report.keys_deleted
        else:
            failed.inc()
            state.errors += 1
        # Write the family back so the next invalidation of it has the same work to do.
        await _refill(client, job.removes)
    report.inv_elapsed_s = anyio.current_time() - start


async def _run_job(inv: ClusterInvalidator, job: Job, report: LoadReport) -> bool:
    t0 = time.perf_counter()
    started = report.timeline.now()
    try:
        result = await inv.invalidate(keys=list(job.keys) or None,
                                      patterns=list(job.patterns) or None,
                                      operation_name=job.operation_name)
    except ClusterInvalError as exc:
        report.timeline.invalidation(started, 0, False, job.kind)
        report.invalidations_failed += 1
        report.errors.append(f"{job.kind}: {exc}")
        return False
    report.timeline.invalidation(started, result.deleted, True, job.kind)
    report.inv_latencies.append(time.perf_counter() - t0)
    report.invalidations += 1
    report.keys_deleted += result.deleted
    report.by_kind[job.kind] = report.by_kind.get(job.kind, 0) + 1
    if result.deleted != len(job.removes):
        report.count_mismatches += 1
        report.errors.append(
            f"{job.kind}: deleted {result.deleted}, expected {len(job.removes)} "
            f"(keys={list(job.keys)[:2]} patterns={list(job.patterns)})"
        )
    return True


async def _refill(client: RedisCluster, keys: tuple[str, ...]) -> None:
    if not keys:
        return
    with anyio.fail_after(30.0):
        await client.mset_nonatomic(dict.fromkeys(keys, b"v"))


async def _final_round(inv: ClusterInvalidator, space: Keyspace, report: LoadReport) -> set[str]:
    """One invalidation of each kind, not written back; returns the keys they must have removed."""
    removed: set[str] = set()
    # The load phase's figures stay those of the load phase; failures here still count.
    kept = (report.invalidations, report.keys_deleted, dict(report.by_kind),
            list(report.inv_latencies))
    base = 4 * math.ceil(max(report.invalidations, 1) / 4) + 4
    for n in range(base, base + 4):
        job = space.job(n)
        await _run_job(inv, job, report)
        removed.update(job.removes)
        report.final_jobs += 1
    report.invalidations, report.keys_deleted, report.by_kind, report.inv_latencies = kept
    return removed
