"""``clusterinval bench``: clusterinval against the hand-written and client-library approaches."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from clusterinval.cli.loadtest_cmd import check_report_possible, started_cluster
from clusterinval.cli.output import EXIT_BAD_INPUT, EXIT_INCOMPLETE, err_console, fail, out_console
from clusterinval.loadtest.bench import BenchConfig, run_bench, storm_variants
from clusterinval.loadtest.callbench import storm_layout
from clusterinval.loadtest.peers import TOOLS
from clusterinval.loadtest.report import bench_table, write_json

__all__ = ["bench"]

_SCENARIOS = ("S1", "S2", "S3", "S4", "MP", "STORM", "SMALL")
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
    storm_callers: Annotated[str, typer.Option(
        "--storm-callers", help="STORM: concurrent callers, comma-separated; the first is also "
        "run on redis-py, the others on clusterinval only.")] = "50,200",
    storm_calls: Annotated[int, typer.Option("--storm-calls", min=1, max=100_000,
                                             help="STORM: calls per run (one entity each).")
                           ] = 100,
    small_calls: Annotated[int, typer.Option("--small-calls", min=1, max=1_000_000,
                                             help="SMALL: timed calls of each kind.")] = 1000,
    out: Annotated[str | None, typer.Option("--out", metavar="PATH",
                                            help="Write the report as JSON here.")] = None,
    html_report: Annotated[str | None, typer.Option(
        "--report", metavar="PATH", help="Write an HTML report with charts here (needs the "
        "'report' extra: plotly).")] = None,
) -> None:
    """Benchmark S1-S4, a multi-pattern case, many callers and small calls; all verified."""
    if html_report:
        check_report_possible(html_report)
    chosen_tools = tuple(t.strip() for t in tools.split(",") if t.strip())
    chosen = tuple(s.strip().upper() for s in scenario.split(",") if s.strip())
    bad = [t for t in chosen_tools if t not in TOOLS] + [s for s in chosen if s not in _SCENARIOS]
    if bad or not chosen_tools or not chosen:
        fail(f"unknown or missing tools/scenarios: {', '.join(bad) or 'none given'}",
             EXIT_BAD_INPUT)
    try:
        callers = tuple(int(c) for c in storm_callers.split(",") if c.strip())
        if not callers or min(callers) < 1:
            raise ValueError("at least one caller count, each >= 1")
    except ValueError as exc:
        fail(f"bad --storm-callers {storm_callers!r}: {exc}", EXIT_BAD_INPUT)
    try:
        config = BenchConfig(size=BenchConfig.parse_size(size), repeat=repeat,
                             tools=chosen_tools, scenarios=chosen, rate_limit=rate_limit,
                             latency_check=not no_latency, storm_calls=storm_calls,
                             storm_callers=callers, small_calls=small_calls)
        if config.size < 10_000:
            raise ValueError("size must be at least 10000 keys")
        if "STORM" in chosen:
            for _tool, _callers, calls in storm_variants(config):
                storm_layout(config.size, calls)  # enough entities for every run's calls
    except ValueError as exc:
        fail(f"bad --size {size!r}: {exc}", EXIT_BAD_INPUT)
    if url and not flush_ok:
        fail("the benchmark flushes the cluster before every run; pass --flush-ok to allow it "
             "on --url (or leave --url out to use a cluster started here)", EXIT_BAD_INPUT)
    with started_cluster(url, docker=False) as target:
        report = run_bench(target, config, say=lambda line: err_console.print(line, markup=False))
    # Wide tables: a terminal keeps its own width, a pipe or file gets room for every column.
    wide = out_console if out_console.is_terminal else Console(width=_WIDTH, highlight=False)
    if report["scenarios"]:
        wide.print(bench_table(report))
    if "storm" in report:
        wide.print(_storm_table(report))
    if "small" in report:
        wide.print(_small_table(report))
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


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _storm_table(report: dict[str, Any]) -> Table:
    storm = report["storm"]
    t = Table("tool", "callers", "calls", "calls/s (median)", "p50 ms", "p99 ms",
              "connection errors", "failed calls", "verified",
              title=f"STORM: calls user:<i>:* ({storm['keys_per_entity']} keys each) on "
                    f"{storm['size']} keys", title_justify="left")
    for row in storm["summary"]:
        rate = row["calls_per_s"]
        t.add_row(row["tool"], str(row["callers"]), str(row.get("calls", storm["calls"])),
                  "-" if rate is None else f"{rate:.1f}",
                  _ms(row["p50_ms"]), _ms(row["p99_ms"]), str(row["connection_errors"]),
                  str(row["failed_calls"]), "yes" if row["verified"] else "[bold red]NO[/]")
    return t


def _small_table(report: dict[str, Any]) -> Table:
    small = report["small"]
    t = Table("call", "p50 ms", "p99 ms", "x redis-py unlink p50",
              title=f"SMALL: {small.get('calls')} sequential calls of each kind on "
                    f"{small.get('size')} keys ("
                    + ("verified" if small["verified"] else "[bold red]NOT verified[/]") + ")",
              title_justify="left")
    if "latency" not in small:
        t.add_row(small.get("error", "failed"), "", "", "")
        return t
    lat = small["latency"]
    rows = (("3 exact keys, 3 slots: invalidate(keys=...)", "exact", "exact_vs_unlink_p50"),
            ("redis-py unlink(*keys), same 3 keys", "redis_py_unlink", None),
            ("hash-tagged pattern, 2 keys: invalidate(patterns=...)", "tagged",
             "tagged_vs_unlink_p50"))
    for label, kind, ratio_key in rows:
        ratio = small.get(ratio_key) if ratio_key else 1.0
        t.add_row(label, _ms(lat[kind]["p50_ms"]), _ms(lat[kind]["p99_ms"]),
                  "-" if ratio is None else f"{ratio:.2f}")
    return t


def _goals_table(report: dict[str, object]) -> Table:
    t = Table("goal", "measured", "met", title_justify="left")
    for g in report["goals"]:  # type: ignore[attr-defined]
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[g["met"]]
        t.add_row(g["goal"], g["measured"], met)
    return t
