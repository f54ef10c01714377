"""What a run counts: live progress, per-node tallies, and the raw outcome."""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterinval.retry import ErrorKind
from clusterinval.slots import SlotSet
from clusterinval.topology import NodeAddr

__all__ = ["EngineOutcome", "NodeCounters", "Progress", "ProgressWatch"]


@dataclass(slots=True)
class NodeCounters:
    """Mutable per-node tallies during a run."""

    deleted: int = 0
    matched: int = 0
    scanned: int = 0
    scan_calls: int = 0
    unlink_calls: int = 0
    busy_s: float = 0.0  # wall time of this node's scan passes
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Progress:
    """A live reading of a run, for progress displays."""

    covered_slots: int
    slots_to_cover: int
    matched: int
    deleted: int
    scan_calls: int


@dataclass(slots=True)
class EngineOutcome:
    """Raw figures of a run; the invalidator turns them into an ``InvalidationResult``."""

    deleted: int = 0
    exact_deleted: int = 0
    matched: int = 0
    scanned: int = 0
    per_pattern: list[int] = field(default_factory=list)
    sample: list[bytes] = field(default_factory=list)
    uncovered: SlotSet = field(default_factory=SlotSet)
    nodes: dict[NodeAddr, NodeCounters] = field(default_factory=dict)
    errors: list[tuple[str, ErrorKind]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    timed_out: bool = False

    @property
    def complete(self) -> bool:
        """Every slot covered and every exact key handled."""
        return len(self.uncovered) == 0


class ProgressWatch:
    """Counters a progress display may read while the run goes on."""

    def __init__(self) -> None:
        self.slots_to_cover = 0
        self.covered = 0
        self.matched = 0
        self.deleted = 0
        self.scan_calls = 0

    def snapshot(self) -> Progress:
        """The current reading."""
        return Progress(self.covered, self.slots_to_cover, self.matched, self.deleted,
                        self.scan_calls)
