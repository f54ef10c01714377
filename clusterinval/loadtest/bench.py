"""The benchmark: every tool on every scenario, each run on a freshly filled cluster, verified.

For each scenario the keyspace is planned once (slot-grouped MSETs), then for each tool and
repetition: FLUSHALL, fill, reset SLOWLOG, run the tool in a fresh child process (see
``peers``), read the longest command from SLOWLOG, verify (nothing matching survives, nothing
else lost). Then the call-level scenarios (see ``callbench``): STORM, many concurrent callers on
one held invalidator against redis-py at the same concurrency, and SMALL, small calls one at a
time against redis-py's ``unlink``. Finally GET latency on the cluster is measured idle and while
S2 runs, rate-limited and not. Speed is reported, never judged here; correctness of every run is.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from redis.asyncio import RedisCluster

from clusterinval.loadtest.callbench import StormLayout, small_layout, storm_layout
from clusterinval.loadtest.clusterops import (
    SlowlogGuard,
    flush_cluster,
    plan_fill,
    write_fill,
)
from clusterinval.loadtest.peers import TOOLS, glide_available
from clusterinval.loadtest.report import LatencySummary
from clusterinval.loadtest.scenarios import Scenario, scenarios
from clusterinval.loadtest.traffic import TrafficTally, run_traffic
from clusterinval.testing.fill import count_keys, scan_all_keys, slot_owners

__all__ = ["BenchConfig", "flush_cluster", "goals", "run_bench", "storm_variants"]

_CHILD_TIMEOUT_S = 900.0
_SIZES = {"tiny": 20_000, "small": 100_000, "medium": 300_000, "full": 1_000_000}


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to benchmark."""

    size: int = 1_000_000
    repeat: int = 3
    tools: tuple[str, ...] = TOOLS
    scenarios: tuple[str, ...] = ("S1", "S2", "S3", "S4", "MP", "STORM", "SMALL")
    # STORM: calls per run; concurrent callers of each run (the first also for redis-py, the
    # others for clusterinval only: how its rate grows with the callers).
    storm_calls: int = 100
    storm_callers: tuple[int, ...] = (50, 200)
    small_calls: int = 1000  # SMALL: timed calls of each kind
    rate_limit: float = 50_000.0  # keys/s for the "GET p99 while S2 runs" measurement
    get_rate: float = 1000.0
    idle_s: float = 5.0
    latency_check: bool = True
    slowlog_threshold_us: int = 500

    @staticmethod
    def parse_size(text: str) -> int:
        """``tiny``/``small``/``medium``/``full`` or a number of keys (``100k``, ``1m`` too)."""
        t = text.strip().lower()
        if t in _SIZES:
            return _SIZES[t]
        mult = 1
        if t.endswith("k"):
            mult, t = 1000, t[:-1]
        elif t.endswith("m"):
            mult, t = 1_000_000, t[:-1]
        return int(float(t) * mult)


@dataclass(slots=True)
class _ToolRuns:
    tool: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None

    def summary(self, reference: float | None) -> dict[str, Any]:
        if self.skipped:
            return {"tool": self.tool, "skipped": self.skipped, "verified": True}
        ok = [r for r in self.runs if "wall_s" in r]
        walls = [r["wall_s"] for r in ok]
        med = statistics.median(walls) if walls else float("nan")
        longest = [r["longest_command_ms"] for r in self.runs
                   if r.get("longest_command_ms") is not None]
        worst = max(self.runs, key=lambda r: r.get("longest_command_ms") or 0.0)
        return {
            "tool": self.tool,
            "median_s": med,
            "min_s": min(walls) if walls else float("nan"),
            "max_s": max(walls) if walls else float("nan"),
            "ratio": (med / reference) if reference and walls else None,
            "longest_command_ms": max(longest) if longest else None,
            "longest_command": worst.get("longest_command"),
            "cpu_s": statistics.median(r["cpu_s"] for r in ok) if ok else None,
            "rss_growth_mb": max(r["rss_growth_mb"] for r in ok) if ok else None,
            "verified": bool(self.runs) and all(r["verified"] for r in self.runs),
            "runs": self.runs,
        }


def _child(spec: dict[str, Any], go: Callable[[], None],
           during: Callable[[subprocess.Popen[str]], None] | None = None,
           module: str = "clusterinval.loadtest.peers") -> dict[str, Any]:
    """Run one tool in a fresh process; ``go`` runs once it is connected, ``during`` while it works.
    """
    args = [sys.executable, "-m", module, json.dumps(spec)]
    with subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdin is not None
            first = proc.stdout.readline().strip()
            if first == "READY":
                go()
                proc.stdin.write("GO\n")
                proc.stdin.flush()
                if during is not None:
                    during(proc)
            out, err = proc.communicate(timeout=_CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"error": f"timed out after {_CHILD_TIMEOUT_S:g} s"}
    lines = [ln for ln in ([first, *out.splitlines()]) if ln.startswith("{")]
    if not lines:
        return {"error": f"child exited {proc.returncode}: {err.strip()[-500:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _verify(url: str, sc: Scenario) -> dict[str, Any]:
    survivors = sum(len(scan_all_keys(url, match=g)) for g in sc.gone)
    remaining = count_keys(url)
    expected = sc.total - sc.expected_deleted
    return {"survivors": survivors, "remaining": remaining, "expected_remaining": expected,
            "verified": survivors == 0 and remaining == expected}


def _one_run(url: str, sc: Scenario, tool: str, guard: SlowlogGuard, plan: Any,
             options: dict[str, Any] | None = None,
             during: Callable[[subprocess.Popen[str]], None] | None = None,
             before: Callable[[], None] | None = None) -> dict[str, Any]:
    flush_cluster(url)
    written = write_fill(url, plan)
    if written != sc.total or count_keys(url) != sc.total:
        raise RuntimeError(f"{sc.name}: fill wrote {written} keys, expected {sc.total}")
    if before is not None:
        before()
    spec = {"url": url, "tool": tool, "options": options or {}, **sc.spec()}
    # SLOWLOG is emptied once the child is connected: its connection set-up is not measured.
    res = _child(spec, guard.reset, during)
    slow = guard.longest()
    res["longest_command_ms"] = slow.duration_ms if slow else None
    res["longest_command"] = f"{slow.command} on {slow.node}" if slow else None
    res.update(_verify(url, sc))
    if "error" in res:
        res["verified"] = False
    elif res.get("deleted") != sc.expected_deleted:
        res["count_note"] = f"tool reported {res.get('deleted')}, expected {sc.expected_deleted}"
    return res


def run_bench(url: str, config: BenchConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark against the (flushable) cluster at ``url``; JSON-ready report."""
    started = time.time()
    glide_missing = glide_available()
    calls_ok = "clusterinval" in config.tools
    chosen = [s for s in scenarios(config.size) if s.name in config.scenarios]
    report: dict[str, Any] = {"size": config.size, "repeat": config.repeat, "scenarios": [],
                              "slowlog_threshold_us": config.slowlog_threshold_us,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                       time.gmtime(started))}
    with SlowlogGuard(url, threshold_us=config.slowlog_threshold_us) as guard:
        for sc in chosen:
            say(f"{sc.name}: {sc.title} - planning fill")
            plan = plan_fill(url, sc.keys())
            per_tool: list[_ToolRuns] = []
            for tool in config.tools:
                tr = _ToolRuns(tool)
                per_tool.append(tr)
                if tool == "valkey-glide" and glide_missing:
                    tr.skipped = glide_missing
                    continue
                if tool == "floor" and sc.floor_prefixes is None:
                    tr.skipped = "n/a (no pattern)"
                    continue
                for i in range(config.repeat):
                    res = _one_run(url, sc, tool, guard, plan)
                    tr.runs.append(res)
                    say(f"  {sc.name} {tool} #{i + 1}: "
                        + (f"{res['wall_s']:.3f} s" if "wall_s" in res else res["error"])
                        + ("" if res["verified"] else "  VERIFY FAILED " + json.dumps(res)))
            ref = next((t for t in per_tool if t.tool == "clusterinval" and t.runs), None)
            ref_med = ref.summary(None)["median_s"] if ref else None
            report["scenarios"].append({"name": sc.name, "title": sc.title,
                                        "tools": [t.summary(ref_med) for t in per_tool]})
        if "STORM" in config.scenarios and calls_ok:
            report["storm"] = _storm(url, config, say)
        if "SMALL" in config.scenarios and calls_ok:
            report["small"] = _small(url, config, say)
        if config.latency_check and "S2" in config.scenarios and "clusterinval" in config.tools:
            s2 = next(s for s in scenarios(config.size) if s.name == "S2")
            plan = plan_fill(url, s2.keys())
            report["get_latency"] = [
                _latency_run(url, s2, guard, plan, config, config.rate_limit, say),
                _latency_run(url, s2, guard, plan, config, None, say),
            ]
    report["elapsed_s"] = round(time.time() - started, 1)
    runs_ok = all(t["verified"] for s in report["scenarios"] for t in s["tools"])
    calls_verified = all(r["verified"] for r in report.get("storm", {}).get("runs", [])) and (
        report.get("small", {}).get("verified", True))
    report["verified"] = runs_ok and calls_verified and all(
        g["verified"] for g in report.get("get_latency", []))
    report["goals"] = goals(report)
    return report


_CALLS_MODULE = "clusterinval.loadtest.callbench"


def _storm(url: str, config: BenchConfig, say: Callable[[str], None]) -> dict[str, Any]:
    """STORM: each caller count on clusterinval, the first also on redis-py; each run verified.

    A larger caller count runs twice: with the same calls as the first (their total is fixed,
    so at most that many merge), and with as many calls per caller as the first had (the same
    load per caller: how calls/s grows with concurrency).
    """
    layout = storm_layout(config.size, config.storm_calls)
    say(f"STORM: {config.size} keys, {layout.entities} entities of "
        f"{layout.expected_deleted // max(1, len(layout.targets))} keys; {len(layout.targets)} "
        "calls user:<i>:* - planning fill")
    variants = storm_variants(config)
    layouts = {config.storm_calls: layout}
    for _tool, _callers, calls in variants:
        if calls not in layouts:
            layouts[calls] = storm_layout(config.size, calls)
    plans: dict[int, Any] = {}  # fill plans by entity count (the keyspace depends on nothing else)
    runs: list[dict[str, Any]] = []
    for tool, callers, calls in variants:
        run_layout = layouts[calls]
        plan = plans.get(run_layout.entities)
        if plan is None:
            plan = plans[run_layout.entities] = plan_fill(url, run_layout.keys())
        for i in range(config.repeat):
            flush_cluster(url)
            written = write_fill(url, plan)
            if written != run_layout.size or count_keys(url) != run_layout.size:
                raise RuntimeError(f"STORM: fill wrote {written} keys, expected {run_layout.size}")
            spec = {"url": url, "kind": "storm", "tool": tool, "callers": callers,
                    "patterns": run_layout.patterns}
            res = _child(spec, lambda: None, module=_CALLS_MODULE)
            res.update(tool=tool, callers=callers, calls_requested=calls, run=i + 1)
            res.update(_verify_storm(url, run_layout))
            if "error" in res:
                res["verified"] = False
            else:
                res["calls_per_s"] = res["calls"] / res["wall_s"] if res["wall_s"] else None
                if res["deleted"] != run_layout.expected_deleted:
                    res["count_note"] = (f"tool reported {res['deleted']}, expected "
                                         f"{run_layout.expected_deleted}")
            runs.append(res)
            say(f"  STORM {tool} x{callers}, {calls} calls #{i + 1}: "
                + (f"{res['calls_per_s']:.1f} calls/s, p50 {res['latency']['p50_ms']} ms, "
                   f"p99 {res['latency']['p99_ms']} ms" if "error" not in res else res["error"])
                + ("" if res["verified"] else "  VERIFY FAILED " + json.dumps(res)[:800]))
    summary = []
    for tool, callers, calls in variants:
        mine = [r for r in runs if (r["tool"], r["callers"], r["calls_requested"])
                == (tool, callers, calls) and "error" not in r]
        summary.append({
            "tool": tool, "callers": callers, "calls": calls,
            "calls_per_s": statistics.median(r["calls_per_s"] for r in mine) if mine else None,
            "p50_ms": statistics.median(r["latency"]["p50_ms"] for r in mine) if mine else None,
            "p99_ms": max(r["latency"]["p99_ms"] for r in mine) if mine else None,
            "connection_errors": sum(r.get("connection_errors", 0) for r in mine),
            "failed_calls": sum(r.get("failed", 0) for r in mine),
            "verified": all(r["verified"] for r in runs if (r["tool"], r["callers"],
                                                            r["calls_requested"])
                            == (tool, callers, calls)),
        })
    return {"size": config.size, "calls": len(layout.targets), "entities": layout.entities,
            "keys_per_entity": layout.expected_deleted // max(1, len(layout.targets)),
            "callers": list(config.storm_callers), "runs": runs, "summary": summary}


def storm_variants(config: BenchConfig) -> list[tuple[str, int, int]]:
    """The STORM runs as (tool, callers, calls): see ``_storm``."""
    if not config.storm_callers:
        return []
    first, calls = config.storm_callers[0], config.storm_calls
    variants = [("clusterinval", first, calls)]
    for more in config.storm_callers[1:]:
        variants.append(("clusterinval", more, calls))
        scaled = _same_load_calls(calls, first, more)
        if scaled != calls:
            variants.append(("clusterinval", more, scaled))
    if "redis-py" in config.tools:
        variants.append(("redis-py", first, calls))
    return variants


def _same_load_calls(calls: int, first: int, more: int) -> int:
    """Calls for ``more`` callers with as many per caller as ``calls`` from ``first`` callers."""
    return max(1, calls * more // first)


def _verify_storm(url: str, layout: StormLayout) -> dict[str, Any]:
    """Every target key gone (EXISTS of each), and nothing else (DBSIZE arithmetic)."""
    import redis

    targets = layout.target_keys()
    rc = redis.RedisCluster.from_url(url)
    try:
        survivors = sum(int(rc.exists(*targets[i : i + 1000]))
                        for i in range(0, len(targets), 1000))
    finally:
        rc.close()
    remaining = count_keys(url)
    expected = layout.size - layout.expected_deleted
    return {"survivors": survivors, "remaining": remaining, "expected_remaining": expected,
            "verified": survivors == 0 and remaining == expected}


def _small(url: str, config: BenchConfig, say: Callable[[str], None]) -> dict[str, Any]:
    """SMALL: exact triples, redis-py's unlink and tagged pairs, interleaved; verified."""
    owners = slot_owners(url)
    layout = small_layout(config.size, owners)
    say(f"SMALL: {config.size} keys; {config.small_calls} calls of each kind - filling")
    flush_cluster(url)
    written = write_fill(url, plan_fill(url, layout.keys()))
    if written != layout.size:
        raise RuntimeError(f"SMALL: fill wrote {written} keys, expected {layout.size}")
    spec = {"url": url, "kind": "small", "calls": config.small_calls,
            "triples": [list(t) for t in layout.triples], "tags": list(layout.tags),
            "owners": layout.key_owners(owners)}
    res = _child(spec, lambda: None, module=_CALLS_MODULE)
    remaining = count_keys(url)
    res.update(size=config.size, remaining=remaining, expected_remaining=layout.size)
    res["verified"] = ("error" not in res and res["mismatches"] == 0 and res["survivors"] == 0
                       and remaining == layout.size)
    if "error" not in res:
        lat = res["latency"]
        unlink = lat["redis_py_unlink"]["p50_ms"]
        res["exact_vs_unlink_p50"] = lat["exact"]["p50_ms"] / unlink if unlink else None
        res["tagged_vs_unlink_p50"] = lat["tagged"]["p50_ms"] / unlink if unlink else None
        say(f"  SMALL p50: exact {lat['exact']['p50_ms']} ms, redis-py unlink {unlink} ms, "
            f"tagged {lat['tagged']['p50_ms']} ms")
    if not res["verified"]:
        say("  SMALL VERIFY FAILED " + json.dumps(res)[:800])
    return res


def _latency_run(url: str, sc: Scenario, guard: SlowlogGuard, plan: Any, config: BenchConfig,
                 rate: float | None, say: Callable[[str], None]) -> dict[str, Any]:
    """GET latency idle, then while clusterinval runs ``sc`` (with ``rate`` keys/s or unlimited)."""
    idle = TrafficTally()
    during = TrafficTally()
    keys = [f"cache:item:{i}" for i in range(0, sc.total, max(1, sc.total // 10_000))]

    def pick(n: int) -> tuple[bool, str]:
        return False, keys[(n * 7919) % len(keys)]

    async def traffic(proc: subprocess.Popen[str] | None) -> None:
        client = RedisCluster.from_url(url)
        try:
            await client.initialize()
            if proc is None:
                await run_traffic(client, pick, rate=config.get_rate, duration_s=config.idle_s,
                                  tally=idle)
                return
            # Bounded: chunks of 0.2 s while the child runs, at most the child's own time limit.
            deadline = time.monotonic() + _CHILD_TIMEOUT_S
            while proc.poll() is None and time.monotonic() < deadline:
                await run_traffic(client, pick, rate=config.get_rate, duration_s=0.2,
                                  tally=during)
        finally:
            await client.aclose()

    options: dict[str, Any] = {"keys_per_second": rate} if rate else {}

    # Idle baseline on the filled cluster, then the measured run with traffic alongside.
    res = _one_run(url, sc, "clusterinval", guard, plan, options,
                   during=lambda proc: anyio.run(traffic, proc),
                   before=lambda: anyio.run(traffic, None))
    label = f"{rate:g} keys/s" if rate else "unlimited"
    i_s, d_s = LatencySummary.of(idle.latencies), LatencySummary.of(during.latencies)
    say(f"  GET p99 idle {i_s.p99_ms} ms, during S2 ({label}) {d_s.p99_ms} ms")
    return {"variant": f"S2 with clusterinval, rate limit {label}", "rate_limit": rate,
            "idle": i_s.to_dict(), "during": d_s.to_dict(),
            "p99_ratio": (d_s.p99_ms / i_s.p99_ms) if i_s.p99_ms and d_s.count else None,
            "errors": idle.errors + during.errors, "s2_wall_s": res.get("wall_s"),
            "verified": res["verified"], "run": res}


def _median(report: dict[str, Any], scenario: str, tool: str) -> float | None:
    for s in report["scenarios"]:
        if s["name"] == scenario:
            for t in s["tools"]:
                if t["tool"] == tool and not t.get("skipped"):
                    return float(t["median_s"])
    return None


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The performance goals, each with its figure and whether it is met (None: not measured)."""
    out: list[dict[str, Any]] = []

    def add(goal: str, figure: str, met: bool | None) -> None:
        out.append({"goal": goal, "measured": figure, "met": met})

    def ratio(sc: str, peer: str) -> float | None:
        a, b = _median(report, sc, "clusterinval"), _median(report, sc, peer)
        return b / a if a and b else None

    for sc in ("S1", "S2"):
        for peer, need in (("valkey-glide", 3.0), ("redis-py", 5.0)):
            r = ratio(sc, peer)
            add(f"{sc}: >= {need:g}x faster than {peer}",
                "-" if r is None else f"{r:.1f}x", None if r is None else r >= need)
        r = ratio(sc, "floor")
        add(f"{sc}: within 2x of the server-side floor (aim)",
            "-" if r is None else f"{1 / r:.2f}x the floor", None if r is None else 1 / r <= 2)
    s3 = _median(report, "S3", "clusterinval")
    add("S3: under 20 ms", "-" if s3 is None else f"{s3 * 1e3:.1f} ms",
        None if s3 is None else s3 < 0.020)
    r = ratio("S4", "redis-py")
    add("S4: >= 2x faster than redis-py unlink(*keys)", "-" if r is None else f"{r:.1f}x",
        None if r is None else r >= 2)
    worst = [(t.get("longest_command_ms") or 0.0, s["name"]) for s in report["scenarios"]
             for t in s["tools"] if t["tool"] == "clusterinval" and not t.get("skipped")]
    if worst:
        ms, where = max(worst)
        add("no command blocks a node > 10 ms (clusterinval, all scenarios)",
            f"longest {ms:.1f} ms ({where})", ms <= 10.0)
    for s in report["scenarios"]:
        if s["name"] == "S2":
            for t in s["tools"]:
                if t["tool"] == "clusterinval" and t.get("rss_growth_mb") is not None:
                    add("S2: client peak memory grows < 20 MB",
                        f"{t['rss_growth_mb']:.1f} MB (RSS)", t["rss_growth_mb"] < 20)
    mp, s1 = _median(report, "MP", "clusterinval"), _median(report, "S1", "clusterinval")
    if mp is not None and s1 is not None:
        add("MP: several patterns cost no more than one pass (vs S1, same size)",
            f"MP {mp:.3f} s vs S1 {s1:.3f} s", mp <= s1 * 1.25)
    _call_goals(report, add)
    for g in report.get("get_latency", []):
        if g["rate_limit"]:
            r = g["p99_ratio"]
            add("GET p99 during S2 with the rate limit within 2x of idle",
                "-" if r is None else f"{r:.2f}x ({g['during']['p99_ms']} vs "
                f"{g['idle']['p99_ms']} ms)", None if r is None else r <= 2)
    return out


def _count_text(n: int) -> str:
    """1000000 -> "1M", 100000 -> "100k"."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def _call_goals(report: dict[str, Any], add: Callable[[str, str, bool | None], None]) -> None:
    """The STORM and SMALL goals."""
    storm = report.get("storm")
    if storm:
        rows = {(r["tool"], r["callers"], r["calls"]): r for r in storm["summary"]}
        callers, calls = storm["callers"], storm["calls"]
        base = rows.get(("clusterinval", callers[0], calls)) if callers else None
        if base is not None:
            rate, p99 = base["calls_per_s"], base["p99_ms"]
            figure = ("-" if rate is None or p99 is None else
                      f"{rate:.0f} calls/s, p99 {p99:.0f} ms, {base['connection_errors']} "
                      f"connection errors, {'verified' if base['verified'] else 'NOT verified'}")
            met = None if rate is None or p99 is None else (
                rate >= 100 and p99 <= 1000 and base["connection_errors"] == 0
                and base["verified"])
            add(f"STORM, {_count_text(storm['size'])} keys, {calls} calls from "
                f"{callers[0]} callers: >= 100 calls/s, p99 <= 1 s, zero connection errors, "
                "every target gone and nothing else", figure, met)
        for more in callers[1:]:
            b = base["calls_per_s"] if base is not None else None
            scaled = _same_load_calls(calls, callers[0], more)
            same_load, same_calls = rows.get(("clusterinval", more, scaled)), rows.get(
                ("clusterinval", more, calls))
            if not b or same_load is None or not same_load["calls_per_s"]:
                continue
            a = same_load["calls_per_s"]
            figure = (f"{a / b:.2f}x ({a:.0f} vs {b:.0f} calls/s, {scaled // more or 1} calls "
                      "per caller as at the first count)")
            if same_calls is not None and same_calls["calls_per_s"] and scaled != calls:
                figure += (f"; the same {calls} calls: {same_calls['calls_per_s'] / b:.2f}x "
                           "(at most 2x: they merge into fewer passes)")
            add(f"STORM: {more} callers >= 2x the rate of {callers[0]}", figure, a / b >= 2)
    small = report.get("small")
    if small and "latency" in small:
        lat = small["latency"]
        r = small.get("exact_vs_unlink_p50")
        add("SMALL: 3 exact keys: p50 no slower than redis-py unlink(*keys)",
            "-" if r is None else f"{lat['exact']['p50_ms']:.3f} vs "
            f"{lat['redis_py_unlink']['p50_ms']:.3f} ms ({r:.2f}x)", None if r is None else r <= 1)
        r = small.get("tagged_vs_unlink_p50")
        add("SMALL: tagged pattern: p50 <= 2x redis-py's 3-key unlink p50",
            "-" if r is None else f"{lat['tagged']['p50_ms']:.3f} vs "
            f"{lat['redis_py_unlink']['p50_ms']:.3f} ms ({r:.2f}x)", None if r is None else r <= 2)
