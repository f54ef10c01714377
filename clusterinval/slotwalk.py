"""The server-side slot walk: a prefix pattern served slot by slot on the node that owns them.

Each script call reads whole slots (``COUNTKEYSINSLOT``/``GETKEYSINSLOT``, about a key budget's
worth) and unlinks the matches with one ``UNLINK`` per slot: no key crosses the network and only
the needed slots are read.

Calls go one at a time on each node. Unthrottled, one held connection carries a stretch of calls
with little client work between them; two calls queued at once were about 10% faster on the
benchmark but kept the node busy without a break, and on a shared host the scheduler then
preempted it mid-call (SLOWLOG 9-12 ms instead of 3-5 ms). Under a rate limit or adaptive pacing
each call is shorter, and is paid for (or paced) before the next.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from clusterinval.batching import group_by_slot
from clusterinval.figures import EngineOutcome, ProgressWatch
from clusterinval.options import InvalidatorOptions
from clusterinval.planner import ScanPass
from clusterinval.scripts import SlotWalkStep
from clusterinval.slots import SlotSet
from clusterinval.topology import NodeAddr, Topology
from clusterinval.unlinker import Unlinker

if TYPE_CHECKING:
    from clusterinval.engine import Engine

__all__ = ["SlotWalks"]

# Keys one call reads; a slot holding more than the cap is left to a SCAN of its node. Both bound
# how long one call holds the node (a few ms).
WALK_BUDGET = 1000
WALK_SLOT_CAP = 1000
# Calls per segment of the unthrottled walk: one timed, retried unit (a few hundred ms at most).
_WALK_SEGMENT = 64
# Under a rate limit, server-side steps are sized for about this many calls a second per node,
# and never fewer keys per call than the minimum (each call has a fixed cost).
RATED_CALLS_PER_S = 200
RATED_MIN_KEYS = 20


class SlotWalks:
    """The slot-walk half of a run's node work (mixed into the run, which provides the state)."""

    engine: Engine
    topology: Topology
    options: InvalidatorOptions
    out: EngineOutcome
    watch: ProgressWatch
    unlinker: Unlinker

    async def _call(self, node: NodeAddr, fn: Any, attempts: int = 3) -> Any:
        raise NotImplementedError

    async def _delete(self, batches: Sequence[tuple[int, list[bytes]]]) -> None:
        raise NotImplementedError

    async def _slot_walk_node(self, node: NodeAddr, scan_pass: ScanPass, slots: SlotSet
                              ) -> tuple[SlotSet, bool]:
        """Serve a prefix pattern on ``node``'s ``slots``.

        Returns the slots the walk proved it read whole while the node served them, and whether
        every slot could be read (False: a slot was too big for one call, scan the node).
        """
        prefixes = tuple(g.literal_prefix for g in scan_pass.globs)
        # Redis reports the empty key for the pattern "*" alone (SCAN and KEYS skip matching).
        empty_key = any(g.pattern == b"*" for g in scan_pass.globs)
        # Unthrottled: segments of many calls. Rate-limited or paced: one call per segment, so
        # each call is paid for (and each round trip timed by the governor) before the next.
        paced = self._node_rate() is not None or self.engine._governor is not None
        segment = 1 if paced else _WALK_SEGMENT
        budget = self._walk_budget()
        ranges = deque(slots.ranges())
        left: list[bytes] = []
        big: list[int] = []
        proven = SlotSet()
        matched = 0

        def on_step(lo: int, hi: int, step: SlotWalkStep) -> None:
            nonlocal matched
            matched += step.matched
            left.extend(self._count_step(node, scan_pass, step))
            big.extend(step.big_slots)
            walked = SlotSet.from_ranges([(lo, hi)])
            for slot in (*step.big_slots, *step.unproven):
                walked.discard(slot)
            proven.update(walked)

        # Each segment runs under the command timeout and is retried on its own; ``ranges``
        # always holds what is left, so a retry resumes where the walk stopped.
        while ranges:
            await self._call(node, lambda: self.unlinker.slot_walk_ranges(
                node, prefixes, ranges, budget, WALK_SLOT_CAP, on_step, segment,
                empty_key=empty_key))
            await self._settle_step(node, matched, left)
            matched = 0
            left.clear()
        return proven, not big

    def _count_step(self, node: NodeAddr, scan_pass: ScanPass, step: SlotWalkStep
                    ) -> list[bytes]:
        """Add one walk call's figures to the run's; the keys it could not delete itself."""
        self.unlinker.counters(node).scanned += step.examined
        self.out.scanned += step.examined
        self.count_server_step(node, scan_pass.origins, step.per_prefix, step.deleted)
        return step.left

    def count_server_step(
        self, node: NodeAddr, origins: Sequence[int], per_origin: Sequence[int], deleted: int
    ) -> None:
        """Add one server-side step's matches (per pattern) and deletions to the run's figures."""
        matched = sum(per_origin)
        self.watch.scan_calls += 1
        self.unlinker.counters(node).matched += matched
        self.out.matched += matched
        for origin, n in zip(origins, per_origin, strict=True):
            self.out.per_pattern[origin] += n
        self.out.deleted += deleted
        self.watch.matched += matched
        self.watch.deleted += deleted

    async def _settle_step(self, node: NodeAddr, matched: int, left: list[bytes]) -> None:
        """Delete what a server-side step left behind, and pay for its keys in the rate budgets."""
        if left:
            await self._delete(group_by_slot(left, self.options.unlink_batch))
        # Deleted server-side, so the unlinker's budgets never saw these keys.
        await self.engine._limiter.acquire(matched)
        await self.engine.node_limiter(node).acquire(matched)

    def _walk_budget(self) -> int:
        """Keys one slot-walk call reads: fewer under a rate limit, so calls stay short."""
        rate = self._node_rate()
        if rate is None:
            return WALK_BUDGET
        # Under a budget the run's length is set by the rate, not by the call size: a couple of
        # hundred short calls a second per node (each well under 0.2 ms) keep other clients'
        # commands from queueing behind ours, which is what the rate limit is for.
        return max(RATED_MIN_KEYS, min(WALK_BUDGET, int(rate / RATED_CALLS_PER_S)))

    def _node_rate(self) -> float | None:
        """Keys per second this run may delete on one node (None: unlimited)."""
        node_rate = self.options.node_keys_per_second
        rate = self.options.keys_per_second
        view = self.topology.view
        if rate is not None and view is not None and view.primaries:
            rate /= len(view.primaries)  # the primaries share the run's budget
        if node_rate is not None:
            rate = node_rate if rate is None else min(rate, node_rate)
        return rate
