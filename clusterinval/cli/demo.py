"""``clusterinval demo``: a local cluster, guide-shaped cache entries, the guide's invalidations.

Every invalidation is checked against what the demo itself computes from the keys it wrote: the
keys that match are exactly the ones deleted, and every other key is still there at the end.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Annotated

import anyio
import redis
import typer
from prometheus_client import CollectorRegistry
from rich import box
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from clusterinval._core.glob import Glob, compile_pattern
from clusterinval._core.slots import key_slot
from clusterinval._invalidator import ClusterInvalidator
from clusterinval.cli.output import EXIT_INCOMPLETE, err_console, fail, out_console, print_table
from clusterinval.compat import RedisService
from clusterinval.result import InvalidationResult
from clusterinval.rules import BUILTIN_RULES
from clusterinval.testing.fill import slot_owners
from clusterinval.testing.local import LocalCluster, LocalClusterError

__all__ = ["Dataset", "build_dataset", "demo"]

_PIPELINE_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class Dataset:
    """The keys the demo writes, and the ids its invalidations target."""

    keys: tuple[str, ...]
    endpoints: tuple[str, ...]
    users: tuple[str, ...]
    projects: tuple[str, ...]
    clusters: tuple[str, ...]


def build_dataset(users: int = 2000) -> Dataset:
    """Cache entries shaped like the guide's: catalog, models, users, projects, clusters, noise."""
    n_users = max(users, 10)
    endpoints = tuple(f"ep-{i:04d}" for i in range(max(n_users // 5, 10)))
    user_ids = tuple(f"u{i:05d}" for i in range(n_users))
    projects = tuple(f"p{i:04d}" for i in range(max(n_users // 2, 10)))
    clusters = tuple(f"c{i:03d}" for i in range(max(n_users // 10, 10)))
    keys: list[str] = []
    keys += [f"catalog:model:{e}" for e in endpoints]
    keys += [f"catalog:models:list:page:{n}" for n in range(300)]
    keys += [f"catalog:models:search:q{q}:page:{n}" for q in range(50) for n in range(10)]
    keys += [f"models:list:page:{n}" for n in range(200)]
    keys += [f"models:search:q{n}" for n in range(200)]
    for u in user_ids:
        keys += [f"user:{u}", f"user:{u}:profile", f"user:{u}:settings", f"user:session:{u}"]
        keys += [f"user:{u}:sessions:s{s}" for s in range(3)]
        keys += [f"user:{u}:projects:page:{p}" for p in range(2)]
    for p in projects:
        keys += [f"project:{p}", f"project:{p}:members", f"project:{p}:settings",
                 f"project:{p}:stats"]
    keys += [f"projects:list:page:{n}" for n in range(500)]
    for c in clusters:
        keys += [f"cluster:{c}", f"cluster:{c}:status", f"cluster:{c}:metrics"]
        keys += [f"cluster:{c}:nodes:n{k}" for k in range(3)]
    keys += [f"clusters:list:page:{n}" for n in range(100)]
    for e in endpoints:
        keys += [f"endpoint:{e}", f"endpoint:{e}:status", f"endpoint:{e}:metrics"]
        keys += [f"endpoint:{e}:workers:w{w}" for w in range(4)]
    # Entries no invalidation touches: they must all survive.
    keys += [f"session:{i}" for i in range(n_users * 5)]
    keys += [f"rate:{i}" for i in range(n_users * 2)]
    return Dataset(tuple(keys), endpoints, user_ids, projects, clusters)


@dataclass(slots=True)
class _Step:
    api: str
    call: str
    keys: tuple[str, ...]
    patterns: tuple[str, ...]
    run: Callable[[], Awaitable[InvalidationResult | None]]
    dry_run: bool = False


@dataclass(slots=True)
class _Row:
    step: _Step
    expected: int
    result: InvalidationResult | None
    seconds: float
    ok: bool
    note: str = ""


@dataclass(slots=True)
class _State:
    present: set[str]
    removed: set[str] = field(default_factory=set)
    rows: list[_Row] = field(default_factory=list)


def demo(
    primaries: Annotated[int, typer.Option("--primaries", min=1, help="Primary count.")] = 3,
    replicas: Annotated[int, typer.Option("--replicas", min=0, help="Replicas per primary.")] = 1,
    users: Annotated[
        int, typer.Option("--users", min=10, help="Users to cache (about 20 keys each).")
    ] = 2000,
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", min=0, max=65535,
                     help="Serve the demo's Prometheus metrics on 127.0.0.1:PORT while it runs."),
    ] = None,
    pushgateway: Annotated[
        str | None,
        typer.Option("--pushgateway", help="Push the demo's metrics to this Pushgateway."),
    ] = None,
) -> None:
    """Start a local cluster, fill it, run the guide's invalidations through both APIs, verify."""
    data = build_dataset(users)
    show_progress = sys.stdout.isatty()
    out_console.print(
        f"starting a local cluster: {primaries} primaries x {replicas} replicas ..."
    )
    started = time.perf_counter()
    try:
        cluster = LocalCluster(primaries=primaries, replicas=replicas).start(timeout=60)
    except (LocalClusterError, ValueError) as exc:
        fail(f"could not start the local cluster: {exc}", EXIT_INCOMPLETE)
    try:
        ready_s = time.perf_counter() - started
        out_console.print(f"cluster ready at {cluster.url} in {ready_s:.1f} s")
        t0 = time.perf_counter()
        _fill(cluster, data.keys, show_progress)
        out_console.print(
            f"wrote {len(data.keys):,} cache entries in {time.perf_counter() - t0:.2f} s "
            "(pipelined per primary)"
        )
        state = _State(present=set(data.keys))
        registry = CollectorRegistry()
        with _metrics_server(metrics_port, registry):
            anyio.run(_run_all, cluster.url, data, state, registry)
        if pushgateway:
            _push(pushgateway, registry)
        _print_table(state.rows)
        survivors, missing = _verify(cluster, state)
    finally:
        cluster.stop()
    deleted = sum(r.result.deleted for r in state.rows if r.result is not None)
    all_ok = all(r.ok for r in state.rows) and survivors == 0 and missing == 0
    out_console.print(
        f"\n[bold]summary[/]: {len(data.keys):,} entries written, {len(state.rows)} invalidations, "
        f"{deleted:,} deleted; matched keys left behind: {survivors}; "
        f"other keys missing: {missing} of {len(state.present):,}; cluster stopped."
    )
    if not all_ok:
        err_console.print("[bold red]demo FAILED:[/] a result did not match what was expected")
        raise typer.Exit(EXIT_INCOMPLETE)
    out_console.print("[bold green]every matched key is gone and everything else is intact[/]")


# -- filling -----------------------------------------------------------------------------------


def _by_node(cluster: LocalCluster, keys: Iterable[str]) -> dict[int, list[str]]:
    owners = slot_owners(cluster.url)
    groups: dict[int, list[str]] = {}
    for key in keys:
        owner = owners[key_slot(key.encode())]
        assert owner is not None, "the demo cluster serves every slot"
        groups.setdefault(owner[1], []).append(key)
    return groups


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _fill(cluster: LocalCluster, keys: tuple[str, ...], show_progress: bool) -> None:
    groups = _by_node(cluster, keys)
    with Progress(console=out_console, transient=True, disable=not show_progress) as bar:
        task = bar.add_task("writing cache entries", total=len(keys))
        for port, node_keys in groups.items():
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
            try:
                for chunk in _chunks(node_keys, _PIPELINE_CHUNK):
                    pipe = client.pipeline(transaction=False)
                    for key in chunk:
                        pipe.set(key, "cached-value", ex=3600)
                    pipe.execute()
                    bar.advance(task, len(chunk))
            finally:
                client.close()


# -- the invalidations -------------------------------------------------------------------------


@contextlib.contextmanager
def _metrics_server(port: int | None, registry: CollectorRegistry) -> Iterator[None]:
    if port is None:
        yield
        return
    from clusterinval.exposition import start_metrics_server

    server = start_metrics_server(port, "127.0.0.1", registry)
    out_console.print(f"metrics at {server.url}")
    try:
        yield
    finally:
        server.close()


def _push(gateway: str, registry: CollectorRegistry) -> None:
    from clusterinval.exposition import push_metrics

    try:
        push_metrics(gateway, "clusterinval_demo", registry)
    except Exception as exc:  # the demo's outcome does not depend on the gateway
        err_console.print(f"[yellow]warning:[/] could not push metrics to {gateway}: {exc}")
    else:
        out_console.print(f"metrics pushed to {gateway}")


async def _run_all(url: str, data: Dataset, state: _State, registry: CollectorRegistry) -> None:
    # Both APIs record into one registry: instruments are shared per registry.
    async with (
        ClusterInvalidator.from_url(url, registry=registry) as inv,
        RedisService(url, registry=registry) as svc,
    ):
        e, u, p, c = data.endpoints, data.users, data.projects, data.clusters

        async def compat(call: Awaitable[None]) -> InvalidationResult | None:
            svc.last_result = None
            await call
            return svc.last_result

        user_rule = BUILTIN_RULES.render("user", user_id=u[1])
        catalog_one = BUILTIN_RULES.render("catalog", endpoint_id=e[1])
        user_rule2 = BUILTIN_RULES.render("user", user_id=u[2])
        cluster_one = BUILTIN_RULES.render("cluster", cluster_id=c[0])
        steps = [
            _Step("core", "invalidate(patterns=['user:*'], dry_run=True)", (),
                  ("user:*",),
                  lambda: inv.invalidate(patterns=["user:*"], operation_name="user_count",
                                         dry_run=True), dry_run=True),
            _Step("core", f"invalidate(project {p[0]})", (f"project:{p[0]}",),
                  (f"project:{p[0]}:*", "projects:list:*"),
                  lambda: inv.invalidate(keys=[f"project:{p[0]}"],
                                         patterns=[f"project:{p[0]}:*", "projects:list:*"],
                                         operation_name="project")),
            _Step("core", f"invalidate(user_session {u[0]})",
                  (f"user:session:{u[0]}",), (f"user:{u[0]}:*",),
                  lambda: inv.invalidate(keys=[f"user:session:{u[0]}"],
                                         patterns=[f"user:{u[0]}:*"],
                                         operation_name="user_session")),
            _Step("core", "invalidate(models_bulk)", (),
                  ("models:list:*", "models:search:*"),
                  lambda: inv.invalidate(patterns=["models:list:*", "models:search:*"],
                                         operation_name="models_bulk")),
            _Step("core", f"invalidate(endpoint_update {e[0]})",
                  (f"endpoint:{e[0]}", f"endpoint:{e[0]}:status", f"endpoint:{e[0]}:metrics"),
                  (f"endpoint:{e[0]}:workers:*",),
                  lambda: inv.invalidate(
                      keys=[f"endpoint:{e[0]}", f"endpoint:{e[0]}:status",
                            f"endpoint:{e[0]}:metrics"],
                      patterns=[f"endpoint:{e[0]}:workers:*"], operation_name="endpoint_update")),
            _Step("core", f"invalidate_rule('user', user_id={u[1]!r})",
                  user_rule.keys, user_rule.patterns,
                  lambda: inv.invalidate_rule("user", user_id=u[1])),
            _Step("compat", "invalidate_catalog_cache()", (), ("catalog:models:*",),
                  lambda: compat(svc.invalidate_catalog_cache())),
            _Step("compat", f"invalidate_catalog_cache(endpoint_id={e[1]!r})",
                  catalog_one.keys, catalog_one.patterns,
                  lambda: compat(svc.invalidate_catalog_cache(endpoint_id=e[1]))),
            _Step("compat", f"invalidate_user_cache({u[2]!r})", user_rule2.keys,
                  user_rule2.patterns, lambda: compat(svc.invalidate_user_cache(u[2]))),
            _Step("compat", f"invalidate_cluster_cache({c[0]!r})", cluster_one.keys,
                  cluster_one.patterns,
                  lambda: compat(svc.invalidate_cluster_cache(cluster_id=c[0]))),
            _Step("compat", "invalidate_cache_by_patterns(project, 2 ids)",
                  (f"project:{p[1]}", f"project:{p[2]}"), (f"project:{p[1]}:*",),
                  lambda: compat(svc.invalidate_cache_by_patterns(
                      specific_keys=[f"project:{p[1]}", f"project:{p[2]}"],
                      patterns=[f"project:{p[1]}:*"], operation_name="project"))),
        ]
        for step in steps:
            state.rows.append(await _run_step(step, state))


def _expected(step: _Step, present: set[str]) -> set[str]:
    globs: list[Glob] = [compile_pattern(pat) for pat in step.patterns]
    hit = {k for k in step.keys if k in present}
    for key in present:
        raw = key.encode()
        if any(raw.startswith(g.literal_prefix) and g.match(raw) for g in globs):
            hit.add(key)
    return hit


async def _run_step(step: _Step, state: _State) -> _Row:
    expected = _expected(step, state.present)
    t0 = time.perf_counter()
    try:
        result = await step.run()
    except Exception as exc:
        return _Row(step, len(expected), None, time.perf_counter() - t0, False, str(exc))
    seconds = time.perf_counter() - t0
    if result is None:
        return _Row(step, len(expected), None, seconds, False, "no result (see the log)")
    figure = result.matched if step.dry_run else result.deleted
    ok = result.complete and figure == len(expected)
    if not step.dry_run:
        state.present -= expected
        state.removed |= expected
    return _Row(step, len(expected), result, seconds, ok)


def _print_table(rows: list[_Row]) -> None:
    table = Table(title="the guide's invalidations", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("#", justify="right")
    table.add_column("API")
    table.add_column("call", overflow="fold", min_width=28, ratio=1)
    for name in ("expected", "deleted", "ms"):
        table.add_column(name, justify="right")
    for i, row in enumerate(rows, 1):
        r = row.result
        if r is None:
            figure = f"[bold red]failed: {escape(row.note)}[/]"
        else:
            text = f"0 (dry: {r.matched})" if r.dry_run else str(r.deleted)
            figure = f"[green]{text}[/]" if row.ok else f"[bold red]{text} WRONG[/]"
        table.add_row(str(i), row.step.api, row.step.call, str(row.expected), figure,
                      f"{row.seconds * 1000:.1f}")
    print_table(table)
    out_console.print(
        "core = ClusterInvalidator, compat = clusterinval.compat.RedisService; expected = the "
        "keys the demo itself computed would match (deleted in green when equal); ms = wall time"
    )


# -- verification ------------------------------------------------------------------------------


def _verify(cluster: LocalCluster, state: _State) -> tuple[int, int]:
    """(deleted keys still present, kept keys missing), by EXISTS on each key's primary."""
    survivors = _count_existing(cluster, state.removed)
    missing = len(state.present) - _count_existing(cluster, state.present)
    return survivors, missing


def _count_existing(cluster: LocalCluster, keys: set[str]) -> int:
    found = 0
    for port, node_keys in _by_node(cluster, keys).items():
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
        try:
            for chunk in _chunks(node_keys, _PIPELINE_CHUNK):
                pipe = client.pipeline(transaction=False)
                for key in chunk:
                    pipe.exists(key)
                found += sum(int(n) for n in pipe.execute())
        finally:
            client.close()
    return found
