"""Which slots each scan pass has covered, and which jobs a round must run. Pure logic.

A slot counts as covered by a pass only when the node that read it served it for the whole read:

* a slot walk proves this itself: each call checks, in the same atomic server-side step that
  reads a slot, that the node owns the slot and is neither migrating nor importing it;
* a SCAN of a node's keyspace is not atomic, so it is judged by two readings of what the node
  serves, before and after: a slot counts only when it was owned and not migrating in both and the
  node's config epoch did not change in between. The epoch is what rules out a slot that left and
  came back during the scan (A -> B -> A): taking a slot over gives the taker a new epoch.

Anything else stays pending and is read again on the slot's owner in a later round.
"""

from __future__ import annotations

from collections.abc import Sequence

from clusterinval._core.slots import SlotSet
from clusterinval._core.values import ClusterView, NodeAddr, NodeOwnership

__all__ = ["Coverage", "Job"]

Job = tuple[NodeAddr, int, SlotSet]


class Coverage:
    """Pending slots per pass; updated as jobs report what their node owned."""

    def __init__(self, passes: Sequence[SlotSet]) -> None:
        self._pending = [p.copy() for p in passes]

    @property
    def done(self) -> bool:
        """True when every pass covered every slot it needs."""
        return not any(len(p) for p in self._pending)

    @property
    def left(self) -> int:
        """How many (pass, slot) pairs are still pending."""
        return sum(len(p) for p in self._pending)

    def jobs(self, view: ClusterView) -> list[Job]:
        """One job per (primary, pass) where the primary owns slots the pass still needs."""
        out: list[Job] = []
        for node in view.primaries:
            owned = view.slots_of(node)
            for index, pending in enumerate(self._pending):
                need = pending.intersection(owned)
                if len(need):
                    out.append((node, index, need))
        return out

    def record(self, index: int, need: SlotSet, before: NodeOwnership,
               after: NodeOwnership) -> int:
        """Mark what a finished SCAN of a node covered; returns how many slots that was."""
        if before.epoch != after.epoch or before.epoch < 0:
            return 0  # a slot may have come to the node mid-scan: nothing is proven
        covered = need.intersection(before.stable).intersection(after.stable)
        return self.record_proven(index, covered)

    def record_proven(self, index: int, proven: SlotSet) -> int:
        """Mark slots a server-side step proved it read whole; returns how many were pending."""
        before = len(self._pending[index])
        self._pending[index] = self._pending[index].difference(proven)
        return before - len(self._pending[index])

    def uncovered(self) -> SlotSet:
        """Every slot some pass still needs."""
        out = SlotSet()
        for p in self._pending:
            out.update(p)
        return out
