"""``clusterinval worker``: apply the requests of an invalidation queue, as one consumer."""

from __future__ import annotations

import logging
import signal
from typing import Annotated

import anyio
import typer

from clusterinval._invalidator import ClusterInvalidator
from clusterinval.cli.checks import check_url
from clusterinval.cli.invalidate_cmd import UrlOpt, resolve_url
from clusterinval.cli.output import EXIT_BAD_INPUT, err_console, fail
from clusterinval.compat import mask_credentials
from clusterinval.errors import InvalidInputError
from clusterinval.exposition import start_metrics_server
from clusterinval.queue.stream import (
    DEFAULT_GROUP,
    DEFAULT_STREAM,
    QueueConnection,
    StreamNames,
    StreamStore,
)
from clusterinval.queue.worker import QueueWorker, WorkerOptions, default_consumer

__all__ = ["QueueUrlOpt", "StreamOpt", "worker"]

log = logging.getLogger("clusterinval.queue")

QueueUrlOpt = Annotated[
    str | None,
    typer.Option("--queue-url", metavar="URL",
                 help="Redis holding the stream (default: the cluster at --url)."),
]
StreamOpt = Annotated[
    str, typer.Option("--stream", metavar="NAME", help="The queue's stream key.")
]
GroupOpt = Annotated[
    str, typer.Option("--group", metavar="NAME", help="Consumer group of the workers.")
]


def worker(
    url: UrlOpt = None,
    queue_url: QueueUrlOpt = None,
    stream: StreamOpt = DEFAULT_STREAM,
    group: GroupOpt = DEFAULT_GROUP,
    consumer: Annotated[
        str | None,
        typer.Option("--consumer", metavar="NAME", help="This worker's name (default: host-pid)."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", min=0, max=65535, metavar="PORT",
                     help="Serve Prometheus metrics on --metrics-addr:PORT."),
    ] = None,
    metrics_addr: Annotated[
        str, typer.Option("--metrics-addr", metavar="ADDR", help="Address of the metrics server.")
    ] = "127.0.0.1",
    batch: Annotated[
        int, typer.Option("--batch", min=1, metavar="N", help="Requests read per round.")
    ] = 100,
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", min=1, metavar="N",
                          help="Attempts before a failing request is dead-lettered.")
    ] = 5,
    claim_idle: Annotated[
        float, typer.Option("--claim-idle", min=0.05, metavar="SECONDS",
                            help="Claim requests another worker left pending this long.")
    ] = 30.0,
    retry_base: Annotated[
        float, typer.Option("--retry-base", min=0.001, metavar="SECONDS",
                            help="Back-off before the first retry (doubled per attempt).")
    ] = 0.5,
    retry_max: Annotated[
        float, typer.Option("--retry-max", min=0.001, metavar="SECONDS",
                            help="Longest back-off between retries.")
    ] = 30.0,
    grace: Annotated[
        float, typer.Option("--grace", min=0.0, metavar="SECONDS",
                            help="On SIGTERM/SIGINT, how long the current batch may finish.")
    ] = 30.0,
) -> None:
    """Apply queued invalidations (consumer group); SIGTERM/SIGINT finish the batch, exit 0."""
    try:
        target = resolve_url(url)
        check_url(target)
        if queue_url:
            check_url(queue_url)
        names = StreamNames.of(stream)
        options = WorkerOptions(
            group=group, consumer=consumer or default_consumer(), batch_size=batch,
            concurrency=batch, max_attempts=max_attempts, claim_idle_s=claim_idle,
            retry_base_s=retry_base, retry_max_s=max(retry_max, retry_base),
            drain_grace_s=max(grace, 0.001),
        )
    except InvalidInputError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    _show_warnings()
    server = None
    if metrics_port is not None:
        server = start_metrics_server(metrics_port, addr=metrics_addr)
    err_console.print(
        f"worker {options.consumer}: stream {names.stream} (group {group}) on "
        f"{mask_credentials(queue_url or target)}, invalidating {mask_credentials(target)}"
        + (f"; metrics on http://{metrics_addr}:{server.port}/metrics" if server else ""),
        soft_wrap=True, markup=False,
    )
    try:
        anyio.run(_serve, target, queue_url, names, options)
    finally:
        if server is not None:
            server.close()


def _show_warnings() -> None:
    # A worker is a service: its warnings and errors (retries, dead letters) are its output,
    # even without -v.
    root = logging.getLogger()
    if root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    for handler in root.handlers:
        if handler.level > logging.WARNING:
            handler.setLevel(logging.WARNING)


async def _serve(url: str, queue_url: str | None, names: StreamNames,
                 options: WorkerOptions) -> None:
    inv = ClusterInvalidator.from_url(url)
    conn = QueueConnection(queue_url or url, timeout_s=options.stream_timeout_s)
    work = QueueWorker(inv, StreamStore(conn, names), options)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, work)
            await work.run()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await inv.aclose()
            await conn.aclose()
    err_console.print(f"worker {work.consumer} stopped: applied {work.stats.applied}, "
                      f"retried {work.stats.retried}, dead-lettered {work.stats.dead_lettered}",
                      markup=False)


async def _stop_on_signal(work: QueueWorker) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.warning("worker %s: %s, finishing the current batch", work.consumer,
                        signal.Signals(signum).name)
            work.stop()
