"""``clusterinval loadtest``: cache traffic while invalidations run, on a given or new cluster."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from prometheus_client import CollectorRegistry
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from clusterinval.cli.output import (
    EXIT_BAD_INPUT,
    EXIT_INCOMPLETE,
    err_console,
    fail,
    print_table,
)
from clusterinval.exposition import start_metrics_server
from clusterinval.loadtest.generator import LoadConfig, LoadReport, LoadState, run_loadtest
from clusterinval.loadtest.report import load_table, write_json
from clusterinval.testing.fill import count_keys

__all__ = ["check_report_possible", "loadtest", "started_cluster"]


@contextlib.contextmanager
def started_cluster(url: str | None, docker: bool) -> Iterator[str]:
    """``url`` as is, or the URL of a 3+3 cluster started here (docker or local), stopped after."""
    if url:
        yield url
        return
    cluster: Any
    if docker:
        # Imported lazily: testcontainers and a docker daemon are only needed with --docker.
        from clusterinval.testing.container import RedisClusterContainer

        cluster = RedisClusterContainer(primaries=3, replicas=1)
    else:
        from clusterinval.testing.local import LocalCluster

        cluster = LocalCluster(primaries=3, replicas=1)
    err_console.print(f"starting a {'docker' if docker else 'local'} 3+3 cluster ...")
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


def loadtest(
    url: Annotated[str | None, typer.Option("--url", help="Cluster to load (must be empty, "
                                            "or pass --flush). Default: start one.")] = None,
    docker: Annotated[bool, typer.Option("--docker", help="Start the cluster in docker "
                                         "(testcontainers) instead of local processes.")] = False,
    keys: Annotated[int, typer.Option("--keys", min=1000, help="Keys to fill.")] = 100_000,
    duration: Annotated[float, typer.Option("--duration", min=1, max=3600,
                                            help="Seconds of load (hard-capped).")] = 20.0,
    baseline: Annotated[float, typer.Option("--baseline", min=1, max=600,
                                            help="Seconds of idle baseline traffic.")] = 5.0,
    rate: Annotated[float, typer.Option("--rate", min=1, help="Cache ops per second.")] = 2000.0,
    inv_rate: Annotated[float, typer.Option("--inv-rate", min=0.01,
                                            help="Invalidations per second.")] = 5.0,
    workers: Annotated[int, typer.Option("--workers", min=1, max=256,
                                         help="Concurrent cache traffic tasks.")] = 16,
    keys_per_second: Annotated[float | None, typer.Option(
        "--keys-per-second", min=1, help="The invalidator's rate limit (default: none).")] = None,
    flush: Annotated[bool, typer.Option("--flush", help="Empty a non-empty --url cluster "
                                        "first (FLUSHALL on every primary).")] = False,
    metrics_port: Annotated[int, typer.Option("--metrics-port", min=-1, max=65535,
                                              help="Prometheus /metrics on 127.0.0.1 "
                                              "(0: any free port, -1: off).")] = 9108,
    out: Annotated[str | None, typer.Option("--out", metavar="PATH",
                                            help="Write the report as JSON here.")] = None,
    html_report: Annotated[str | None, typer.Option(
        "--report", metavar="PATH", help="Write an HTML report with charts here (needs the "
        "'report' extra: plotly).")] = None,
) -> None:
    """Run cache traffic while invalidations run; report latency, throughput and a final check."""
    if html_report:
        check_report_possible(html_report)
    try:
        config = LoadConfig(keys=keys, duration_s=duration, baseline_s=baseline,
                            ops_per_second=rate, invalidations_per_second=inv_rate,
                            workers=workers, keys_per_second=keys_per_second)
    except ValueError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    registry = CollectorRegistry()
    with started_cluster(url, docker) as target:
        _ensure_empty(target, flush)
        server = None
        if metrics_port >= 0:
            try:
                server = start_metrics_server(metrics_port, registry=registry)
            except OSError as exc:
                fail(f"cannot serve metrics on 127.0.0.1:{metrics_port} ({exc}); "
                     "pick another --metrics-port (0 = any free port, -1 = off)", EXIT_BAD_INPUT)
            err_console.print(f"metrics: {server.url}")
        try:
            report = _run(target, config, registry)
        finally:
            if server is not None:
                server.close()
    data = report.to_dict()
    print_table(load_table(data))
    for line in data["errors"]:
        err_console.print(f"  {line}", markup=False)
    if out:
        write_json(out, data)
        err_console.print(f"report written to {out}")
    if html_report:
        from clusterinval.loadtest.html_report import write_load_html

        write_load_html(html_report, report)
        err_console.print(f"HTML report written to {html_report}")
    if not report.ok:
        raise typer.Exit(EXIT_INCOMPLETE)


def check_report_possible(path: str) -> None:
    """Exit 2, before any work, when the HTML report at ``path`` could not be written."""
    from clusterinval.loadtest.html_report import ReportUnavailableError, require_plotly

    try:
        require_plotly()
    except ReportUnavailableError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        fail(f"--report {path}: the directory {parent} does not exist", EXIT_BAD_INPUT)


def _ensure_empty(url: str, flush: bool) -> None:
    if count_keys(url) == 0:
        return
    if not flush:
        fail("the cluster is not empty; the final check needs a known keyspace. "
             "Pass --flush to empty it first (this deletes every key).", EXIT_BAD_INPUT)
    from clusterinval.loadtest.bench import flush_cluster

    flush_cluster(url)


def _run(url: str, config: LoadConfig, registry: CollectorRegistry) -> LoadReport:
    state = LoadState()
    if not err_console.is_terminal:
        return anyio.run(lambda: run_loadtest(url, config, registry=registry, state=state))
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[figures]}"), console=err_console,
                  transient=True) as bar:
        task = bar.add_task("fill", total=1.0, figures="")

        async def main() -> LoadReport:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_show, bar, task, state)
                result = await run_loadtest(url, config, registry=registry, state=state)
                tg.cancel_scope.cancel()
            return result

        return anyio.run(main)


async def _show(bar: Progress, task: Any, state: LoadState) -> None:
    # Display only; ends when the run's task group is cancelled after the run.
    while True:
        length = state.phase_length_s
        done = min(1.0, (time.monotonic() - state.phase_started) / length) if length else 0.0
        bar.update(task, description=state.phase, completed=done,
                   figures=f"cache ops {state.cache_ops}  invalidations {state.invalidations}  "
                           f"deleted {state.keys_deleted}  errors {state.errors}")
        await anyio.sleep(0.25)
