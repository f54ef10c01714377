"""Shared passes on the in-memory cluster: concurrent calls merged into one reading of the
keyspace each get exactly the figures a lone run of their own request reports on the same data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from clusterinval._core.glob import compile_pattern
from clusterinval._core.planning import make_plan
from clusterinval._core.tally import RunTally
from clusterinval._engine.sharing import ShareOutcome
from clusterinval._invalidator import ClusterInvalidator
from clusterinval._io.memory import MemoryCluster
from clusterinval.errors import InvalidationError
from clusterinval.result import InvalidationResult

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {"backoff_base_s": 0.001, "backoff_cap_s": 0.01, "timeout_s": 20.0,
                        "command_timeout_s": 1.0}

# Prefix patterns that overlap in every way: nested (u:* / u:1* / u:1:*), siblings, and none.
PREFIXES = ["u:*", "u:1*", "u:1:*", "u:12:*", "u:2:*", "p:*", "p:3:*", "x:*"]
DATA = sorted({f"u:{i}:{j}" for i in (1, 2, 3, 12, 13) for j in range(40)}
              | {f"p:{i}:{j}" for i in (1, 3) for j in range(40)}
              | {f"q:{j}" for j in range(40)})


@dataclass(frozen=True)
class Request:
    """One call: prefix patterns, plus exact keys and a hash-tagged pattern of its own."""

    index: int
    patterns: tuple[str, ...]
    own_keys: bool

    @property
    def keys(self) -> list[str]:
        return [f"e:{self.index}:{j}" for j in range(3)] if self.own_keys else []

    @property
    def all_patterns(self) -> list[str]:
        tagged = [f"{{t{self.index}}}:*"] if self.own_keys else []
        return [*self.patterns, *tagged]

    def own_data(self) -> set[bytes]:
        if not self.own_keys:
            return set()
        return {k.encode() for k in self.keys} | {f"{{t{self.index}}}:{j}".encode()
                                                  for j in range(2)}


requests = st.lists(
    st.tuples(st.lists(st.sampled_from(PREFIXES), min_size=1, max_size=3, unique=True),
              st.booleans()),
    min_size=2, max_size=6,
).map(lambda raw: [Request(i, tuple(p), own) for i, (p, own) in enumerate(raw)])


def invalidator(cluster: MemoryCluster, **options: Any) -> ClusterInvalidator:
    return ClusterInvalidator._from_io(cluster, cluster.seeds, registry=CollectorRegistry(),
                                       **{**FAST, **options})


def fresh(reqs: list[Request]) -> MemoryCluster:
    cluster = MemoryCluster(primaries=3)
    cluster.set({k.encode() for k in DATA}.union(*(r.own_data() for r in reqs)))
    return cluster


async def run(inv: ClusterInvalidator, req: Request) -> InvalidationResult:
    try:
        return await inv.invalidate(keys=req.keys, patterns=req.all_patterns,
                                    operation_name=f"r{req.index}")
    except InvalidationError as exc:
        return exc.result


def figures(result: InvalidationResult) -> tuple[Any, ...]:
    return (result.deleted, result.matched, result.complete, result.per_pattern,
            result.exact_deleted)


def registry_value(inv: ClusterInvalidator, name: str) -> float:
    registry = inv.metrics.registry
    value = registry.get_sample_value(name)
    return 0.0 if value is None else value


@pytest.mark.parametrize("options", [{}, {"server_scripts": False}], ids=["walk", "client-scan"])
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reqs=requests)
async def test_each_caller_gets_what_a_lone_run_reports(options: dict[str, Any],
                                                        reqs: list[Request]) -> None:
    lone = []
    for req in reqs:
        cluster = fresh(reqs)
        async with invalidator(cluster, **options) as inv:
            lone.append(await run(inv, req))

    cluster = fresh(reqs)
    merged: dict[int, InvalidationResult] = {}
    async with invalidator(cluster, gather_window_s=0.05, **options) as inv:
        async def one(req: Request) -> None:
            merged[req.index] = await run(inv, req)

        async with anyio.create_task_group() as tg:
            for req in reqs:
                tg.start_soon(one, req)
        # Every call joined one pass.
        assert registry_value(inv, "clusterinval_shared_pass_calls_count") == 1
        assert registry_value(inv, "clusterinval_shared_pass_calls_sum") == len(reqs)

    for req, alone in zip(reqs, lone, strict=True):
        assert figures(merged[req.index]) == figures(alone), req
    globs = [compile_pattern(p) for r in reqs for p in r.all_patterns]
    gone = {k for k in DATA if any(g.match(k.encode()) for g in globs)}
    assert cluster.keys() == {k.encode() for k in DATA} - {k.encode() for k in gone}


async def test_metrics_count_a_key_once_and_results_count_it_for_each_caller() -> None:
    cluster = MemoryCluster(primaries=3)
    cluster.set({f"u:1:{j}".encode() for j in range(30)} | {f"u:2:{j}".encode() for j in range(10)})
    registry = CollectorRegistry()
    inv = ClusterInvalidator._from_io(cluster, cluster.seeds, registry=registry,
                                      gather_window_s=0.05, **FAST)
    async with inv:
        results: list[InvalidationResult] = []

        async def call(pattern: str, name: str) -> None:
            results.append(await inv.invalidate(patterns=[pattern], operation_name=name))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "u:*", "broad")
            tg.start_soon(call, "u:1:*", "narrow")
    by_name = {r.operation: r for r in results}
    assert by_name["broad"].deleted == 40 and by_name["narrow"].deleted == 30

    def deleted(name: str) -> float:
        return registry.get_sample_value("clusterinval_keys_deleted_total",
                                         {"operation": name}) or 0.0

    assert deleted("broad") + deleted("narrow") == 40
    assert cluster.keys() == set()


async def test_a_cancelled_caller_never_cancels_the_others() -> None:
    cluster = MemoryCluster(primaries=3)
    # Enough keys for several walk calls per node: the pass is still running when the first
    # deletions show, so its driver is cancelled mid-way.
    cluster.set({f"u:{i}:{j}".encode() for i in range(5) for j in range(2000)})
    for node in cluster.primaries():
        cluster.slow(node, 0.005)
    async with invalidator(cluster, gather_window_s=0.01) as inv:
        results: dict[int, InvalidationResult] = {}
        scopes: dict[int, anyio.CancelScope] = {}

        async def call(i: int) -> None:
            with anyio.CancelScope() as scopes[i]:
                results[i] = await inv.invalidate(patterns=[f"u:{i}:*"], operation_name="entity")

        async with anyio.create_task_group() as tg:
            for i in range(5):  # the first caller drives the pass
                tg.start_soon(call, i)
            with anyio.fail_after(5):
                while len(cluster.keys()) == 10_000:  # noqa: ASYNC110 - no event to await
                    await anyio.sleep(0.001)
            scopes[0].cancel()
    assert sorted(results) == [1, 2, 3, 4]
    assert all(r.complete and r.deleted == 2000 for r in results.values())
    left = cluster.keys()
    assert not any(k.startswith(f"u:{i}:".encode()) for k in left for i in range(1, 5))


async def test_a_caller_past_its_deadline_leaves_and_another_takes_over() -> None:
    cluster = MemoryCluster(primaries=3)
    cluster.set({f"u:{i}:{j}".encode() for i in range(2) for j in range(200)})
    frozen = cluster.primaries()[0]
    async with invalidator(cluster, gather_window_s=0.05) as inv:
        sharing = inv._sharing  # each member gets its own deadline here
        assert sharing is not None
        tallies = {name: RunTally(1) for name in ("short", "long")}
        outcomes: dict[str, ShareOutcome] = {}

        async def member(name: str, pattern: str, timeout_s: float) -> None:
            plan = make_plan(None, [pattern])
            outcomes[name] = await sharing.serve(plan, tallies[name], timeout_s)

        cluster.freeze(frozen)
        async with anyio.create_task_group() as tg:
            tg.start_soon(member, "short", "u:0:*", 0.3)  # first in: it drives, then leaves
            tg.start_soon(member, "long", "u:1:*", 10.0)
            with anyio.fail_after(5):
                while "short" not in outcomes:  # noqa: ASYNC110 - a result, not an event
                    await anyio.sleep(0.01)
            cluster.thaw(frozen)
    short, long = tallies["short"], tallies["long"]
    assert short.timed_out and len(short.uncovered) > 0
    frozen_slots = {s for s in range(16384) if cluster.owner(s) == frozen}
    assert frozen_slots <= set(short.uncovered)
    assert not long.uncovered and not long.timed_out and long.deleted == 200
    assert outcomes["long"].callers == 2
    left = cluster.keys()
    assert not any(k.startswith(b"u:1:") for k in left)
    assert short.deleted == 200 - sum(k.startswith(b"u:0:") for k in left)
