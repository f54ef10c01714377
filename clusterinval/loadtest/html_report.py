"""Self-contained HTML reports with charts (plotly, the ``report`` extra) for loadtest and bench.

One file, the plotly.js library inlined, no network needed to open it. The load test's report
charts cache GET/SET latency p50/p99 over time with the invalidation windows shaded, keys deleted
per second, errors per second and the distribution of invalidation latency, under a summary that
leads with the final check. The benchmark's report charts each scenario's wall time per tool.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from clusterinval.loadtest.report import percentile
from clusterinval.loadtest.timeline import InvalidationWindow, Timeline

if TYPE_CHECKING:
    from clusterinval.loadtest.generator import LoadReport

__all__ = [
    "LOAD_SERIES",
    "ReportUnavailableError",
    "bench_figure",
    "load_figure",
    "require_plotly",
    "write_bench_html",
    "write_load_html",
]

# Trace names of the load test's charts, in drawing order (the screenshot test looks for them).
LOAD_SERIES: Final = (
    "GET p50", "GET p99", "SET p50", "SET p99", "invalidation running",
    "keys deleted/s", "cache errors/s", "failed invalidations/s", "invalidation latency",
)
_SHADE: Final = "rgba(214, 39, 40, 0.22)"
_COLORS: Final = {"GET": "#1f77b4", "SET": "#2ca02c", "keys": "#9467bd", "errors": "#d62728",
                  "failed": "#ff7f0e", "latency": "#8c564b"}


class ReportUnavailableError(RuntimeError):
    """Raised when plotly (the ``report`` extra) is not installed."""


def require_plotly() -> None:
    """Raise ReportUnavailableError unless plotly can be imported."""
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise ReportUnavailableError(
            "the HTML report needs plotly: pip install 'clusterinval[report]'"
        ) from None


# --- the load test -----------------------------------------------------------------------------


def _bucket_width(span_s: float, finest_s: float) -> float:
    """About 120 buckets across the run, none shorter than ``finest_s``."""
    return max(finest_s, round(span_s / 120, 2))


def _latency_series(
    timeline: Timeline, kind: int, width: float, end_s: float
) -> tuple[list[float], list[float | None], list[float | None]]:
    """Per bucket: its middle, and the p50 and p99 latency (ms) of ``kind`` operations in it."""
    buckets: dict[int, list[float]] = {}
    for t, lat, k in zip(timeline.op_end_s, timeline.op_latency_s, timeline.op_kind,
                         strict=True):
        if k == kind:
            buckets.setdefault(int(t // width), []).append(lat)
    xs: list[float] = []
    p50: list[float | None] = []
    p99: list[float | None] = []
    for i in range(int(end_s // width) + 1):
        values = buckets.get(i)
        xs.append(round((i + 0.5) * width, 3))
        p50.append(round(percentile(values, 50) * 1e3, 3) if values else None)
        p99.append(round(percentile(values, 99) * 1e3, 3) if values else None)
    return xs, p50, p99


def _per_second(times_and_counts: Iterable[tuple[float, float]], width: float,
                end_s: float) -> tuple[list[float], list[float]]:
    """Sum of counts per bucket, as a rate per second."""
    n = int(end_s // width) + 1
    sums = [0.0] * n
    for t, count in times_and_counts:
        sums[min(n - 1, max(0, int(t // width)))] += count
    return [round((i + 0.5) * width, 3) for i in range(n)], [s / width for s in sums]


def _merged_windows(windows: Sequence[InvalidationWindow], gap_s: float) -> list[tuple[float,
                                                                                        float]]:
    """Invalidation windows merged where they overlap or nearly touch (fewer shapes to draw)."""
    merged: list[list[float]] = []
    for w in sorted(windows, key=lambda w: w.start_s):
        if merged and w.start_s <= merged[-1][1] + gap_s:
            merged[-1][1] = max(merged[-1][1], w.end_s)
        else:
            merged.append([w.start_s, w.end_s])
    return [(a, b) for a, b in merged]


def load_figure(report: LoadReport) -> Any:
    """The load test's charts as one plotly figure."""
    require_plotly()
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    tl = report.timeline
    ends = [*tl.op_end_s, *(w.end_s for w in tl.invalidations), *(t for _, t in tl.phases)]
    end_s = max(ends, default=1.0)
    width = _bucket_width(end_s, 0.25)  # latency percentiles
    rate_width = _bucket_width(end_s, 1.0)  # rates: whole seconds
    fig = make_subplots(
        rows=4, cols=1, vertical_spacing=0.07, row_heights=[0.34, 0.22, 0.18, 0.26],
        subplot_titles=(
            "Cache latency while invalidations run (ms, log scale; shaded: an invalidation "
            "is running)",
            "Keys deleted per second",
            "Errors per second",
            "Invalidation latency distribution (ms)",
        ),
    )
    for kind, name in ((Timeline.GET, "GET"), (Timeline.SET, "SET")):
        xs, p50, p99 = _latency_series(tl, kind, width, end_s)
        color = _COLORS[name]
        fig.add_trace(go.Scatter(x=xs, y=p50, name=f"{name} p50", mode="lines",
                                 line={"color": color, "width": 2}, connectgaps=False),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=xs, y=p99, name=f"{name} p99", mode="lines",
                                 line={"color": color, "width": 1.5, "dash": "dot"},
                                 connectgaps=False), row=1, col=1)
    # A legend entry for the shading (shapes have none of their own).
    fig.add_trace(go.Scatter(x=[None], y=[None], name="invalidation running", mode="markers",
                             marker={"symbol": "square", "size": 14, "color": _SHADE}),
                  row=1, col=1)
    for x0, x1 in _merged_windows(tl.invalidations, gap_s=width / 20):
        fig.add_vrect(x0=x0, x1=x1, fillcolor=_SHADE, line_width=0, layer="below", row=1,
                      col=1)

    xs, deleted = _per_second(((w.end_s, w.deleted) for w in tl.invalidations if w.ok),
                              rate_width, end_s)
    fig.add_trace(go.Bar(x=xs, y=deleted, name="keys deleted/s", width=rate_width * 0.9,
                         marker_color=_COLORS["keys"]), row=2, col=1)

    xs, cache_errors = _per_second(
        ((t, 1) for t, k in zip(tl.op_end_s, tl.op_kind, strict=True) if k == Timeline.FAILED),
        rate_width, end_s)
    _, failed = _per_second(((w.end_s, 1) for w in tl.invalidations if not w.ok), rate_width,
                            end_s)
    fig.add_trace(go.Bar(x=xs, y=cache_errors, name="cache errors/s", width=rate_width * 0.9,
                         marker_color=_COLORS["errors"]), row=3, col=1)
    fig.add_trace(go.Bar(x=xs, y=failed, name="failed invalidations/s", width=rate_width * 0.9,
                         marker_color=_COLORS["failed"]), row=3, col=1)
    if not any(cache_errors) and not any(failed):
        fig.add_annotation(text="no errors", showarrow=False, xref="x3 domain",
                           yref="y3 domain", x=0.5, y=0.5, font={"size": 16, "color": "#2ca02c"})

    latencies_ms = [(w.end_s - w.start_s) * 1e3 for w in tl.invalidations if w.ok]
    fig.add_trace(go.Histogram(x=latencies_ms, name="invalidation latency",
                               marker_color=_COLORS["latency"], nbinsx=40), row=4, col=1)

    bounds = [t for _, t in tl.phases] + [end_s]
    for i, (name, t) in enumerate(tl.phases):
        for row in (1, 2, 3):
            fig.add_vline(x=t, line={"color": "#888", "width": 1, "dash": "dash"}, row=row,
                          col=1)
        # Each phase is named in the middle of its stretch, when the stretch has room for it.
        if bounds[i + 1] - t >= 0.08 * end_s:
            fig.add_annotation(x=(t + bounds[i + 1]) / 2, y=0.99, xref="x", yref="y domain",
                               text=f"{name} phase", showarrow=False, yanchor="top",
                               bgcolor="rgba(255,255,255,0.75)",
                               font={"size": 12, "color": "#555"})
    for row in (1, 2, 3):
        fig.update_xaxes(range=[0, end_s], title_text="seconds since start" if row == 3 else None,
                         row=row, col=1)
    fig.update_yaxes(type="log", dtick="D2", title_text="ms", row=1, col=1)
    fig.update_yaxes(title_text="keys/s", rangemode="tozero", row=2, col=1)
    fig.update_yaxes(title_text="per s", rangemode="tozero", row=3, col=1)
    fig.update_xaxes(title_text="invalidation latency, ms", row=4, col=1)
    fig.update_yaxes(title_text="invalidations", row=4, col=1)
    fig.update_layout(height=1250, width=1100, barmode="overlay", template="plotly_white",
                      margin={"t": 90, "l": 70, "r": 30, "b": 50},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.035, "x": 0})
    return fig


def _summary_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    def ms(v: float | None) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"

    before, during = data["cache_before"], data["cache_during"]
    inv = data["invalidation_latency"]
    return [
        ("keys filled", f"{data['keys_filled']}"),
        ("cache ops/s before | during",
         f"{data['cache_ops_per_s_before']:.0f} | {data['cache_ops_per_s_during']:.0f}"),
        ("cache p50 ms before | during", f"{ms(before['p50_ms'])} | {ms(during['p50_ms'])}"),
        ("cache p99 ms before | during", f"{ms(before['p99_ms'])} | {ms(during['p99_ms'])}"),
        ("invalidations (ok / failed)",
         f"{data['invalidations']} / {data['invalidations_failed']}"),
        ("keys deleted", f"{data['keys_deleted']} ({data['keys_deleted_per_s']:.0f}/s)"),
        ("invalidation p50 | p99 ms", f"{ms(inv['p50_ms'])} | {ms(inv['p99_ms'])}"),
        ("count mismatches", f"{data['count_mismatches']}"),
        ("cache errors", f"{data['cache_errors']}"),
    ]


_PAGE: Final = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1120px; }}
h1 {{ font-size: 22px; margin: 0 0 12px; }}
.verdict {{ font-size: 18px; padding: 10px 14px; border-radius: 6px; margin: 0 0 14px; }}
.pass {{ background: #e6f4ea; color: #1e6b34; }} .fail {{ background: #fce8e6; color: #a50e0e; }}
table {{ border-collapse: collapse; margin: 0 0 16px; font-size: 14px; }}
td {{ padding: 3px 14px 3px 0; }} td.v {{ text-align: right; font-variant-numeric: tabular-nums; }}
</style></head><body>
<h1>{title}</h1>
{verdict}
<table>{rows}</table>
{figure}
</body></html>
"""


def _page(title: str, verdict: str, rows: Sequence[tuple[str, str]], figure: Any) -> str:
    body = figure.to_html(full_html=False, include_plotlyjs=True,
                          config={"displaylogo": False, "responsive": False})
    table = "".join(f"<tr><td>{html.escape(k)}</td><td class=v>{html.escape(v)}</td></tr>"
                    for k, v in rows)
    return _PAGE.format(title=html.escape(title), verdict=verdict, rows=table, figure=body)


def write_load_html(path: str | Path, report: LoadReport) -> None:
    """Write the load test's HTML report (charts and the final check) to ``path``."""
    data = report.to_dict()
    check = data["final_check"]
    state = "pass" if check["ok"] else "fail"
    verdict = (
        f'<p class="verdict {state}" id="final-check"><b>Final check: {state.upper()}</b> &mdash; '
        f"{check['survivors']} matching keys survived, {check['lost']} other keys lost, "
        f"{check['unexpected']} unexpected keys (after {check['final_invalidations']} final "
        "invalidations that were not written back)</p>"
    )
    config = data["config"]
    title = (f"clusterinval loadtest: {config['keys']} keys, {config['ops_per_second']:g} cache "
             f"ops/s, {config['invalidations_per_second']:g} invalidations/s")
    Path(path).write_text(_page(title, verdict, _summary_rows(data), load_figure(report)))


# --- the benchmark -----------------------------------------------------------------------------


def bench_figure(data: dict[str, Any]) -> Any:
    """The benchmark's wall times (median, min-max as error bars) per scenario and tool."""
    require_plotly()
    import plotly.graph_objects as go

    tools: list[str] = []
    for sc in data["scenarios"]:
        for run in sc["tools"]:
            if run["tool"] not in tools:
                tools.append(run["tool"])
    fig = go.Figure()
    for tool in tools:
        xs: list[str] = []
        ys: list[float] = []
        up: list[float] = []
        down: list[float] = []
        for sc in data["scenarios"]:
            for run in sc["tools"]:
                if run["tool"] != tool or run.get("skipped"):
                    continue
                xs.append(sc["name"])
                ys.append(run["median_s"])
                up.append(run["max_s"] - run["median_s"])
                down.append(run["median_s"] - run["min_s"])
        fig.add_trace(go.Bar(x=xs, y=ys, name=tool, error_y={"type": "data", "array": up,
                                                             "arrayminus": down}))
    fig.update_layout(barmode="group", template="plotly_white", height=520, width=1100,
                      title=f"Wall time per scenario, median of {data['repeat']} runs "
                            f"({data['size']} keys per scenario)",
                      yaxis={"title": "seconds (log scale)", "type": "log"},
                      legend={"orientation": "h", "y": -0.12})
    return fig


def write_bench_html(path: str | Path, data: dict[str, Any]) -> None:
    """Write the benchmark's HTML report to ``path`` (from ``BenchReport.to_dict()``)."""
    ok = bool(data.get("verified"))
    verdict = (f'<p class="verdict {"pass" if ok else "fail"}" id="final-check"><b>'
               f'{"Every run verified" if ok else "Some runs did not verify"}</b></p>')
    rows = [(f"{sc['name']} / {run['tool']}",
             run["skipped"] if run.get("skipped") else
             f"{run['median_s']:.3f} s{'' if run['verified'] else ' (NOT verified)'}")
            for sc in data["scenarios"] for run in sc["tools"]]
    Path(path).write_text(_page("clusterinval bench", verdict, rows, bench_figure(data)))
