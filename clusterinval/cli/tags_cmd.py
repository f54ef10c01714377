"""``clusterinval tags``: upkeep of the tag index."""

from __future__ import annotations

from typing import Annotated

import typer

from clusterinval._core.tags import validate_tags
from clusterinval._invalidator import ClusterInvalidator
from clusterinval.cli.base import Command, Group
from clusterinval.cli.checks import check_url
from clusterinval.cli.invalidate_cmd import JsonOpt, UrlOpt, resolve_url
from clusterinval.cli.output import (
    EXIT_BAD_INPUT,
    fail,
    out_console,
    print_json,
    run_on_cluster,
)
from clusterinval.errors import InvalidInputError
from clusterinval.result import TagGcResult

__all__ = ["app", "gc"]

app = typer.Typer(help="Upkeep of the tag index (see docs/tags.md).", no_args_is_help=True,
                  cls=Group)


@app.command("gc", cls=Command)
def gc(
    url: UrlOpt = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", "-t", metavar="TAG",
                     help="Only this tag's index (repeatable; default: every tag)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Drop index members whose keys expired or were deleted, in short steps."""
    try:
        tags = list(validate_tags(tag)) if tag else None
        target = resolve_url(url, as_json=json_out)
        check_url(target)
    except InvalidInputError as exc:
        fail(str(exc), EXIT_BAD_INPUT, as_json=json_out)
    done = run_on_cluster(_gc, target, tags, as_json=json_out)
    if json_out:
        print_json(done.to_dict())
        return
    out_console.print(f"{done.sets} tag indexes, {done.members:,} members checked, "
                      f"{done.removed:,} removed (their keys no longer exist)")


async def _gc(url: str, tags: list[bytes] | None) -> TagGcResult:
    async with ClusterInvalidator.from_url(url) as inv:
        return await inv.gc_tags(tags)
