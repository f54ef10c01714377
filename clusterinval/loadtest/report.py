"""Figures and their presentation: latency summaries, the load test's and the benchmark's tables."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

__all__ = [
    "LatencySummary",
    "bench_markdown",
    "bench_table",
    "load_table",
    "percentile",
    "write_json",
]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100, nearest rank) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency of a set of operations, in milliseconds."""

    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencySummary:
        """Summarise latencies given in seconds."""
        if not seconds:
            return cls(0, math.nan, math.nan, math.nan)
        return cls(len(seconds), round(percentile(seconds, 50) * 1e3, 3),
                   round(percentile(seconds, 99) * 1e3, 3), round(max(seconds) * 1e3, 3))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes null)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(self).items()}


def _ms(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "-"
    return f"{v:.2f}"


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON to ``path``."""
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def load_table(data: dict[str, Any]) -> Table:
    """The load test's summary as a rich table (from ``LoadReport.to_dict()``)."""
    t = Table(title="clusterinval loadtest", title_justify="left")
    t.add_column("figure")
    t.add_column("value", justify="right")
    before, during = data["cache_before"], data["cache_during"]
    inv = data["invalidation_latency"]
    rows = [
        ("keys filled", f"{data['keys_filled']}"),
        ("cache ops/s before | during",
         f"{data['cache_ops_per_s_before']:.0f} | {data['cache_ops_per_s_during']:.0f}"),
        ("cache p50 ms before | during", f"{_ms(before['p50_ms'])} | {_ms(during['p50_ms'])}"),
        ("cache p99 ms before | during", f"{_ms(before['p99_ms'])} | {_ms(during['p99_ms'])}"),
        ("invalidations (ok / failed)",
         f"{data['invalidations']} / {data['invalidations_failed']}"),
        ("invalidations/s", f"{data['invalidations_per_s']:.2f}"),
        ("keys deleted (per second)",
         f"{data['keys_deleted']} ({data['keys_deleted_per_s']:.0f}/s)"),
        ("invalidation p50 | p99 ms", f"{_ms(inv['p50_ms'])} | {_ms(inv['p99_ms'])}"),
        ("count mismatches", f"{data['count_mismatches']}"),
        ("cache errors", f"{data['cache_errors']}"),
        ("final check", "[green]PASS[/]" if data["final_check"]["ok"] else "[bold red]FAIL[/]"),
        ("  matching keys that survived", f"{data['final_check']['survivors']}"),
        ("  other keys lost", f"{data['final_check']['lost']}"),
        ("  unexpected keys", f"{data['final_check']['unexpected']}"),
    ]
    for name, value in rows:
        t.add_row(name, value)
    return t


def _range(run: dict[str, Any]) -> str:
    if run.get("skipped"):
        return "skipped"
    return f"{run['median_s']:.3f} ({run['min_s']:.3f}-{run['max_s']:.3f})"


def bench_table(data: dict[str, Any]) -> Table:
    """The benchmark's one table (from ``BenchReport.to_dict()``)."""
    t = Table(title=f"clusterinval bench ({data['size']} keys per scenario, "
                    f"median of {data['repeat']})", title_justify="left")
    for name, justify in (("scenario", "left"), ("tool", "left"), ("wall s median (min-max)",
                          "right"), ("x clusterinval", "right"), ("longest cmd ms", "right"),
                          ("client CPU s", "right"), ("client RSS +MB", "right"),
                          ("verified", "center")):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for sc in data["scenarios"]:
        first = True
        for run in sc["tools"]:
            if run.get("skipped"):
                t.add_row(sc["name"] if first else "", run["tool"], "skipped: " + run["skipped"],
                          "", "", "", "", "")
                first = False
                continue
            ratio = run.get("ratio")
            t.add_row(
                sc["name"] if first else "",
                run["tool"],
                _range(run),
                "-" if ratio is None else f"{ratio:.2f}",
                (f"<{data.get('slowlog_threshold_us', 500) / 1000:g}"
                 if run.get("longest_command_ms") is None else _ms(run["longest_command_ms"])),
                f"{run['cpu_s']:.2f}" if run.get("cpu_s") is not None else "-",
                f"{run['rss_growth_mb']:.1f}" if run.get("rss_growth_mb") is not None else "-",
                "[green]yes[/]" if run["verified"] else "[bold red]NO[/]",
            )
            first = False
    return t


def bench_markdown(data: dict[str, Any]) -> str:
    """The benchmark's table as Markdown (for docs/performance.md)."""
    lines = ["| scenario | tool | wall s, median (min-max) | x clusterinval | longest command "
             "on a primary | client CPU s | client peak RSS growth MB | verified |",
             "|---|---|---|---|---|---|---|---|"]
    threshold = data.get("slowlog_threshold_us", 500) / 1000
    for sc in data["scenarios"]:
        for run in sc["tools"]:
            if run.get("skipped"):
                lines.append(f"| {sc['name']} | {run['tool']} | {run['skipped']} | | | | | |")
                continue
            ratio = run.get("ratio")
            longest = run.get("longest_command_ms")
            cmd = (run.get("longest_command") or "").split(" ")[0]
            lines.append(
                f"| {sc['name']} | {run['tool']} | {_range(run)} | "
                f"{'-' if ratio is None else f'{ratio:.2f}'} | "
                f"{f'< {threshold:g} ms' if longest is None else f'{longest:.1f} ms ({cmd})'} | "
                f"{run['cpu_s']:.2f} | {run['rss_growth_mb']:.1f} | "
                f"{'yes' if run['verified'] else 'NO'} |"
            )
    return "\n".join(lines) + "\n"
