"""The server-side slot walk: a prefix pattern served slot by slot on the node that owns them.

Each call reads whole slots (``COUNTKEYSINSLOT``/``GETKEYSINSLOT``, about a key budget's worth)
and unlinks the matches with one ``UNLINK`` per slot: no key crosses the network and only the
needed slots are read. Each call also proves, atomically, that the node served every slot it read
(see the coverage rule in ``_core/coverage.py``).

Calls go one at a time on each node. Unthrottled, one held connection carries a stretch of calls
with little client work between them; two calls queued at once were about 10% faster on the
benchmark but kept the node busy without a break, and on a shared host the scheduler then
preempted it mid-call (SLOWLOG 9-12 ms instead of 3-5 ms). Under a rate limit or adaptive pacing
each call is shorter, and is paid for (or paced) before the next.
"""

from __future__ import annotations

from collections import deque

from clusterinval._core.planning import ScanPass
from clusterinval._core.slots import SlotSet, key_slot
from clusterinval._core.values import NodeAddr, SlotWalkStep
from clusterinval._engine.context import RunContext
from clusterinval._engine.serverstep import (
    RATED_CALLS_PER_S,
    RATED_MIN_KEYS,
    count_step,
    settle_step,
)

__all__ = ["WALK_BUDGET", "WALK_SLOT_CAP", "SlotWalk"]

# Keys one call reads; a slot holding more than the cap is left to a SCAN of its node. Both bound
# how long one call holds the node (a few ms).
WALK_BUDGET = 1000
WALK_SLOT_CAP = 1000
# Calls per segment of the unthrottled walk: one timed, retried unit (a few hundred ms at most).
_WALK_SEGMENT = 64


class SlotWalk:
    """Serves a prefix-pattern pass on one node's slots, server-side."""

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx

    async def serve(self, node: NodeAddr, scan_pass: ScanPass, slots: SlotSet
                    ) -> tuple[SlotSet, bool]:
        """Walk ``slots`` on ``node``.

        Returns the slots the walk proved it read whole while the node served them, and whether
        every slot could be read (False: a slot was too big for one call, scan the node).
        """
        ctx = self._ctx
        io = ctx.topology.node(node)
        prefixes = tuple(g.literal_prefix for g in scan_pass.globs)
        # Redis reports the empty key for the pattern "*" alone (SCAN and KEYS skip matching).
        empty_key = any(g.pattern == b"*" for g in scan_pass.globs)
        probe = _probe(scan_pass)
        # Unthrottled: segments of many calls. Rate-limited or paced: one call per segment, so
        # each call is paid for (and each round trip timed by the governor) before the next.
        segment = 1 if ctx.limits.paced else _WALK_SEGMENT
        budget = self._budget()
        ranges = deque(slots.ranges())
        left: list[bytes] = []
        big: list[int] = []
        proven = SlotSet()
        matched = 0
        tally = ctx.tally.node(node)

        def on_step(lo: int, hi: int, step: SlotWalkStep) -> None:
            nonlocal matched
            matched += step.matched
            tally.scanned += step.examined
            tally.read += step.examined
            count_step(ctx, node, scan_pass.origins, step.per_prefix, step.deleted,
                       per_origin_all=step.per_prefix_all, left=step.left)
            left.extend(step.left)
            big.extend(step.big_slots)
            walked = SlotSet.from_ranges([(lo, hi)])
            for slot in (*step.big_slots, *step.unproven):
                walked.discard(slot)
            proven.update(walked)

        # Each segment runs under the command timeout and is retried on its own; ``ranges``
        # always holds what is left, so a retry resumes where the walk stopped.
        while ranges:
            await ctx.call(node, lambda: io.slot_walk(
                prefixes, ranges, budget=budget, cap=WALK_SLOT_CAP, on_step=on_step,
                max_calls=segment, empty_key=empty_key, probe=probe), "the slot walk")
            await settle_step(ctx, node, matched, left)
            matched = 0
            left.clear()
        return proven, not big

    def _budget(self) -> int:
        """Keys one call reads: fewer under a rate limit, so calls stay short."""
        rate = self._ctx.node_rate()
        if rate is None:
            return WALK_BUDGET
        # Under a budget the run's length is set by the rate, not by the call size: a couple of
        # hundred short calls a second per node (each well under 0.2 ms) keep other clients'
        # commands from queueing behind ours, which is what the rate limit is for.
        return max(RATED_MIN_KEYS, min(WALK_BUDGET, int(rate / RATED_CALLS_PER_S)))


# Appended to a one-slot pass's literal prefix (which holds its hash tag), it names a key of that
# slot nobody writes: the walk's ownership probe.
_PROBE_SUFFIX = b"\x00clusterinval:ownership-probe"


def _probe(scan_pass: ScanPass) -> bytes:
    """A key of the pass's one slot for the walk to prove ownership with (b"": none)."""
    slot = scan_pass.single_slot
    if slot is None:
        return b""
    probe = scan_pass.globs[0].literal_prefix + _PROBE_SUFFIX
    return probe if key_slot(probe) == slot else b""
