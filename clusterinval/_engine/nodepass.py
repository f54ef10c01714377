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
from clusterinval._core.planning import ScanPass
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
        scanned = False
        rest = need
        try:
            with node_pass_span(node.name, match=scan_pass.match.decode("utf-8",
                                                                        "backslashreplace")):
                if await self._walkable(node, scan_pass):
                    # Each walk call proves, inside itself, that the node serves each slot it
                    # reads: no ownership reading before or after (a slot it does not serve
                    # comes back unproven, and the next round finds its owner).
                    walked, whole = await self._walk_pass(node, scan_pass, need)
                    proven.update(walked)
                    if whole:
                        return
                    rest = need.difference(walked)  # slots too big for a walk call
                before = await self._ownership(node)
                if not len(rest.intersection(before.stable)):
                    return  # the node no longer serves these slots: the next round finds the owner
                await self._serve(node, index)
                scanned = True
                after = await self._ownership(node)
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
            # What a walk proved stays proven, however the rest of the job ended.
            ctx.tally.covered += self._coverage.record_proven(index, need.intersection(proven))
        if scanned:
            ctx.tally.covered += self._coverage.record(index, rest, before, after)

    async def _walkable(self, node: NodeAddr, scan_pass: ScanPass) -> bool:
        """Whether the slot walk serves this pass on ``node`` (prefix patterns, cluster mode,
        reads on the primary, the script available)."""
        ctx = self._ctx
        view = ctx.topology.view
        return (view is not None and not view.standalone
                and not ctx.options.scan_on_replicas
                and all(g.prefix_only for g in scan_pass.globs)
                and await ctx.unlinker.script_ready(node, "slot_walk"))

    async def _walk_pass(self, node: NodeAddr, scan_pass: ScanPass, need: SlotSet
                         ) -> tuple[SlotSet, bool]:
        """Walk ``need`` on ``node``: (slots proven read whole, whether none was too big)."""
        ctx = self._ctx
        tally = ctx.tally.node(node)
        if ctx.watched:  # a live display measures the reads against the node's size
            size = await ctx.call(node, ctx.topology.node(node).dbsize, "DBSIZE")
            tally.size = max(tally.size, size)
        proven, whole = await self._walk.serve(node, scan_pass, need)
        if whole:
            tally.read = max(tally.read, tally.size)
        return proven, whole

    async def _serve(self, node: NodeAddr, index: int) -> None:
        """Serve the pass by listing its one slot, or by a SCAN of the node."""
        ctx = self._ctx
        scan_pass = ctx.plan.passes[index]
        # Slot-level commands exist only in cluster mode.
        cluster = not (ctx.topology.view and ctx.topology.view.standalone)
        slot = scan_pass.single_slot
        if slot is not None and cluster and await self._listing.serve(node, scan_pass, index,
                                                                       slot):
            return
        source = await self._client.source(node) if ctx.options.scan_on_replicas else node
        tally = ctx.tally.node(node)
        # One O(1) command: what the scan will read, and what live progress is measured against.
        size = await ctx.call(node, ctx.topology.node(node).dbsize, "DBSIZE")
        tally.size = max(tally.size, size)
        # Server-side steps read the primary; scanning a replica instead needs the client path.
        server_decides = scan_pass.server_exact or all(g.prefix_only for g in scan_pass.globs)
        if (server_decides and source == node
                and await ctx.unlinker.script_ready(node, "scan_step")):
            await self._server.serve(node, scan_pass)
        else:
            await self._client.serve(node, scan_pass, index, source)
        tally.scanned += size
        tally.read = max(tally.read, tally.size)

    async def _ownership(self, node: NodeAddr) -> NodeOwnership:
        return await self._ctx.call(node, lambda: self._ctx.topology.ownership(node),
                                    "CLUSTER NODES")
