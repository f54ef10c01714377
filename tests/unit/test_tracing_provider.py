"""Spans follow the application's tracer provider: none made until one is configured."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is missing")

_SCRIPT = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from clusterinval import tracing

with tracing.invalidation_span("before", keys=1, patterns=0, dry_run=False) as run:
    assert run._span is None, "a span was made with no tracer provider configured"
with tracing.node_pass_span("n:1", match="a*"):
    pass

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
with tracing.invalidation_span("after", keys=1, patterns=0, dry_run=False) as run:
    with tracing.node_pass_span("n:1", match="a*"):
        pass
names = sorted(s.name for s in exporter.get_finished_spans())
print(",".join(names))
"""


def test_spans_start_once_a_provider_is_configured() -> None:
    """No span while the API has no provider; a provider set later gets every span."""
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "clusterinval.invalidate,clusterinval.node_pass"
