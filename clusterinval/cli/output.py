"""Exit codes, error reporting and the rendering of results for the command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final, NoReturn, TypeVar

import anyio
import typer
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from clusterinval.errors import ClusterConnectionError, ClusterPermissionError
from clusterinval.result import InvalidationResult

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INCOMPLETE",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "err_console",
    "fail",
    "out_console",
    "print_json",
    "print_result",
    "print_table",
    "run_on_cluster",
]

T = TypeVar("T")

EXIT_OK: Final = 0
EXIT_INCOMPLETE: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_REFUSED: Final = 4

# stdout carries results only (one JSON object with --json); every message goes to stderr.
out_console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_table(table: RenderableType, console: Console | None = None) -> None:
    """Print ``table``; a pipe or file gets the table's full width instead of 80 columns."""
    target = console or out_console
    if target.is_terminal:
        target.print(table)
        return
    # Off a terminal rich assumes 80 columns and wraps cells mid-word; nobody reads the width of
    # a file, so give the table the width its widest row needs.
    needed = Measurement.get(target, target.options.update(width=10_000), table).maximum
    wide = Console(file=target.file, width=max(needed, target.width), highlight=False)
    wide.print(table)


def print_json(data: dict[str, Any]) -> None:
    """Write ``data`` as one JSON object on one line of stdout."""
    sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int, *, as_json: bool = False) -> NoReturn:
    """Report ``message`` on stderr (and as a JSON error object with ``as_json``) and exit."""
    err_console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    if as_json:
        print_json({"error": message, "exit_code": code})
    raise typer.Exit(code)


def run_on_cluster(fn: Callable[..., Awaitable[T]], *args: Any, as_json: bool = False) -> T:
    """``fn(*args)`` run to its end; an unreachable cluster or a refused command exits."""
    try:
        return anyio.run(fn, *args)
    except ClusterConnectionError as exc:
        fail(f"cluster unreachable: {exc}", EXIT_UNREACHABLE, as_json=as_json)
    except ClusterPermissionError as exc:
        fail(f"the server refused a command: {exc}", EXIT_REFUSED, as_json=as_json)


def print_result(result: InvalidationResult, *, show_nodes: bool = True) -> None:
    """A human summary of ``result`` on stdout: totals, per node, per pattern, sample."""
    verb = "would delete" if result.dry_run else "deleted"
    count = result.matched if result.dry_run else result.deleted
    state = "[green]complete[/]" if result.complete else "[bold red]INCOMPLETE[/]"
    out_console.print(
        f"[bold]{result.operation}[/]: {verb} [bold]{count}[/] keys "
        f"(matched {result.matched}, scanned {result.scanned}) in {result.duration_s:.3f} s, "
        f"{state}"
    )
    if result.per_pattern:
        table = Table("pattern", "matched" if result.dry_run else "deleted", box=None)
        for pattern, figure in result.per_pattern:
            table.add_row(pattern, str(figure))
        print_table(table)
    if show_nodes and result.nodes:
        errors = any(n.error for n in result.nodes)
        table = Table(title="per primary", title_justify="left")
        table.add_column("node", no_wrap=True)
        for name in ("deleted", "matched", "scanned", "SCANs", "UNLINKs", "seconds"):
            table.add_column(name, justify="right")
        if errors:
            table.add_column("error")
        for n in result.nodes:
            cells = [n.node, str(n.deleted), str(n.matched), str(n.scanned), str(n.scan_calls),
                     str(n.unlink_calls), f"{n.duration_s:.3f}"]
            table.add_row(*cells, *([n.error or ""] if errors else []))
        print_table(table)
    if result.dry_run and result.sample:
        out_console.print("sample of matching keys:")
        for key in result.sample:
            out_console.print(f"  {key.decode('utf-8', 'backslashreplace')}", markup=False)
    if not result.complete:
        out_console.print(
            f"[bold red]{result.uncovered_slot_count} of 16384 slots were not covered[/]"
        )
        for err in result.errors:
            out_console.print(f"  {err}", markup=False)
