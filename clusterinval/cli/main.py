"""The ``clusterinval`` entry point: the Typer application and its commands."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.logging import RichHandler

from clusterinval.cli import bench_cmd, cluster_cmd, demo, invalidate_cmd, loadtest_cmd
from clusterinval.cli.output import err_console

__all__ = ["app", "main"]

app = typer.Typer(
    name="clusterinval",
    help="Cache invalidation for Redis Cluster: exact keys and glob patterns on every primary.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.callback()
def _root(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="Show library logs (-vv: debug).")
    ] = 0,
) -> None:
    """Cache invalidation for Redis Cluster: exact keys and glob patterns on every primary."""
    # The command reports outcomes itself; library logs are opt-in so stderr stays readable.
    # basicConfig leaves an application's (or pytest's) logging set-up alone.
    level = {0: logging.CRITICAL, 1: logging.INFO}.get(verbose, logging.DEBUG)
    handler = RichHandler(console=err_console, show_path=False, show_time=False, level=level)
    logging.basicConfig(level=level, format="%(name)s: %(message)s", handlers=[handler])


app.command("invalidate")(invalidate_cmd.invalidate)
app.command("count")(invalidate_cmd.count)
app.add_typer(cluster_cmd.app, name="cluster")
app.command("demo")(demo.demo)
app.command("loadtest")(loadtest_cmd.loadtest)
app.command("bench")(bench_cmd.bench)


def main() -> None:
    """Run the command line."""
    app()


if __name__ == "__main__":
    main()
