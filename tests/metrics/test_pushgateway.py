"""Pushing a run's metrics to a real Pushgateway, from the library and from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from prom_server import Pushgateway
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from clusterinval import ClusterInvalidator
from clusterinval.exposition import push_metrics
from clusterinval.testing.fill import fill_keys

pytestmark = pytest.mark.prometheus


def pushed_value(gateway: Pushgateway, sample: str, **labels: str) -> float | None:
    """The value the gateway holds for ``sample`` with (at least) ``labels``, or None."""
    for family in text_string_to_metric_families(gateway.metrics_text()):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


@pytest.mark.anyio
async def test_push_metrics_of_a_real_run(pushgateway: Pushgateway, cluster_url: str) -> None:
    fill_keys(cluster_url, [f"push:lib:{i}" for i in range(50)])
    registry = CollectorRegistry()
    async with ClusterInvalidator.from_url(cluster_url, registry=registry) as inv:
        result = await inv.invalidate(patterns=["push:lib:*"], operation_name="push_lib")
    assert result.deleted == 50
    push_metrics(pushgateway.url, "clusterinval_test", registry, {"instance": "lib"})
    labels = {"job": "clusterinval_test", "instance": "lib", "operation": "push_lib"}
    assert pushed_value(pushgateway, "clusterinval_keys_deleted_total", **labels) == 50
    assert pushed_value(pushgateway, "clusterinval_invalidations_total",
                        outcome="complete", **labels) == 1
    assert pushed_value(pushgateway, "clusterinval_invalidation_duration_seconds_count",
                        **labels) == 1
    # A second push of the same group replaces the values (Pushgateway semantics: a snapshot).
    fill_keys(cluster_url, [f"push:lib:{i}" for i in range(7)])
    second = CollectorRegistry()
    async with ClusterInvalidator.from_url(cluster_url, registry=second) as inv:
        await inv.invalidate(patterns=["push:lib:*"], operation_name="push_lib")
    push_metrics(pushgateway.url, "clusterinval_test", second, {"instance": "lib"})
    assert pushed_value(pushgateway, "clusterinval_keys_deleted_total", **labels) == 7


def test_cli_pushgateway_option(pushgateway: Pushgateway, cluster_url: str) -> None:
    fill_keys(cluster_url, [f"push:cli:{i}" for i in range(12)])
    cli = Path(sys.executable).with_name("clusterinval")
    if not cli.exists():
        pytest.skip(f"the clusterinval console script is not installed next to {sys.executable}")
    out = subprocess.run(
        [str(cli), "invalidate", "--url", cluster_url, "--pattern", "push:cli:*",
         "--operation", "push_cli", "--json", "--pushgateway", pushgateway.url],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["deleted"] == 12
    labels = {"job": "clusterinval", "operation": "push_cli"}
    assert pushed_value(pushgateway, "clusterinval_keys_deleted_total", **labels) == 12
    scanned = pushed_value(pushgateway, "clusterinval_keys_scanned_total", **labels)
    assert scanned is not None and scanned >= 12
