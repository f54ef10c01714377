"""``clusterinval cluster up|down|status``: a detached local cluster for development."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from clusterinval.cli.base import Command, Group
from clusterinval.cli.output import EXIT_INCOMPLETE, fail, out_console, print_table
from clusterinval.testing.local import LocalCluster, LocalClusterError

__all__ = ["app"]

app = typer.Typer(
    help="A local Redis Cluster of redis-server processes on loopback ports (development).",
    no_args_is_help=True,
    cls=Group,
)


@app.command(cls=Command)
def up(
    primaries: Annotated[int, typer.Option("--primaries", min=1, help="Primary count.")] = 3,
    replicas: Annotated[int, typer.Option("--replicas", min=0, help="Replicas per primary.")] = 1,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait.")] = 60.0,
) -> None:
    """Start a cluster that keeps running after this command exits."""
    try:
        cluster = LocalCluster(primaries=primaries, replicas=replicas).start(
            timeout=timeout, detach=True
        )
    except (LocalClusterError, ValueError) as exc:
        fail(str(exc), EXIT_INCOMPLETE)
    out_console.print(f"cluster up: {cluster.url}  ({primaries} primaries x {replicas} replicas)")
    out_console.print(
        "commands without --url now use it; stop it with `clusterinval cluster down`"
    )


@app.command(cls=Command)
def down() -> None:
    """Stop the cluster started by `cluster up` (nothing to do when none runs)."""
    cluster = _running()
    if cluster is None:
        out_console.print("no local cluster is running")
        return
    url = cluster.url
    cluster.stop()
    out_console.print(f"cluster at {url} stopped")


@app.command(cls=Command)
def status() -> None:
    """Show the running cluster's URL, nodes and state (exit 1 when none runs)."""
    cluster = _running()
    if cluster is None:
        out_console.print("no local cluster is running (start one with `clusterinval cluster up`)")
        raise typer.Exit(EXIT_INCOMPLETE)
    st = cluster.status()
    out_console.print(f"url: {st.url}   cluster_state: {st.cluster_state}   workdir: {st.workdir}")
    table = Table("port", "role", "pid", "alive", "paused")
    for node in st.nodes:
        table.add_row(str(node.port), node.role, str(node.pid), "yes" if node.alive else "NO",
                      "yes" if node.paused else "")
    print_table(table)
    if st.cluster_state != "ok":
        raise typer.Exit(EXIT_INCOMPLETE)


def _running() -> LocalCluster | None:
    try:
        return LocalCluster.from_state()
    except LocalClusterError as exc:
        fail(str(exc), EXIT_INCOMPLETE)
