"""The Grafana dashboard against the library's real metrics, scraped by a real Prometheus.

Real invalidations run against the test cluster with a registry served by the library's exporter;
every PromQL expression in ``grafana/dashboards/clusterinval.json`` (panel targets and query
variables) is then evaluated through Prometheus's HTTP API and must return data.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prom_server import PrometheusServer, find_binary, wait_for
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator, InvalidPatternError
from clusterinval.metrics import METRIC_NAMES, Metrics
from clusterinval.result import InvalidationResult, NodeResult
from clusterinval.testing.fill import fill_keys

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "clusterinval.json"
COMPOSE_PROMETHEUS = ROOT / "docker" / "prometheus.yml"

OPS = ("dash_catalog", "dash_users")
# What Grafana would put in place of its variables when the queries run.
SUBSTITUTIONS = {
    "operation": "|".join(OPS),
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "10m",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<expr>.+),\s*)?(?P<label>\w+)\s*\)\s*$", re.S)
_METRIC = re.compile(r"\bclusterinval_[a-z0-9_]+\b")


# -- the checker -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DashboardQuery:
    """One PromQL expression of the dashboard and where it came from."""

    where: str
    expr: str
    label: str | None = None  # set for label_values(expr, label) variables


def dashboard_queries(dashboard: dict[str, Any]) -> list[DashboardQuery]:
    """Every PromQL expression in the dashboard: panel targets (rows included) and variables."""
    found: list[DashboardQuery] = []

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append(DashboardQuery(
                    f"panel {panel.get('title')!r} target {target.get('refId')}", target["expr"]))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        match = _LABEL_VALUES.match(text)
        where = f"variable ${var.get('name')}"
        if match:
            found.append(DashboardQuery(where, match["expr"] or "", label=match["label"]))
        elif text:
            found.append(DashboardQuery(where, text))
    return found


def substitute(expr: str, values: dict[str, str]) -> str:
    """``expr`` with Grafana's variables replaced; an unknown variable is an error."""

    def one(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if name not in values:
            raise KeyError(f"unknown dashboard variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(one, expr)


def check_dashboard(dashboard: dict[str, Any], prom: PrometheusServer) -> list[str]:
    """Each query that errors or returns no data, as a readable line (empty list: all good)."""
    problems: list[str] = []
    for q in dashboard_queries(dashboard):
        try:
            expr = substitute(q.expr, SUBSTITUTIONS)
        except KeyError as exc:
            problems.append(f"{q.where}: {exc}")
            continue
        if q.label is not None and not expr:
            body = prom.api(f"/api/v1/label/{q.label}/values")
            if not body.get("data"):
                problems.append(f"{q.where}: no values for label {q.label}")
            continue
        if q.label is not None:
            expr = f"group by ({q.label}) ({expr})"
        body = prom.api("/api/v1/query", query=expr)
        if body.get("status") != "success":
            problems.append(f"{q.where}: {expr!r} failed: {body.get('error')}")
        elif not body["data"]["result"]:
            problems.append(f"{q.where}: {expr!r} returned no data")
        elif q.label is not None and not all(
            r["metric"].get(q.label) for r in body["data"]["result"]
        ):
            problems.append(f"{q.where}: {expr!r} has series without label {q.label}")
    return problems


def metric_names_used(dashboard: dict[str, Any]) -> set[str]:
    """Every clusterinval_* name that appears in the dashboard's queries."""
    return {name for q in dashboard_queries(dashboard) for name in _METRIC.findall(q.expr)}


def exported_sample_names() -> set[str]:
    """Every sample name the library exports once each instrument has been used."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    done = InvalidationResult(
        operation="x", deleted=1, matched=1, scanned=5, complete=True, duration_s=0.01,
        nodes=(NodeResult("127.0.0.1:7000", deleted=1, matched=1, scanned=5, scan_calls=1,
                          duration_s=0.01),),
    )
    label = metrics.operation_label("x")
    metrics.run_started(label)
    metrics.run_finished(label, done, "complete")
    metrics.error(label, "timeout")
    return {s.name for fam in registry.collect() for s in fam.samples}


def unknown_metric_names(dashboard: dict[str, Any]) -> set[str]:
    """Names used by the dashboard that the library does not export."""
    return metric_names_used(dashboard) - exported_sample_names()


def doctored(dashboard: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A copy whose first panel query uses a metric the library does not export."""
    copy_ = copy.deepcopy(dashboard)
    for panel in copy_["panels"]:
        for target in panel.get("targets", []):
            if target.get("expr"):
                target["expr"] = _METRIC.sub("clusterinval_keys_vaporised_total", target["expr"])
                return copy_, str(panel["title"])
    raise AssertionError("dashboard has no panel query")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


# -- static checks (no server) -----------------------------------------------------------------


class TestDashboardShape:
    def test_variables(self, dashboard: dict[str, Any]) -> None:
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        op = variables["operation"]
        assert op["type"] == "query"
        assert op["multi"] is True and op["includeAll"] is True
        assert op["query"]["query"] == "label_values(clusterinval_invalidations_total, operation)"

    def test_every_panel_uses_the_datasource_variable(self, dashboard: dict[str, Any]) -> None:
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", panel["title"]
                if "clusterinval_shared_pass_calls" in target["expr"]:
                    continue  # one pass serves several operations: no operation label
                assert 'operation=~"$operation"' in target["expr"], panel["title"]

    def test_panel_ids_unique_and_required_panels_present(
        self, dashboard: dict[str, Any]
    ) -> None:
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        titles = {p["title"] for p in dashboard["panels"]}
        for required in (
            "Invalidation rate by operation", "Keys deleted per second by operation",
            "Invalidation duration p50 / p95 / p99", "Errors by kind",
            "Partial and failed outcomes", "Keys scanned per key deleted",
            "Per-node scan time (share of wall time)", "Invalidations in progress",
        ):
            assert required in titles

    def test_dashboard_uses_only_exported_metrics(self, dashboard: dict[str, Any]) -> None:
        assert unknown_metric_names(dashboard) == set()

    def test_every_exported_metric_is_on_the_dashboard(self, dashboard: dict[str, Any]) -> None:
        used = metric_names_used(dashboard)
        for name in METRIC_NAMES:
            assert any(u == name or u.startswith(f"{name}_") for u in used), name

    def test_static_check_catches_an_unknown_metric(self, dashboard: dict[str, Any]) -> None:
        bad, _title = doctored(dashboard)
        assert unknown_metric_names(bad) == {"clusterinval_keys_vaporised_total"}

    def test_extraction_finds_targets_and_variables(self, dashboard: dict[str, Any]) -> None:
        queries = dashboard_queries(dashboard)
        targets = sum(len(p.get("targets", [])) for p in dashboard["panels"])
        assert len(queries) == targets + 1
        assert any(q.label == "operation" for q in queries)

    def test_unknown_variable_is_an_error(self) -> None:
        with pytest.raises(KeyError):
            substitute("rate(x[$__nope])", SUBSTITUTIONS)
        assert substitute('a{o=~"${operation:regex}"}[$__rate_interval]', SUBSTITUTIONS) == (
            f'a{{o=~"{SUBSTITUTIONS["operation"]}"}}[1m]'
        )


# -- against a real Prometheus -----------------------------------------------------------------


def _ingested(prom: PrometheusServer, expected: float) -> bool:
    ops = "|".join(OPS)
    got = prom.scalar(f'sum(clusterinval_invalidations_total{{operation=~"{ops}"}})')
    return got == expected


async def _workload(url: str, registry: CollectorRegistry, round_: int) -> int:
    """Real invalidations of every kind; returns how many runs were counted."""
    keys = [f"dash:{round_}:cat:{i}" for i in range(300)]
    keys += [f"dash:{round_}:user:{i}" for i in range(120)]
    keys += [f"dash:{round_}:exact:{i}" for i in range(4)]
    fill_keys(url, keys)
    runs = 0
    async with ClusterInvalidator.from_url(url, registry=registry) as inv:
        dry = await inv.invalidate(patterns=[f"dash:{round_}:cat:*"], operation_name=OPS[0],
                                   dry_run=True)
        assert dry.matched == 300 and dry.deleted == 0
        done = await inv.invalidate(patterns=[f"dash:{round_}:cat:*"], operation_name=OPS[0])
        assert done.deleted == 300
        users = await inv.invalidate(patterns=[f"dash:{round_}:user:*"], operation_name=OPS[1])
        assert users.deleted == 120
        exact = await inv.invalidate(keys=[f"dash:{round_}:exact:{i}" for i in range(4)],
                                     operation_name=OPS[1])
        assert exact.deleted == 4
        runs += 4
        with pytest.raises(InvalidPatternError):  # counted as errors_total{error="input"}
            await inv.invalidate(patterns=[""], operation_name=OPS[1])
    return runs


@pytest.mark.prometheus
class TestAgainstPrometheus:
    @pytest.mark.anyio
    async def test_every_dashboard_query_returns_data(
        self, prometheus_server: PrometheusServer, cluster_url: str, dashboard: dict[str, Any]
    ) -> None:
        prom = prometheus_server
        total = 0
        # Two rounds, each waited for until scraped: rate() needs two samples that differ.
        for round_ in range(2):
            total += await _workload(cluster_url, prom.registry, round_)
            wait_for(functools.partial(_ingested, prom, float(total)), 30,
                     f"{total} invalidations to reach Prometheus")
        problems = check_dashboard(dashboard, prom)
        assert problems == [], "\n".join(problems)
        errors = prom.scalar(
            f'sum(clusterinval_errors_total{{operation="{OPS[1]}", error="input"}})')
        assert errors == 2.0
        deleted = prom.scalar(f'sum(clusterinval_keys_deleted_total{{operation="{OPS[0]}"}})')
        assert deleted == 600.0  # the dry runs deleted nothing and counted nothing as deleted

    def test_query_with_unknown_metric_fails_the_check(
        self, prometheus_server: PrometheusServer, dashboard: dict[str, Any]
    ) -> None:
        bad, title = doctored(dashboard)
        problems = check_dashboard(bad, prometheus_server)
        assert any(title in p and "no data" in p for p in problems), problems

    def test_syntax_error_fails_the_check(
        self, prometheus_server: PrometheusServer, dashboard: dict[str, Any]
    ) -> None:
        bad = copy.deepcopy(dashboard)
        target = next(p for p in bad["panels"] if p.get("targets"))["targets"][0]
        target["expr"] = "sum by (operation (" + target["expr"]
        problems = check_dashboard(bad, prometheus_server)
        assert any("failed" in p for p in problems), problems


@pytest.mark.prometheus
class TestPromtool:
    def _promtool(self) -> str:
        found = find_binary("promtool")
        if found is None:
            pytest.skip("promtool is not installed")
        return found

    def test_test_config_is_valid(self, prometheus_server: PrometheusServer) -> None:
        out = subprocess.run([self._promtool(), "check", "config",
                              str(prometheus_server.config_path)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr

    def test_compose_config_is_valid(self) -> None:
        if not COMPOSE_PROMETHEUS.exists():
            pytest.skip("docker/prometheus.yml is not there")
        out = subprocess.run([self._promtool(), "check", "config", str(COMPOSE_PROMETHEUS)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr

