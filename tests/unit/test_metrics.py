"""Metrics bookkeeping: labels, counts, the cardinality cap, registries, exposition and push."""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from clusterinval.errors import InvalidInputError, InvalidOperationNameError
from clusterinval.exposition import push_metrics, start_metrics_server
from clusterinval.metrics import (
    DURATION_BUCKETS,
    ERROR_KINDS,
    METRIC_NAMES,
    OUTCOMES,
    Metrics,
)
from clusterinval.result import InvalidationResult, NodeResult

NODES = (
    NodeResult("127.0.0.1:7000", deleted=3, matched=3, scanned=40, scan_calls=1, duration_s=0.02),
    NodeResult("127.0.0.1:7001", deleted=2, matched=2, scanned=35, scan_calls=2, duration_s=0.3),
    NodeResult("127.0.0.1:7002", deleted=0, matched=0, scanned=25, scan_calls=1, duration_s=2.0),
)
# What an exact-key-only run reports: nodes that only unlinked, without a scan.
UNLINK_ONLY = (
    NodeResult("127.0.0.1:7000", deleted=1, unlink_calls=1),
    NodeResult("127.0.0.1:7002", deleted=1, unlink_calls=1),
)


def result(
    *,
    deleted: int = 5,
    matched: int = 5,
    scanned: int = 100,
    complete: bool = True,
    duration_s: float = 0.2,
    dry_run: bool = False,
    nodes: tuple[NodeResult, ...] = NODES,
) -> InvalidationResult:
    """An InvalidationResult with the given figures (operation name is irrelevant to metrics)."""
    return InvalidationResult(
        operation="ignored", deleted=deleted, matched=matched, scanned=scanned,
        complete=complete, duration_s=duration_s, dry_run=dry_run, nodes=nodes,
    )


class Reader:
    """Reads samples back from a registry; absent samples read as None."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def bucket(self, name: str, le: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(f"{name}_bucket", {**labels, "le": le})


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


@pytest.fixture
def read(registry: CollectorRegistry) -> Reader:
    return Reader(registry)


def run(metrics: Metrics, op: str, res: InvalidationResult, outcome: str) -> str:
    """Drive one run the way the invalidator does: label, started, finished."""
    label = metrics.operation_label(op)
    metrics.run_started(label)
    metrics.run_finished(label, res, outcome)  # type: ignore[arg-type]
    return label


class TestOutcomes:
    def test_complete_run_updates_every_instrument(self, metrics: Metrics, read: Reader) -> None:
        run(metrics, "catalog", result(), "complete")
        assert read.value("clusterinval_invalidations_total", operation="catalog",
                          outcome="complete") == 1
        assert read.value("clusterinval_invalidations_total", operation="catalog",
                          outcome="partial") == 0
        assert read.value("clusterinval_invalidations_total", operation="catalog",
                          outcome="failed") == 0
        assert read.value("clusterinval_keys_deleted_total", operation="catalog") == 5
        assert read.value("clusterinval_keys_matched_total", operation="catalog") == 5
        assert read.value("clusterinval_keys_scanned_total", operation="catalog") == 100
        assert read.value("clusterinval_dry_runs_total", operation="catalog") == 0
        assert read.value("clusterinval_invalidations_in_progress", operation="catalog") == 0
        assert read.value("clusterinval_invalidation_duration_seconds_count",
                          operation="catalog") == 1
        assert read.value("clusterinval_invalidation_duration_seconds_sum",
                          operation="catalog") == pytest.approx(0.2)
        assert read.bucket("clusterinval_invalidation_duration_seconds", "0.1",
                           operation="catalog") == 0
        assert read.bucket("clusterinval_invalidation_duration_seconds", "0.25",
                           operation="catalog") == 1
        assert read.value("clusterinval_keys_per_invalidation_count", operation="catalog") == 1
        assert read.value("clusterinval_keys_per_invalidation_sum", operation="catalog") == 5
        assert read.bucket("clusterinval_keys_per_invalidation", "1.0", operation="catalog") == 0
        assert read.bucket("clusterinval_keys_per_invalidation", "5.0", operation="catalog") == 1
        last = read.value("clusterinval_last_success_timestamp_seconds", operation="catalog")
        assert last is not None and last > 1.7e9

    def test_node_scan_work_is_labelled_by_node(self, metrics: Metrics, read: Reader) -> None:
        run(metrics, "catalog", result(), "complete")
        for node in NODES:
            labels = {"operation": "catalog", "node": node.node}
            assert read.value("clusterinval_node_scan_duration_seconds_count", **labels) == 1
            assert read.value("clusterinval_node_scan_duration_seconds_sum",
                              **labels) == pytest.approx(node.duration_s)
            assert read.value("clusterinval_node_keys_scanned_total", **labels) == node.scanned
        assert read.bucket("clusterinval_node_scan_duration_seconds", "1.0",
                           operation="catalog", node="127.0.0.1:7002") == 0
        assert read.bucket("clusterinval_node_scan_duration_seconds", "5.0",
                           operation="catalog", node="127.0.0.1:7002") == 1

    def test_partial_run(self, metrics: Metrics, read: Reader) -> None:
        run(metrics, "users", result(deleted=7, matched=9, complete=False), "partial")
        assert read.value("clusterinval_invalidations_total", operation="users",
                          outcome="partial") == 1
        assert read.value("clusterinval_invalidations_total", operation="users",
                          outcome="complete") == 0
        assert read.value("clusterinval_keys_deleted_total", operation="users") == 7
        assert read.value("clusterinval_keys_matched_total", operation="users") == 9
        # What a partial run deleted is still a run's worth of keys.
        assert read.value("clusterinval_keys_per_invalidation_sum", operation="users") == 7
        # No success: the timestamp series is never created.
        assert read.value("clusterinval_last_success_timestamp_seconds", operation="users") is None
        assert read.value("clusterinval_invalidations_in_progress", operation="users") == 0

    def test_failed_run(self, metrics: Metrics, read: Reader) -> None:
        empty = result(deleted=0, matched=0, scanned=0, complete=False, duration_s=0.004, nodes=())
        run(metrics, "users", empty, "failed")
        metrics.error("users", "connection")
        assert read.value("clusterinval_invalidations_total", operation="users",
                          outcome="failed") == 1
        assert read.value("clusterinval_errors_total", operation="users",
                          error="connection") == 1
        assert read.value("clusterinval_invalidation_duration_seconds_count",
                          operation="users") == 1
        # A failed run has no key count to report: the histogram stays empty.
        assert read.value("clusterinval_keys_per_invalidation_count", operation="users") == 0
        assert read.value("clusterinval_invalidations_in_progress", operation="users") == 0

    def test_dry_run_counts_matches_not_deletions(self, metrics: Metrics, read: Reader) -> None:
        run(metrics, "probe", result(deleted=0, matched=12, dry_run=True), "complete")
        assert read.value("clusterinval_dry_runs_total", operation="probe") == 1
        assert read.value("clusterinval_invalidations_total", operation="probe",
                          outcome="complete") == 1
        assert read.value("clusterinval_keys_matched_total", operation="probe") == 12
        assert read.value("clusterinval_keys_deleted_total", operation="probe") == 0
        assert read.value("clusterinval_keys_scanned_total", operation="probe") == 100
        assert read.value("clusterinval_keys_per_invalidation_count", operation="probe") == 0

    def test_dry_run_never_counts_deleted_even_if_result_says_so(
        self, metrics: Metrics, read: Reader
    ) -> None:
        run(metrics, "probe", result(deleted=3, matched=3, dry_run=True), "complete")
        assert read.value("clusterinval_keys_deleted_total", operation="probe") == 0

    def test_exact_key_only_run(self, metrics: Metrics, read: Reader) -> None:
        exact = result(deleted=2, matched=0, scanned=0, duration_s=0.0008, nodes=UNLINK_ONLY)
        run(metrics, "project", exact, "complete")
        assert read.value("clusterinval_keys_deleted_total", operation="project") == 2
        assert read.value("clusterinval_keys_scanned_total", operation="project") == 0
        assert read.bucket("clusterinval_invalidation_duration_seconds", "0.001",
                           operation="project") == 1
        assert read.value("clusterinval_keys_per_invalidation_sum", operation="project") == 2
        # Nodes that only unlinked exact keys did no scan work: no per-node series at all.
        for node in UNLINK_ONLY:
            assert read.value("clusterinval_node_scan_duration_seconds_count",
                              operation="project", node=node.node) is None
            assert read.value("clusterinval_node_keys_scanned_total",
                              operation="project", node=node.node) is None

    def test_in_progress_gauge_rises_and_falls(self, metrics: Metrics, read: Reader) -> None:
        metrics.run_started("a")
        metrics.run_started("a")
        assert read.value("clusterinval_invalidations_in_progress", operation="a") == 2
        metrics.run_finished("a", result(), "complete")
        assert read.value("clusterinval_invalidations_in_progress", operation="a") == 1

    def test_unknown_outcome_is_refused(self, metrics: Metrics) -> None:
        with pytest.raises(InvalidInputError):
            metrics.run_finished("a", result(), "maybe")  # type: ignore[arg-type]

    def test_duration_buckets_span_1ms_to_5min(self) -> None:
        assert DURATION_BUCKETS[0] == 0.001
        assert DURATION_BUCKETS[-1] == 300.0
        assert list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)


class TestErrors:
    def test_every_kind_is_exported_as_zero_once_an_operation_is_seen(
        self, metrics: Metrics, read: Reader
    ) -> None:
        metrics.operation_label("cache")
        for kind in ERROR_KINDS:
            assert read.value("clusterinval_errors_total", operation="cache", error=kind) == 0
        for outcome in OUTCOMES:
            assert read.value("clusterinval_invalidations_total", operation="cache",
                              outcome=outcome) == 0

    def test_error_counts_by_kind(self, metrics: Metrics, read: Reader) -> None:
        metrics.error("cache", "tryagain")
        metrics.error("cache", "tryagain")
        metrics.error("cache", "input")
        assert read.value("clusterinval_errors_total", operation="cache", error="tryagain") == 2
        assert read.value("clusterinval_errors_total", operation="cache", error="input") == 1
        assert read.value("clusterinval_errors_total", operation="cache", error="timeout") == 0

    def test_unknown_kind_counts_as_other(self, metrics: Metrics, read: Reader) -> None:
        metrics.error("cache", "bogus")  # type: ignore[arg-type]
        assert read.value("clusterinval_errors_total", operation="cache", error="other") == 1
        assert read.value("clusterinval_errors_total", operation="cache", error="bogus") is None


class TestCardinalityCap:
    def test_names_beyond_the_cap_fold_with_one_warning(
        self, registry: CollectorRegistry, read: Reader, caplog: pytest.LogCaptureFixture
    ) -> None:
        metrics = Metrics(registry, max_operations=3)
        with caplog.at_level(logging.WARNING, logger="clusterinval.metrics"):
            labels = [metrics.operation_label(f"user_{i}") for i in range(10)]
        assert labels[:3] == ["user_0", "user_1", "user_2"]
        assert labels[3:] == ["other"] * 7
        warnings = [r for r in caplog.records if r.name == "clusterinval.metrics"]
        assert len(warnings) == 1
        assert warnings[0].levelno == logging.WARNING
        assert "user_3" in warnings[0].getMessage()
        # Names admitted before the cap keep their own label.
        assert metrics.operation_label("user_1") == "user_1"
        for i in range(10):
            run(metrics, f"user_{i}", result(), "complete")
        assert read.value("clusterinval_invalidations_total", operation="other",
                          outcome="complete") == 7
        assert read.value("clusterinval_invalidations_total", operation="user_5",
                          outcome="complete") is None
        ops = {
            s.labels["operation"]
            for fam in registry.collect() if fam.name == "clusterinval_invalidations"
            for s in fam.samples
        }
        assert ops == {"user_0", "user_1", "user_2", "other"}

    def test_custom_overflow_label(self, registry: CollectorRegistry) -> None:
        metrics = Metrics(registry, max_operations=1, overflow_label="folded")
        assert metrics.operation_label("a") == "a"
        assert metrics.operation_label("b") == "folded"
        assert metrics.operation_label("folded") == "folded"

    def test_run_methods_apply_the_cap_themselves(
        self, registry: CollectorRegistry, read: Reader
    ) -> None:
        metrics = Metrics(registry, max_operations=1)
        metrics.run_started("first")
        metrics.run_started("second")
        metrics.error("third", "timeout")
        assert read.value("clusterinval_invalidations_in_progress", operation="other") == 1
        assert read.value("clusterinval_errors_total", operation="other", error="timeout") == 1
        assert read.value("clusterinval_invalidations_in_progress", operation="second") is None

    @pytest.mark.parametrize("bad", ["", "1abc", "a b", "x" * 65, "user/42", "é"])
    def test_invalid_names_are_refused(self, metrics: Metrics, bad: str) -> None:
        with pytest.raises(InvalidOperationNameError):
            metrics.operation_label(bad)

    def test_non_string_name_is_refused(self, metrics: Metrics) -> None:
        with pytest.raises(InvalidOperationNameError):
            metrics.operation_label(42)  # type: ignore[arg-type]

    @pytest.mark.parametrize("kwargs", [{"max_operations": 0}, {"max_operations": True},
                                        {"overflow_label": "no spaces"}])
    def test_bad_settings_are_refused(self, registry: CollectorRegistry,
                                      kwargs: dict[str, object]) -> None:
        with pytest.raises(InvalidInputError):
            Metrics(registry, **kwargs)  # type: ignore[arg-type]


class TestRegistries:
    def test_default_registry_is_the_global_one(self) -> None:
        assert Metrics().registry is REGISTRY

    def test_custom_registry_is_isolated(self, read: Reader) -> None:
        other = CollectorRegistry()
        run(Metrics(other), "iso", result(), "complete")
        assert read.value("clusterinval_invalidations_total", operation="iso",
                          outcome="complete") is None
        assert other.get_sample_value("clusterinval_invalidations_total",
                                      {"operation": "iso", "outcome": "complete"}) == 1

    def test_two_metrics_share_one_registry(self, registry: CollectorRegistry,
                                            read: Reader) -> None:
        first = Metrics(registry)
        second = Metrics(registry)  # must not raise "Duplicated timeseries"
        run(first, "shared", result(deleted=1), "complete")
        run(second, "shared", result(deleted=2), "complete")
        assert read.value("clusterinval_invalidations_total", operation="shared",
                          outcome="complete") == 2
        assert read.value("clusterinval_keys_deleted_total", operation="shared") == 3

    def test_cap_counts_names_across_objects_on_one_registry(
        self, registry: CollectorRegistry
    ) -> None:
        first = Metrics(registry, max_operations=2)
        second = Metrics(registry, max_operations=2)
        assert first.operation_label("a") == "a"
        assert second.operation_label("b") == "b"
        assert first.operation_label("c") == "other"
        assert second.operation_label("a") == "a"

    def test_exported_families_match_metric_names(self, metrics: Metrics,
                                                  registry: CollectorRegistry) -> None:
        run(metrics, "x", result(), "complete")
        exported = set()
        for fam in registry.collect():
            suffix = "_total" if fam.type == "counter" else ""
            exported.add(fam.name + suffix)
        assert exported == set(METRIC_NAMES)


@dataclass
class _Recorded:
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def gateway() -> Iterator[tuple[str, _Recorded]]:
    """A tiny HTTP server on 127.0.0.1 that records what a Pushgateway would receive."""
    recorded = _Recorded()

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            recorded.requests.append((self.command, self.path, self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()
            recorded.arrived.set()

        do_POST = _record
        do_PUT = _record

        def log_message(self, format: str, *args: object) -> None:  # quiet test output
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorded
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class TestExposition:
    def test_push_metrics_posts_the_registry(
        self, gateway: tuple[str, _Recorded], metrics: Metrics, registry: CollectorRegistry
    ) -> None:
        url, recorded = gateway
        run(metrics, "batch", result(deleted=4), "complete")
        push_metrics(url, "clusterinval", registry, {"instance": "host-1"})
        assert recorded.arrived.wait(5)
        method, path, body = recorded.requests[0]
        assert method == "POST"  # pushadd: replaces only the pushed metric names
        assert path == "/metrics/job/clusterinval/instance/host-1"
        text = body.decode()
        assert 'clusterinval_keys_deleted_total{operation="batch"} 4.0' in text
        assert 'clusterinval_invalidations_total{operation="batch",outcome="complete"} 1.0' in text

    def test_push_to_a_closed_port_raises_oserror(self, registry: CollectorRegistry) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        port = server.server_address[1]
        server.server_close()  # nothing listens there now
        with pytest.raises(OSError):
            push_metrics(f"http://127.0.0.1:{port}", "clusterinval", registry, timeout_s=2)

    def test_push_refuses_empty_job(self, registry: CollectorRegistry) -> None:
        with pytest.raises(InvalidInputError):
            push_metrics("http://127.0.0.1:1", "", registry)

    def test_metrics_server_serves_and_stops(self, metrics: Metrics,
                                             registry: CollectorRegistry) -> None:
        run(metrics, "served", result(), "complete")
        server = start_metrics_server(0, registry=registry)
        with server:
            assert server.port > 0
            assert server.url == f"http://127.0.0.1:{server.port}/metrics"
            with urllib.request.urlopen(server.url, timeout=5) as resp:
                body = resp.read().decode()
            assert 'clusterinval_keys_scanned_total{operation="served"} 100.0' in body
        with pytest.raises(OSError):
            urllib.request.urlopen(server.url, timeout=2)
        server.close()  # idempotent

    def test_metrics_server_refuses_bad_port(self) -> None:
        with pytest.raises(InvalidInputError):
            start_metrics_server(70000)
