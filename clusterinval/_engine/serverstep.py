"""The server-side SCAN step: one short script call runs a SCAN step and unlinks what it found, so
no key crosses the network (one pattern, not a dry run, scripts allowed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

from clusterinval._core.batching import group_by_slot
from clusterinval._core.planning import ScanPass
from clusterinval._core.values import NodeAddr, ScanStep
from clusterinval._engine.context import RunContext

__all__ = ["RATED_CALLS_PER_S", "RATED_MIN_KEYS", "ServerScan", "settle_step"]

# Under a rate limit, server-side steps are sized for about this many calls a second per node,
# and never fewer keys per call than the minimum (each call has a fixed cost).
RATED_CALLS_PER_S = 200
RATED_MIN_KEYS = 20


def count_step(ctx: RunContext, node: NodeAddr, origins: Sequence[int],
               per_origin: Mapping[int, int], deleted: int, *,
               per_origin_all: Mapping[int, int] | None = None,
               left: Sequence[bytes] = ()) -> None:
    """Add one server-side step's matches (per pattern) and deletions to the run's tally.

    ``per_origin`` counts, by index into ``origins``, each key under its first pattern;
    ``per_origin_all`` (when given) under every pattern it matches; patterns that matched
    nothing are absent. ``left`` are the matches the step could not delete.
    """
    tally = ctx.tally.node(node)
    tally.scan_calls += 1
    tally.unlink_calls += 1
    tally.deleted += deleted
    if per_origin:
        tally.matched += sum(per_origin.values())
        per_pattern = ctx.tally.per_pattern
        for i, n in per_origin.items():
            per_pattern[origins[i]] += n
    if ctx.shares is not None:
        ctx.shares.step(node, origins, per_origin,
                        per_origin if per_origin_all is None else per_origin_all, left)


async def settle_step(ctx: RunContext, node: NodeAddr, matched: int, left: list[bytes]) -> None:
    """Delete what a server-side step left behind, and pay for its keys in the rate budgets."""
    if left:
        await ctx.delete(group_by_slot(left, ctx.options.unlink_batch))
    # Deleted server-side, so the unlinker's budgets never saw these keys.
    await ctx.limits.acquire(node, matched)


class ServerScan:
    """Serves a one-pattern (or prefix-patterns) pass on one node with server-side SCAN steps."""

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx

    async def serve(self, node: NodeAddr, scan_pass: ScanPass) -> None:
        """SCAN the node to the end, each step deleting its matches where they are."""
        ctx = self._ctx
        io = ctx.topology.node(node)
        options = ctx.options
        cursor = 0
        dense, sparse = options.server_scan_count, max(options.scan_count,
                                                      options.server_scan_count)
        rate = ctx.node_rate()
        if rate is not None:
            # As for the slot walk: short steps under a rate limit.
            dense = sparse = max(RATED_MIN_KEYS, min(dense, int(rate / RATED_CALLS_PER_S)))
        count = dense
        match = scan_pass.match
        # Several prefix patterns: MATCH narrows the SCAN to their common prefix and the step
        # itself decides, per key, which prefixes it starts with.
        prefixes = () if scan_pass.server_exact else tuple(
            g.literal_prefix for g in scan_pass.globs)
        empty_key = any(g.pattern == b"*" for g in scan_pass.globs)

        def counted(step: ScanStep) -> None:
            if prefixes:
                count_step(ctx, node, scan_pass.origins, step.per_prefix, step.deleted,
                           per_origin_all=step.per_prefix_all, left=step.left)
            else:
                count_step(ctx, node, scan_pass.origins,
                           {0: step.matched} if step.matched else {}, step.deleted,
                           left=step.left)

        while True:
            # A step the deadline cut short after the node ran it is counted all the same.
            step = await ctx.call(node, partial(io.scan_step, cursor, match, count,
                                                on_late=counted, prefixes=prefixes,
                                                empty_key=empty_key), "the SCAN step")
            cursor = step.cursor
            ctx.tally.node(node).read += count
            # A step's cost is mostly its deletions: where matches are sparse, a step may walk
            # further (scan_count) for the same work; where they are dense, it walks less.
            count = sparse if step.matched * 4 < dense else dense
            counted(step)
            await settle_step(ctx, node, step.matched, step.left)
            if cursor == 0:
                return
