"""OpenTelemetry spans of real invalidations, read back with the SDK's in-memory exporter."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from clusterinval import ClusterInvalidator, ClusterPermissionError, InvalidationError
from clusterinval import tracing as ci_tracing
from clusterinval.result import InvalidationResult

trace = pytest.importorskip("opentelemetry.trace", reason="the tracing extra is not installed")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is missing")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="session")
def session_exporter() -> InMemorySpanExporter:
    """One SDK tracer provider for the session (OpenTelemetry allows setting it once)."""
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "another tracer provider was set first"
    return exporter


@pytest.fixture
def spans(session_exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """The exporter, emptied before and after the test."""
    session_exporter.clear()
    yield session_exporter
    session_exporter.clear()


def fill(client: redis.RedisCluster, keys: list[str]) -> None:
    pipe = client.pipeline()  # type: ignore[no-untyped-call]
    for key in keys:
        pipe.set(key, b"v")
    pipe.execute()


def by_name(exporter: InMemorySpanExporter, name: str) -> list[sdk_trace.ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_one_span_per_run_and_one_child_per_node_pass(
    cluster_url: str, client: redis.RedisCluster, spans: InMemorySpanExporter
) -> None:
    assert ci_tracing.enabled()
    fill(client, [f"traced:{i}" for i in range(120)] + ["traced", "other:1"])
    async with ClusterInvalidator.from_url(cluster_url) as inv:
        result = await inv.invalidate(keys=["traced"], patterns=["traced:*"],
                                      operation_name="traced")
    [run] = by_name(spans, ci_tracing.RUN_SPAN)
    attrs = dict(run.attributes or {})
    assert attrs["clusterinval.operation"] == "traced"
    assert attrs["clusterinval.keys_requested"] == 1
    assert attrs["clusterinval.patterns"] == 1
    assert attrs["clusterinval.dry_run"] is False
    assert attrs["clusterinval.deleted"] == result.deleted == 121
    assert attrs["clusterinval.scanned"] == result.scanned > 0
    assert attrs["clusterinval.matched"] == result.matched
    assert attrs["clusterinval.complete"] is True
    assert attrs["clusterinval.merged_with"] == 0
    assert run.status.status_code == trace.StatusCode.UNSET

    passes = by_name(spans, ci_tracing.NODE_PASS_SPAN)
    assert passes, "no node pass span"
    assert all(p.parent is not None and p.parent.span_id == run.context.span_id for p in passes)
    assert all(p.context.trace_id == run.context.trace_id for p in passes)
    assert {(p.attributes or {})["clusterinval.node"] for p in passes} == {
        n.node for n in result.nodes}
    assert {(p.attributes or {})["clusterinval.match"] for p in passes} == {"traced:*"}


async def test_dry_run_is_marked(
    cluster_url: str, client: redis.RedisCluster, spans: InMemorySpanExporter
) -> None:
    fill(client, ["dry:1", "dry:2"])
    async with ClusterInvalidator.from_url(cluster_url) as inv:
        await inv.invalidate(patterns=["dry:*"], operation_name="dry", dry_run=True)
    [run] = by_name(spans, ci_tracing.RUN_SPAN)
    attrs = dict(run.attributes or {})
    assert attrs["clusterinval.dry_run"] is True
    assert attrs["clusterinval.matched"] == 2 and attrs["clusterinval.deleted"] == 0


async def test_refused_run_is_an_error_span(
    cluster_url: str, client: redis.RedisCluster, spans: InMemorySpanExporter
) -> None:
    # A user whose ACL forbids UNLINK, SCAN and scripting: the servers refuse the run. (With
    # scripting allowed the slot walk reads slots without SCAN and, finding no match, has
    # nothing to refuse.)
    url = cluster_url.replace("redis://", "redis://tracer:pw@")
    for node in client.get_primaries():
        client.execute_command("ACL", "SETUSER", "tracer", "on", ">pw", "~*", "+@all",
                               "-unlink", "-scan", "-del", "-@scripting", target_nodes=node)
    try:
        async with ClusterInvalidator.from_url(url, retries=0) as inv:
            # Refused outright, or ended incomplete (a server step refused on every node).
            with pytest.raises((ClusterPermissionError, InvalidationError)) as caught:
                await inv.invalidate(patterns=["denied:*"], operation_name="denied")
    finally:
        for node in client.get_primaries():
            client.execute_command("ACL", "DELUSER", "tracer", target_nodes=node)
    [run] = by_name(spans, ci_tracing.RUN_SPAN)
    assert run.status.status_code == trace.StatusCode.ERROR
    if isinstance(caught.value, ClusterPermissionError):
        assert any(e.name == "exception" for e in run.events)
    else:
        assert (run.attributes or {})["clusterinval.complete"] is False
        failed = [p for p in by_name(spans, ci_tracing.NODE_PASS_SPAN)
                  if p.status.status_code == trace.StatusCode.ERROR]
        assert failed and all(any(e.name == "exception" for e in p.events) for p in failed)


def test_incomplete_result_marks_the_span(spans: InMemorySpanExporter) -> None:
    result = InvalidationResult(operation="partial", deleted=3, matched=3, scanned=10,
                                complete=False, duration_s=0.1, uncovered_slots=((0, 99),))
    with ci_tracing.invalidation_span("partial", keys=0, patterns=1, dry_run=False) as span:
        span.record(result, merged_with=2)
    [run] = by_name(spans, ci_tracing.RUN_SPAN)
    attrs = dict(run.attributes or {})
    assert attrs["clusterinval.complete"] is False
    assert attrs["clusterinval.uncovered_slots"] == 100
    assert attrs["clusterinval.merged_with"] == 2
    assert run.status.status_code == trace.StatusCode.ERROR
    assert "100 slots" in (run.status.description or "")


def test_no_op_without_opentelemetry(cluster_url: str, client: redis.RedisCluster) -> None:
    """With opentelemetry unimportable, invalidations work and no span is made."""
    client.set("plain:1", b"v")
    script = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"  # import fails as if it were not installed
        "import asyncio\n"
        "from clusterinval import ClusterInvalidator, tracing\n"
        "assert not tracing.enabled()\n"
        "async def main():\n"
        f"    async with ClusterInvalidator.from_url({cluster_url!r}) as inv:\n"
        "        r = await inv.invalidate(patterns=['plain:*'], operation_name='plain')\n"
        "    print(r.deleted)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ), check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
    assert client.exists("plain:1") == 0
