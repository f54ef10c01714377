"""The client-side SCAN path: SCAN a node (or a caught-up replica of it), matching keys go through
a bounded memory object stream to deleter tasks that group them by slot and unlink them.

It serves what the server-side paths cannot: several patterns in one pass, dry runs, servers
without scripting, and scans on replicas.
"""

from __future__ import annotations

import logging
from functools import partial

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.exceptions import RedisError

from clusterinval._core.batching import SlotBatcher
from clusterinval._core.planning import ScanPass
from clusterinval._core.values import NodeAddr
from clusterinval._engine.context import RunContext
from clusterinval._engine.keys import KeySink
from clusterinval._engine.retry import describe, leading_error
from clusterinval.errors import ClusterPermissionError

__all__ = ["ClientScan"]

log = logging.getLogger("clusterinval.engine")

# How long a pass waits for a replica to catch up with its primary before scanning the primary.
_REPLICA_CATCH_UP_S = 1.0


class ClientScan:
    """Serves a pass on one node by SCAN from the client."""

    def __init__(self, ctx: RunContext, sink: KeySink) -> None:
        self._ctx = ctx
        self._sink = sink

    async def source(self, node: NodeAddr) -> NodeAddr:
        """A replica of ``node`` that has caught up with it, to SCAN on; else ``node`` itself.

        The replica must have applied the primary's whole replication stream as of now, so every
        key written before the pass started is visible to its SCAN; one that lags longer than
        ``_REPLICA_CATCH_UP_S`` is skipped. Coverage is still judged on the primary's ownership.
        """
        ctx = self._ctx
        view = ctx.topology.view
        replicas = view.replicas.get(node, ()) if view is not None else ()
        if not replicas:
            return node
        try:
            state = await ctx.call(node, ctx.topology.node(node).replication, "INFO")
        except ClusterPermissionError as exc:  # a user without INFO: scan the primary
            log.info("cannot read %s's replication offset (%s); scanning it", node, exc)
            return node
        for replica in replicas:
            io = ctx.topology.node(replica)
            try:
                with anyio.move_on_after(_REPLICA_CATCH_UP_S):
                    while True:
                        seen = await ctx.call(replica, io.replication, "INFO")
                        if seen.link_up and seen.offset >= state.offset:
                            return replica
                        await anyio.sleep(0.02)  # polling the replica's offset, bounded above
            except (RedisError, OSError, TimeoutError) as exc:
                log.info("replica %s of %s not usable for SCAN: %s", replica, node, describe(exc))
        log.info("no replica of %s caught up; scanning the primary", node)
        return node

    async def serve(self, node: NodeAddr, scan_pass: ScanPass, index: int,
                    source: NodeAddr) -> None:
        """SCAN ``source`` (``node`` or its replica), delete on the owners through a stream."""
        ctx = self._ctx
        script = await ctx.unlinker.script_ready(node, "batch")
        failure: list[BaseException] = []
        send, recv = anyio.create_memory_object_stream[list[bytes]](ctx.options.stream_depth)
        # Both ends are closed however the pass ends (a job cancelled mid-pass included); the
        # deleters share the one receiving end, so no clone is left to the garbage collector.
        with send, recv:
            try:
                async with anyio.create_task_group() as tg:
                    for _ in range(ctx.options.deleters_per_node):
                        tg.start_soon(self._deleter, node, scan_pass, index, recv, script)
                    with send:  # closing it tells the deleters the scan is over
                        await self._scan(node, source, scan_pass, send, failure)
            except BaseExceptionGroup as group:
                # A deleter's error arrives wrapped by the task group; the job needs it plain.
                raise leading_error(group) from None
        if failure:
            raise failure[0]

    async def _scan(self, node: NodeAddr, source: NodeAddr, scan_pass: ScanPass,
                    send: MemoryObjectSendStream[list[bytes]],
                    failure: list[BaseException]) -> None:
        ctx = self._ctx
        io = ctx.topology.node(source)
        tally = ctx.tally.node(node)
        cursor = 0
        count = ctx.options.scan_count
        match = scan_pass.match
        try:
            while True:
                cursor, keys = await ctx.call(source, partial(io.scan, cursor, match, count),
                                              "SCAN")
                tally.scan_calls += 1
                tally.read += count
                if keys:
                    await send.send(keys)
                if cursor == 0:
                    break
        except (RedisError, OSError, TimeoutError) as exc:
            # Let the deleters finish what was found, then report the pass as unfinished.
            failure.append(exc)

    async def _deleter(
        self,
        node: NodeAddr,
        scan_pass: ScanPass,
        index: int,
        recv: MemoryObjectReceiveStream[list[bytes]],
        script: bool,
    ) -> None:
        options = self._ctx.options
        per_task = max(options.buffer_keys // options.deleters_per_node, options.unlink_batch)
        # With the server-side batch step every SCAN batch goes at once (one call serves many
        # slots); with plain UNLINK, keys wait per slot so that each command carries several.
        batcher = None if script else SlotBatcher(options.unlink_batch, per_task)
        async for keys in recv:
            await self._sink.consume(node, scan_pass, index, keys, batcher)
        if batcher is not None and batcher.held:
            await self._ctx.delete(batcher.drain())
