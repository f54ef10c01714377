"""One job of a round: serve one scan pass on one primary by the cheapest of its paths, and record
what that proved covered.

* slot listing (``listing.py``): a pass fixed to one slot by a hash tag;
* slot walk (``slotwalk.py``): prefix patterns, read slot by slot and deleted server-side;
* server-side SCAN step (``serverstep.py``): one pattern, deleted where it is found;
* client-side SCAN (``scanpath.py``): several patterns, dry runs, old servers, replicas.
"""

from __future__ import annotations

import logging

import anyio
from redis.exceptions import RedisError

from clusterinval._core.coverage import Coverage
from clusterinval._core.slots import SlotSet
from clusterinval._core.values import NodeAddr, NodeOwnership
from clusterinval._engine.context import RunContext
from clusterinval._engine.keys import KeySink
from clusterinval._engine.listing import SlotListing
from clusterinval._engine.retry import classify, describe, is_transient
from clusterinval._engine.scanpath import ClientScan
from clusterinval._engine.serverstep import ServerScan
from clusterinval._engine.slotwalk import SlotWalk
from clusterinval.errors import ClusterPermissionError
from clusterinval.tracing import node_pass_span

__all__ = ["NodePasses"]

log = logging.getLogger("clusterinval.engine")


class NodePasses:
    """Runs (node, pass) jobs for one run and records their coverage."""

    def __init__(self, ctx: RunContext, coverage: Coverage) -> None:
        self._ctx = ctx
        self._coverage = coverage
        sink = KeySink(ctx)
        self._listing = SlotListing(ctx, sink)
        self._walk = SlotWalk(ctx)
        self._server = ServerScan(ctx)
        self._client = ClientScan(ctx, sink)
        self.fatal: str | None = None  # a non-transient error: no further round can help

    async def run(self, node: NodeAddr, index: int, need: SlotSet) -> None:
        """Serve pass ``index`` on ``node`` for the ``need``ed slots; never raises but refusals."""
        ctx = self._ctx
        scan_pass = ctx.plan.passes[index]
        tally = ctx.tally.node(node)
        started = anyio.current_time()
        proven = SlotSet()
        try:
            with node_pass_span(node.name, match=scan_pass.match.decode("utf-8",
                                                                        "backslashreplace")):
                before = await self._ownership(node)
                if not len(need.intersection(before.stable)):
                    return  # the node no longer serves these slots: the next round finds the owner
                proven, scanned = await self._serve(node, index, need, before)
                after = await self._ownership(node) if scanned else before
        except ClusterPermissionError:
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            ctx.tally.error(node, classify(exc))
            tally.errors.append(describe(exc))
            log.warning("scan of %s ended early: %s", node, describe(exc))
            if not is_transient(exc):
                # Another round would meet the same answer: end the run, incomplete.
                self.fatal = f"{node.name}: {describe(exc)}"
            return
        finally:
            tally.busy_s += anyio.current_time() - started
        covered = self._coverage.record_proven(index, need.intersection(proven))
        if scanned:
            covered += self._coverage.record(index, need, before, after)
        ctx.tally.covered += covered

    async def _serve(self, node: NodeAddr, index: int, need: SlotSet, before: NodeOwnership
                     ) -> tuple[SlotSet, bool]:
        """Serve the pass: (slots a walk proved read whole, whether the node was scanned)."""
        ctx = self._ctx
        scan_pass = ctx.plan.passes[index]
        # Slot-level commands exist only in cluster mode.
        cluster = not (ctx.topology.view and ctx.topology.view.standalone)
        slot = scan_pass.single_slot
        if slot is not None and cluster and await self._listing.serve(node, scan_pass, index,
                                                                       slot):
            return SlotSet(), True
        source = await self._client.source(node) if ctx.options.scan_on_replicas else node
        io = ctx.topology.node(node)
        tally = ctx.tally.node(node)

        async def read_size() -> int:
            # One O(1) command: what a scan will read, and what live progress is measured against.
            size = await ctx.call(node, io.dbsize, "DBSIZE")
            tally.size = max(tally.size, size)
            return size

        # A walk needs no DBSIZE of its own: read it up front only for a live display.
        size = await read_size() if ctx.watched else None
        proven = SlotSet()
        # Server-side paths read the primary; scanning a replica instead needs the client path.
        if (cluster and source == node and all(g.prefix_only for g in scan_pass.globs)
                and await ctx.unlinker.script_ready(node, "slot_walk")):
            proven, whole = await self._walk.serve(node, scan_pass,
                                                   need.intersection(before.owned))
            if whole:
                tally.read = max(tally.read, tally.size)
                return proven, False
        if size is None:
            size = await read_size()
        if (scan_pass.server_exact and source == node
                and await ctx.unlinker.script_ready(node, "scan_step")):
            await self._server.serve(node, scan_pass)
        else:
            await self._client.serve(node, scan_pass, index, source)
        tally.scanned += size
        tally.read = max(tally.read, tally.size)
        return proven, True

    async def _ownership(self, node: NodeAddr) -> NodeOwnership:
        return await self._ctx.call(node, lambda: self._ctx.topology.ownership(node),
                                    "CLUSTER NODES")
