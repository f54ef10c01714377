"""``clusterinval queue status|submit|retry-dead``: look at and feed an invalidation queue."""

from __future__ import annotations

from typing import Annotated

import anyio
import typer
from rich.table import Table

from clusterinval.cli.base import Command, Group
from clusterinval.cli.checks import check_invalidation, check_url
from clusterinval.cli.invalidate_cmd import JsonOpt, KeyOpt, OperationOpt, PatternOpt, UrlOpt
from clusterinval.cli.invalidate_cmd import resolve_url as _resolve
from clusterinval.cli.output import (
    EXIT_BAD_INPUT,
    EXIT_UNREACHABLE,
    fail,
    out_console,
    print_json,
    print_table,
)
from clusterinval.cli.worker_cmd import QueueUrlOpt, StreamOpt
from clusterinval.compat import mask_credentials
from clusterinval.errors import InvalidInputError, QueueUnavailableError
from clusterinval.queue.client import InvalidationQueue
from clusterinval.queue.status import QueueStatus
from clusterinval.queue.stream import DEFAULT_GROUP, DEFAULT_STREAM

__all__ = ["app"]

app = typer.Typer(
    help="The invalidation queue: its status, submitting to it, re-submitting dead letters.",
    no_args_is_help=True,
    cls=Group,
)

GroupOpt = Annotated[
    str, typer.Option("--group", metavar="NAME", help="Consumer group of the workers.")
]


def _open(url: str | None, queue_url: str | None, stream: str, group: str, as_json: bool
          ) -> InvalidationQueue:
    try:
        target = _resolve(url, as_json=as_json)
        check_url(target)
        if queue_url:
            check_url(queue_url)
        return InvalidationQueue.from_url(target, queue_url=queue_url, stream=stream,
                                          group=group)
    except InvalidInputError as exc:
        fail(str(exc), EXIT_BAD_INPUT, as_json=as_json)


@app.command(cls=Command)
def status(
    url: UrlOpt = None,
    queue_url: QueueUrlOpt = None,
    stream: StreamOpt = DEFAULT_STREAM,
    group: GroupOpt = DEFAULT_GROUP,
    json_out: JsonOpt = False,
) -> None:
    """Waiting, pending, dead letters and the age of the oldest unfinished request."""
    queue = _open(url, queue_url, stream, group, json_out)

    async def read() -> QueueStatus:
        try:
            return await queue.status()
        finally:
            await queue.aclose()

    st = anyio.run(read)
    if not st.reachable:
        fail(f"the stream {stream} at {mask_credentials(queue.url)} is unreachable",
             EXIT_UNREACHABLE, as_json=json_out)
    if json_out:
        print_json(st.to_dict())
        return
    table = Table("stream", "waiting", "pending", "dead letters", "oldest age (s)")
    table.add_row(st.stream, str(st.waiting), str(st.pending), str(st.dead_letters),
                  f"{st.oldest_age_s:.1f}")
    print_table(table)


@app.command(cls=Command)
def submit(
    url: UrlOpt = None,
    key: KeyOpt = None,
    pattern: PatternOpt = None,
    operation: OperationOpt = "cache",
    queue_url: QueueUrlOpt = None,
    stream: StreamOpt = DEFAULT_STREAM,
    json_out: JsonOpt = False,
) -> None:
    """Queue an invalidation for the workers; prints its request id."""
    try:
        check_invalidation(key or [], pattern or [], operation, allow_match_all=False)
    except InvalidInputError as exc:
        fail(str(exc), EXIT_BAD_INPUT, as_json=json_out)
    queue = _open(url, queue_url, stream, DEFAULT_GROUP, json_out)

    async def run() -> str:
        try:
            return await queue.submit(keys=key or None, patterns=pattern or None,
                                      operation_name=operation)
        finally:
            await queue.aclose()

    try:
        request_id = anyio.run(run)
    except InvalidInputError as exc:
        fail(str(exc), EXIT_BAD_INPUT, as_json=json_out)
    except QueueUnavailableError as exc:
        fail(str(exc), EXIT_UNREACHABLE, as_json=json_out)
    if json_out:
        print_json({"request_id": request_id, "stream": stream})
    else:
        out_console.print(request_id)


@app.command("retry-dead", cls=Command)
def retry_dead(
    url: UrlOpt = None,
    queue_url: QueueUrlOpt = None,
    stream: StreamOpt = DEFAULT_STREAM,
    limit: Annotated[
        int, typer.Option("--limit", min=1, metavar="N", help="Re-submit at most N.")
    ] = 1000,
    json_out: JsonOpt = False,
) -> None:
    """Put dead-lettered requests back on the stream for the workers to try again."""
    queue = _open(url, queue_url, stream, DEFAULT_GROUP, json_out)

    async def run() -> int:
        try:
            return await queue.retry_dead(limit)
        finally:
            await queue.aclose()

    try:
        count = anyio.run(run)
    except QueueUnavailableError as exc:
        fail(str(exc), EXIT_UNREACHABLE, as_json=json_out)
    if json_out:
        print_json({"resubmitted": count, "stream": stream})
    else:
        out_console.print(f"re-submitted {count} dead-lettered requests to {stream}")
