"""``clusterinval invalidate`` and ``clusterinval count``: one run against a cluster."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import anyio
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from clusterinval._core.slots import SLOT_COUNT
from clusterinval._core.tally import ProgressWatch
from clusterinval._invalidator import ClusterInvalidator
from clusterinval.cli.checks import check_invalidation, check_url
from clusterinval.cli.output import (
    EXIT_BAD_INPUT,
    EXIT_INCOMPLETE,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    err_console,
    fail,
    print_json,
    print_result,
)
from clusterinval.compat import ENV_URL, mask_credentials
from clusterinval.errors import (
    ClusterConnectionError,
    ClusterInvalError,
    ClusterPermissionError,
    InvalidationError,
    InvalidInputError,
)
from clusterinval.exposition import push_metrics
from clusterinval.result import InvalidationResult

__all__ = ["count", "invalidate", "resolve_url"]


UrlOpt = Annotated[
    str | None,
    typer.Option("--url", "-u", metavar="URL",
                 help=f"Cluster URL (default: ${ENV_URL}, else `cluster up`'s)."),
]
KeyOpt = Annotated[
    list[str] | None,
    typer.Option("--key", "-k", metavar="KEY", help="Exact key to delete (repeatable)."),
]
PatternOpt = Annotated[
    list[str] | None,
    typer.Option("--pattern", "-p", metavar="PATTERN",
                 help="Redis glob of keys to delete (repeatable)."),
]
TagOpt = Annotated[
    list[str] | None,
    typer.Option("--tag", "-t", metavar="TAG",
                 help="Tag whose indexed keys to delete (repeatable; see docs/tags.md)."),
]
OperationOpt = Annotated[
    str,
    typer.Option("--operation", "-o", metavar="NAME",
                 help="operation_name: metric label and log tag."),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")
]
AllowAllOpt = Annotated[
    bool, typer.Option("--allow-match-all", help="Allow a pattern that matches every key.")
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option("--timeout", min=0.001, metavar="SECONDS", help="Give up after SECONDS."),
]
PushOpt = Annotated[
    str | None,
    typer.Option("--pushgateway", metavar="URL",
                 help="Push this run's metrics to a Prometheus Pushgateway."),
]


def resolve_url(url: str | None, *, as_json: bool = False) -> str:
    """The URL given, else $CLUSTERINVAL_URL, else the running `cluster up` cluster's."""
    if url:
        return url
    env = os.environ.get(ENV_URL)
    if env:
        return env
    from clusterinval.testing.local import LocalCluster, LocalClusterError

    try:
        running = LocalCluster.from_state()
    except LocalClusterError as exc:
        fail(str(exc), EXIT_BAD_INPUT, as_json=as_json)
    if running is not None:
        return running.url
    fail(
        f"no cluster URL: pass --url redis://host:port, set {ENV_URL}, "
        "or start a local cluster with `clusterinval cluster up`",
        EXIT_BAD_INPUT,
        as_json=as_json,
    )


def invalidate(
    url: UrlOpt = None,
    key: KeyOpt = None,
    pattern: PatternOpt = None,
    operation: OperationOpt = "cache",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count and sample matches; delete nothing.")
    ] = False,
    json_out: JsonOpt = False,
    allow_match_all: AllowAllOpt = False,
    timeout: TimeoutOpt = None,
    pushgateway: PushOpt = None,
    tag: TagOpt = None,
) -> None:
    """Delete exact keys, every key matching the patterns and every tagged key."""
    _run(url, key, pattern, operation, dry_run, json_out, allow_match_all, timeout, pushgateway,
         tag)


def count(
    url: UrlOpt = None,
    pattern: PatternOpt = None,
    key: KeyOpt = None,
    operation: OperationOpt = "cache",
    json_out: JsonOpt = False,
    allow_match_all: AllowAllOpt = False,
    timeout: TimeoutOpt = None,
    pushgateway: PushOpt = None,
    tag: TagOpt = None,
) -> None:
    """Count the keys an invalidation would delete, with a sample (a dry run)."""
    _run(url, key, pattern, operation, True, json_out, allow_match_all, timeout, pushgateway,
         tag)


def _run(
    url: str | None,
    keys: list[str] | None,
    patterns: list[str] | None,
    operation: str,
    dry_run: bool,
    as_json: bool,
    allow_match_all: bool,
    timeout: float | None,
    pushgateway: str | None,
    tags: list[str] | None = None,
) -> None:
    # Bad input is refused before any connection: exit 2 whatever state the cluster is in.
    try:
        check_invalidation(keys or [], patterns or [], operation,
                           allow_match_all=allow_match_all, tags=tags or [])
        target = resolve_url(url, as_json=as_json)
        check_url(target)
    except InvalidInputError as exc:
        fail(str(exc), EXIT_BAD_INPUT, as_json=as_json)
    options: dict[str, Any] = {}
    if timeout is not None:
        options["timeout_s"] = timeout
    registry = None
    if pushgateway:
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry()
    show_progress = not as_json and sys.stdout.isatty()
    try:
        result = anyio.run(
            _invalidate, target, keys, patterns, operation, dry_run, allow_match_all, options,
            registry, show_progress, tags,
        )
    except InvalidationError as exc:
        _push(pushgateway, registry)
        if as_json:
            print_json(exc.result.to_dict())
        else:
            print_result(exc.result)
        err_console.print(
            f"[bold red]incomplete:[/] {exc.result.uncovered_slot_count} slots not covered; "
            f"{exc}", soft_wrap=True,
        )
        raise typer.Exit(EXIT_INCOMPLETE) from None
    except InvalidInputError as exc:
        fail(str(exc), EXIT_BAD_INPUT, as_json=as_json)
    except ClusterConnectionError as exc:
        fail(f"cluster unreachable at {_safe(target)}: {exc}", EXIT_UNREACHABLE, as_json=as_json)
    except ClusterPermissionError as exc:
        fail(f"the server refused a command: {exc}", EXIT_REFUSED, as_json=as_json)
    except ValueError as exc:  # redis-py's own URL parsing errors
        fail(f"bad input: {exc}", EXIT_BAD_INPUT, as_json=as_json)
    except ClusterInvalError as exc:
        fail(str(exc), EXIT_INCOMPLETE, as_json=as_json)
    _push(pushgateway, registry)
    if as_json:
        print_json(result.to_dict())
    else:
        print_result(result)


async def _invalidate(
    url: str,
    keys: list[str] | None,
    patterns: list[str] | None,
    operation: str,
    dry_run: bool,
    allow_match_all: bool,
    options: dict[str, Any],
    registry: Any,
    show_progress: bool,
    tags: list[str] | None = None,
) -> InvalidationResult:
    async with ClusterInvalidator.from_url(url, registry=registry, **options) as inv:
        if not show_progress or tags:
            return await inv.invalidate(
                keys or None, patterns or None, operation, dry_run,
                allow_match_all=allow_match_all, tags=tags or None,
            )
        watch = inv.progress_watch()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_show_progress, watch, operation, dry_run)
            try:
                result = await inv.invalidate(
                    keys or None, patterns or None, operation, dry_run,
                    allow_match_all=allow_match_all, progress=watch,
                )
            finally:
                tg.cancel_scope.cancel()
        return result


async def _show_progress(watch: ProgressWatch, operation: str, dry_run: bool) -> None:
    """A live display of the run, redrawn until cancelled.

    The bar moves with the keys the passes have read against the nodes' DBSIZE (until a pass has
    read it, the bar pulses); slots show once a node's pass has covered them.
    """
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[read]}"),
        TextColumn("{task.fields[slots]}"),
        TextColumn("{task.fields[keys]} keys, {task.fields[scans]} calls"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(
            f"{operation} ({'counting' if dry_run else 'deleting'})", total=None,
            read="", slots="", keys=0, scans=0,
        )
        while True:
            snap = watch.snapshot()
            found = snap.matched if dry_run else snap.deleted
            total = snap.slots_to_cover or SLOT_COUNT
            covered = snap.covered_slots
            known = snap.keys_total > 0
            bar.update(task, completed=snap.keys_read if known else 0,
                       total=snap.keys_total if known else None,
                       read=f"{snap.keys_read:,}/{snap.keys_total:,} keys read" if known else "",
                       slots=f"{covered}/{total} slots covered" if covered else "",
                       keys=found, scans=snap.scan_calls)
            await anyio.sleep(0.1)


def _push(gateway: str | None, registry: Any) -> None:
    if not gateway or registry is None:
        return
    try:
        push_metrics(gateway, "clusterinval", registry)
    except Exception as exc:  # a failed push must not change the outcome of the run
        err_console.print(f"[yellow]warning:[/] could not push metrics to {gateway}: {exc}")


def _safe(url: str) -> str:
    return mask_credentials(url)
