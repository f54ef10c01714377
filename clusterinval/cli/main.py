"""The ``clusterinval`` entry point: the Typer application and its commands."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Annotated

import typer
from rich.logging import RichHandler

from clusterinval.cli import (
    bench_cmd,
    cluster_cmd,
    demo,
    explain_cmd,
    invalidate_cmd,
    loadtest_cmd,
    queue_cmd,
    tags_cmd,
    worker_cmd,
)
from clusterinval.cli.base import Command, Group
from clusterinval.cli.output import err_console, out_console

__all__ = ["app", "installed_version", "main"]

app = typer.Typer(
    name="clusterinval",
    help="Cache invalidation for Redis Cluster: exact keys and glob patterns on every primary.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    cls=Group,
)


def installed_version() -> str:
    """The installed clusterinval's version ("unknown" when run from a bare source tree)."""
    try:
        return package_version("clusterinval")
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        out_console.print(f"clusterinval {installed_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="Show library logs (-vv: debug).")
    ] = 0,
    _version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True,
                     help="Print the version and exit."),
    ] = False,
) -> None:
    """Cache invalidation for Redis Cluster: exact keys and glob patterns on every primary."""
    # The command reports outcomes itself; library logs are opt-in so stderr stays readable.
    # basicConfig leaves an application's (or pytest's) logging set-up alone.
    level = {0: logging.CRITICAL, 1: logging.INFO}.get(verbose, logging.DEBUG)
    handler = RichHandler(console=err_console, show_path=False, show_time=False, level=level)
    logging.basicConfig(level=level, format="%(name)s: %(message)s", handlers=[handler])


app.command("invalidate", cls=Command)(invalidate_cmd.invalidate)
app.command("count", cls=Command)(invalidate_cmd.count)
app.command("explain", cls=Command)(explain_cmd.explain)
app.add_typer(cluster_cmd.app, name="cluster")
app.add_typer(tags_cmd.app, name="tags")
app.command("demo", cls=Command)(demo.demo)
app.command("loadtest", cls=Command)(loadtest_cmd.loadtest)
app.command("bench", cls=Command)(bench_cmd.bench)
app.command("worker", cls=Command)(worker_cmd.worker)
app.add_typer(queue_cmd.app, name="queue")


def main() -> None:
    """Run the command line."""
    app()


if __name__ == "__main__":
    main()
