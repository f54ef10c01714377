"""What a run counts, kept once: per-node tallies from which totals, live progress and the final
result are all derived (so the nodes always add up to the totals)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from clusterinval._core.slots import SlotSet
from clusterinval._core.values import ErrorKind, NodeAddr

__all__ = ["NodeTally", "Progress", "ProgressWatch", "RunTally"]


@dataclass(slots=True)
class NodeTally:
    """What one node did during a run (deletions and matches counted where they happened)."""

    deleted: int = 0
    matched: int = 0
    scanned: int = 0
    scan_calls: int = 0
    unlink_calls: int = 0
    busy_s: float = 0.0  # wall time of this node's scan passes
    errors: list[str] = field(default_factory=list)
    # Live progress of the reads: keys read so far (SCAN's COUNT per call where a step does not
    # say), and the node's DBSIZE when a pass read it.
    read: int = 0
    size: int = 0

    def add_work(self, other: NodeTally) -> None:
        """Add what ``other`` read and called (its reads, calls, time and errors; not its keys)."""
        self.scanned += other.scanned
        self.scan_calls += other.scan_calls
        self.unlink_calls += other.unlink_calls
        self.busy_s += other.busy_s
        self.errors.extend(other.errors)
        self.read += other.read
        self.size = max(self.size, other.size)

    def add(self, other: NodeTally) -> None:
        """Add all of ``other``: its keys and its work."""
        self.deleted += other.deleted
        self.matched += other.matched
        self.add_work(other)


@dataclass(frozen=True, slots=True)
class Progress:
    """A live reading of a run, for progress displays."""

    covered_slots: int
    slots_to_cover: int
    matched: int
    deleted: int
    scan_calls: int
    scanned: int = 0
    keys_read: int = 0  # keys the passes have read so far (live; an estimate on SCAN paths)
    keys_total: int = 0  # keys of the nodes being read (their DBSIZE), 0 when not known yet


class RunTally:
    """Everything one run counts; updated as replies arrive, read by results and displays."""

    def __init__(self, patterns: int = 0) -> None:
        self.nodes: dict[NodeAddr, NodeTally] = {}
        self.per_pattern = [0] * patterns
        self.exact_deleted = 0
        self.sample: list[bytes] = []
        self.errors: list[tuple[str, ErrorKind]] = []
        self.messages: list[str] = []
        self.uncovered = SlotSet()
        self.timed_out = False
        self.slots_to_cover = 0
        self.covered = 0
        # While the run is under way: the slots not covered yet (its final answer is ``uncovered``).
        self.live_uncovered: Callable[[], SlotSet] | None = None

    def node(self, addr: NodeAddr) -> NodeTally:
        """The tally of ``addr`` (created on first use)."""
        found = self.nodes.get(addr)
        if found is None:
            found = self.nodes[addr] = NodeTally()
        return found

    @property
    def deleted(self) -> int:
        """Keys the nodes confirmed removed."""
        return sum(n.deleted for n in self.nodes.values())

    @property
    def matched(self) -> int:
        """Keys found to match."""
        return sum(n.matched for n in self.nodes.values())

    @property
    def scanned(self) -> int:
        """Keys the scans examined."""
        return sum(n.scanned for n in self.nodes.values())

    @property
    def complete(self) -> bool:
        """Every slot covered and every exact key confirmed."""
        return len(self.uncovered) == 0

    def absorb(self, part: RunTally) -> None:
        """Add another run's counts, coverage and messages to this tally (same patterns)."""
        for addr, counts in part.nodes.items():
            self.node(addr).add(counts)
        self.per_pattern = [a + b for a, b in zip(self.per_pattern, part.per_pattern,
                                                  strict=True)]
        self.sample.extend(part.sample)
        self.errors.extend(part.errors)
        self.messages.extend(part.messages)
        self.uncovered.update(part.uncovered)
        self.timed_out = self.timed_out or part.timed_out
        self.slots_to_cover += part.slots_to_cover
        self.covered += part.covered

    def error(self, node: NodeAddr, kind: ErrorKind) -> None:
        """Note one error met on ``node`` (retried or not)."""
        self.errors.append((node.name, kind))

    def add_sample(self, keys: list[bytes], limit: int) -> None:
        """Keep up to ``limit`` distinct keys as the run's sample."""
        sample = self.sample
        if len(sample) >= limit:
            return
        seen = set(sample)
        for k in keys:
            if k not in seen:
                seen.add(k)
                sample.append(k)
                if len(sample) >= limit:
                    return

    def progress(self) -> Progress:
        """The current reading."""
        nodes = self.nodes.values()
        return Progress(self.covered, self.slots_to_cover, sum(n.matched for n in nodes),
                        sum(n.deleted for n in nodes), sum(n.scan_calls for n in nodes),
                        sum(n.scanned for n in nodes), sum(min(n.read, n.size) for n in nodes),
                        sum(n.size for n in nodes))


class ProgressWatch:
    """A live view of a run's tally, for progress displays (pass it as ``progress=``)."""

    def __init__(self) -> None:
        self._tally: RunTally | None = None

    def follow(self, tally: RunTally) -> None:
        """Show ``tally`` from now on (the run does this when it starts)."""
        self._tally = tally

    def snapshot(self) -> Progress:
        """The current reading (all zero before the run starts)."""
        if self._tally is None:
            return Progress(0, 0, 0, 0, 0)
        return self._tally.progress()
