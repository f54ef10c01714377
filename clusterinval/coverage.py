"""Which slots each scan pass has covered, and which jobs a round must run. Pure logic.

A slot counts as covered by a pass only when a node scanned it to the end while serving it, not
migrating it, both before and after the scan: a slot that moved, or was mid-migration, during
the pass may have had keys elsewhere, so it stays pending and is scanned again on its owner.
"""

from __future__ import annotations

from collections.abc import Sequence

from clusterinval.slots import SlotSet
from clusterinval.topology import ClusterView, NodeAddr, NodeOwnership

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
        """Mark what a finished job covered; returns how many slots that was."""
        covered = need.intersection(before.stable).intersection(after.stable)
        self._pending[index] = self._pending[index].difference(covered)
        return len(covered)

    def uncovered(self) -> SlotSet:
        """Every slot some pass still needs."""
        out = SlotSet()
        for p in self._pending:
            out.update(p)
        return out
