"""``clusterinval bench``: clusterinval against the hand-written and client-library approaches."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from clusterinval.cli.loadtest_cmd import check_report_possible, started_cluster
from clusterinval.cli.output import EXIT_BAD_INPUT, EXIT_INCOMPLETE, err_console, fail, out_console
from clusterinval.loadtest.bench import BenchConfig, run_bench
from clusterinval.loadtest.peers import TOOLS
from clusterinval.loadtest.report import bench_table, write_json

__all__ = ["bench"]

_SCENARIOS = ("S1", "S2", "S3", "S4", "MP")
_WIDTH = 150


def bench(
    url: Annotated[str | None, typer.Option("--url", help="Cluster to use; it is FLUSHED "
                                            "between runs (needs --flush-ok). Default: start "
                                            "a local 3+3 cluster.")] = None,
    flush_ok: Annotated[bool, typer.Option("--flush-ok", help="Allow flushing the --url "
                                           "cluster (every key is deleted).")] = False,
    size: Annotated[str, typer.Option("--size", help="Keys per scenario: tiny (20k), small "
                                      "(100k), medium (300k), full (1M) or a number.")] = "full",
    repeat: Annotated[int, typer.Option("--repeat", min=1, max=20,
                                        help="Runs per tool and scenario (median).")] = 3,
    tools: Annotated[str, typer.Option("--tools", help="Comma-separated subset of: "
                                       + ",".join(TOOLS))] = ",".join(TOOLS),
    scenario: Annotated[str, typer.Option("--scenarios", help="Comma-separated subset of: "
                                          + ",".join(_SCENARIOS))] = ",".join(_SCENARIOS),
    rate_limit: Annotated[float, typer.Option("--rate-limit", min=1, help="keys/s for the "
                                              "GET-latency-during-S2 run.")] = 50_000.0,
    no_latency: Annotated[bool, typer.Option("--no-latency", help="Skip the GET latency "
                                             "measurement during S2.")] = False,
    out: Annotated[str | None, typer.Option("--out", metavar="PATH",
                                            help="Write the report as JSON here.")] = None,
    html_report: Annotated[str | None, typer.Option(
        "--report", metavar="PATH", help="Write an HTML report with charts here (needs the "
        "'report' extra: plotly).")] = None,
) -> None:
    """Benchmark S1-S4 and a multi-pattern case for every approach; every run is verified."""
    if html_report:
        check_report_possible(html_report)
    chosen_tools = tuple(t.strip() for t in tools.split(",") if t.strip())
    chosen = tuple(s.strip().upper() for s in scenario.split(",") if s.strip())
    bad = [t for t in chosen_tools if t not in TOOLS] + [s for s in chosen if s not in _SCENARIOS]
    if bad or not chosen_tools or not chosen:
        fail(f"unknown or missing tools/scenarios: {', '.join(bad) or 'none given'}",
             EXIT_BAD_INPUT)
    try:
        config = BenchConfig(size=BenchConfig.parse_size(size), repeat=repeat,
                             tools=chosen_tools, scenarios=chosen, rate_limit=rate_limit,
                             latency_check=not no_latency)
        if config.size < 10_000:
            raise ValueError("size must be at least 10000 keys")
    except ValueError as exc:
        fail(f"bad --size {size!r}: {exc}", EXIT_BAD_INPUT)
    if url and not flush_ok:
        fail("the benchmark flushes the cluster before every run; pass --flush-ok to allow it "
             "on --url (or leave --url out to use a cluster started here)", EXIT_BAD_INPUT)
    with started_cluster(url, docker=False) as target:
        report = run_bench(target, config, say=lambda line: err_console.print(line, markup=False))
    # Wide tables: a terminal keeps its own width, a pipe or file gets room for every column.
    wide = out_console if out_console.is_terminal else Console(width=_WIDTH, highlight=False)
    wide.print(bench_table(report))
    if "get_latency" in report:
        wide.print(_latency_table(report))
    wide.print(_goals_table(report))
    if out:
        write_json(out, report)
        err_console.print(f"report written to {out}")
    if html_report:
        from clusterinval.loadtest.html_report import write_bench_html

        write_bench_html(html_report, report)
        err_console.print(f"HTML report written to {html_report}")
    if not report["verified"]:
        err_console.print("[bold red]some benchmarked runs did not verify[/]")
        raise typer.Exit(EXIT_INCOMPLETE)


def _latency_table(report: dict[str, object]) -> Table:
    t = Table("GET traffic while S2 runs", "idle p50 / p99 ms", "during p50 / p99 ms",
              "p99 ratio", "S2 wall s", "verified", title_justify="left")
    for g in report["get_latency"]:  # type: ignore[attr-defined]
        ratio = g["p99_ratio"]
        t.add_row(g["variant"], f"{g['idle']['p50_ms']} / {g['idle']['p99_ms']}",
                  f"{g['during']['p50_ms']} / {g['during']['p99_ms']}",
                  "-" if ratio is None else f"{ratio:.2f}",
                  "-" if g["s2_wall_s"] is None else f"{g['s2_wall_s']:.3f}",
                  "yes" if g["verified"] else "[bold red]NO[/]")
    return t


def _goals_table(report: dict[str, object]) -> Table:
    t = Table("goal", "measured", "met", title_justify="left")
    for g in report["goals"]:  # type: ignore[attr-defined]
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[g["met"]]
        t.add_row(g["goal"], g["measured"], met)
    return t
