"""What an invalidation did, as frozen values a caller can log, assert on or serialise."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Explanation", "InvalidationResult", "NodeResult", "PatternCost", "TagGcResult"]


def _text(key: bytes) -> str:
    return key.decode("utf-8", "backslashreplace")


@dataclass(frozen=True, slots=True)
class NodeResult:
    """The work one primary did during a run."""

    node: str
    deleted: int = 0
    matched: int = 0
    scanned: int = 0
    scan_calls: int = 0
    unlink_calls: int = 0
    duration_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class InvalidationResult:
    """The outcome of one ``invalidate`` call.

    ``deleted`` is the sum of UNLINK replies (keys really removed); ``matched`` counts keys the
    run found to match (it exceeds ``deleted`` when a key vanished first, or SCAN reported it
    twice); ``scanned`` counts keys the scans examined on the server.
    """

    operation: str
    deleted: int
    matched: int
    scanned: int
    complete: bool
    duration_s: float
    dry_run: bool = False
    nodes: tuple[NodeResult, ...] = ()
    uncovered_slots: tuple[tuple[int, int], ...] = ()
    sample: tuple[bytes, ...] = ()
    errors: tuple[str, ...] = field(default=())
    keys_requested: int = 0
    patterns_requested: int = 0
    exact_deleted: int = 0
    per_pattern: tuple[tuple[str, int], ...] = ()
    # Per tag asked for: the tagged keys removed (a dry run: found) through that tag's index.
    per_tag: tuple[tuple[str, int], ...] = ()
    tags_requested: int = 0

    @property
    def uncovered_slot_count(self) -> int:
        """How many of the 16384 slots no finished scan covered."""
        return sum(hi - lo + 1 for lo, hi in self.uncovered_slots)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (keys in ``sample`` decoded with backslash escapes)."""
        data = asdict(self)
        data["sample"] = [_text(k) for k in self.sample]
        data["nodes"] = [asdict(n) for n in self.nodes]
        data["uncovered_slots"] = [list(r) for r in self.uncovered_slots]
        data["errors"] = list(self.errors)
        data["per_pattern"] = {p: n for p, n in self.per_pattern}
        data["per_tag"] = {t: n for t, n in self.per_tag}
        data["uncovered_slot_count"] = self.uncovered_slot_count
        return data


@dataclass(frozen=True, slots=True)
class PatternCost:
    """What one pattern costs, from ``explain``.

    ``cost`` is ``exact`` (it names one key), ``one-slot`` (a hash tag fixes its slot: one
    node, one slot), ``prefix-walk`` (every slot of every primary is read, server-side, by
    prefix), ``full-scan`` (every primary is SCANned) or ``covered`` (a broader pattern of the
    same call serves it). ``keys_to_read`` is what serving it reads: the slot's keys, or every
    key of the cluster (DBSIZE). ``suggestion`` is the one-slot pattern the same entries would
    have if written under a hash tag (keys ``{user:42}:...`` instead of ``user:42:...``).
    """

    pattern: str
    cost: str
    keys_to_read: int
    slot: int | None = None
    suggestion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Explanation:
    """What an invalidation would cost, pattern by pattern, before running it."""

    keys: int  # exact keys asked for
    key_nodes: int  # primaries those keys live on (one round trip each)
    patterns: tuple[PatternCost, ...]
    cluster_keys: int  # keys in the whole cluster (sum of the primaries' DBSIZE)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {"keys": self.keys, "key_nodes": self.key_nodes,
                "cluster_keys": self.cluster_keys,
                "patterns": [p.to_dict() for p in self.patterns]}


@dataclass(frozen=True, slots=True)
class TagGcResult:
    """What one pass of tag-index garbage collection did."""

    sets: int  # tag member sets examined
    members: int  # members checked
    removed: int  # members dropped because their key no longer exists

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return asdict(self)
