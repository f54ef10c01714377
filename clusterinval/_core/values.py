"""Value types shared by the engine and its I/O: node addresses, ownership, views, step replies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from clusterinval._core.slots import SlotSet

__all__ = [
    "ClusterView", "ErrorKind", "NodeAddr", "NodeOwnership", "Replication", "ScanStep",
    "SlotBatch", "SlotWalkStep", "TagTake",
]

# What went wrong talking to a node: the ``error`` label of the metrics and the retry decision.
ErrorKind = Literal[
    "connection", "timeout", "permission", "redirect", "tryagain", "clusterdown",
    "loading", "crossslot", "input", "other",
]

# Keys of one slot, deleted by one command.
SlotBatch = tuple[int, list[bytes]]


class NodeAddr(NamedTuple):
    """A node's address as the cluster announces it."""

    # A tuple, not a dataclass: addresses key every per-node table and a small call hashes them
    # a score of times, where a tuple's hash is one C call.

    host: str
    port: int

    @property
    def name(self) -> str:
        """``host:port``, the label used in results, logs and metrics."""
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class NodeOwnership:
    """What one node says about itself: the slots it serves, those in migration, its epoch.

    ``epoch`` is the node's config epoch. A node takes a new one whenever it takes over a slot
    (the last step of an import, or a failover), so an unchanged epoch between two readings
    means no slot came to it in between, not even one that left and came back. -1: unknown.
    """

    owned: SlotSet
    migrating: SlotSet
    importing: SlotSet
    epoch: int = 0

    @property
    def stable(self) -> SlotSet:
        """Owned slots that are not being migrated away."""
        return self.owned.difference(self.migrating)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One consistent reading of slot ownership."""

    owners: tuple[NodeAddr | None, ...]
    replicas: Mapping[NodeAddr, tuple[NodeAddr, ...]] = field(default_factory=dict)
    standalone: bool = False
    # Slots per primary, derived once from ``owners`` (runs read it for every job).
    _by_node: dict[NodeAddr, SlotSet] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_node = self._by_node
        start = 0
        owners = self.owners
        for i in range(1, len(owners) + 1):
            if i == len(owners) or owners[i] is not owners[start]:
                node = owners[start]
                if node is not None:
                    by_node.setdefault(node, SlotSet()).add_range(start, i - 1)
                start = i

    @property
    def primaries(self) -> tuple[NodeAddr, ...]:
        """Every node that owns at least one slot, sorted."""
        return tuple(sorted(self._by_node))

    def owner(self, slot: int) -> NodeAddr | None:
        """The primary serving ``slot``, or None when no node serves it."""
        return self.owners[slot]

    def slots_of(self, node: NodeAddr) -> SlotSet:
        """The slots ``node`` serves in this view."""
        found = self._by_node.get(node)
        return found.copy() if found is not None else SlotSet()

    def unowned(self) -> SlotSet:
        """Slots no node serves (a failover in progress, or a broken cluster)."""
        owned = SlotSet()
        for s in self._by_node.values():
            owned.update(s)
        return SlotSet.full().difference(owned)


@dataclass(frozen=True, slots=True)
class Replication:
    """A node's replication state: its offset, and for a replica whether its link is up."""

    offset: int
    link_up: bool = True


@dataclass(frozen=True, slots=True)
class ScanStep:
    """What one server-side SCAN step did."""

    cursor: int
    matched: int
    deleted: int
    left: list[bytes]  # matched keys the node could not delete itself
    # With prefixes: matches by prefix index (under the first prefix in order / under every
    # one; prefixes that matched nothing are absent), and the keys SCAN returned.
    per_prefix: dict[int, int] = field(default_factory=dict)
    per_prefix_all: dict[int, int] = field(default_factory=dict)
    examined: int = 0


@dataclass(frozen=True, slots=True)
class SlotWalkStep:
    """What one slot-walk call did; ``next_slot`` is -1 when the range is done."""

    next_slot: int
    examined: int
    matched: int
    deleted: int
    big_slots: list[int]  # slots too large to read in one call: scan the node instead
    left: list[bytes]  # matched keys the node could not delete itself
    # Matched keys by prefix index, each under the first prefix it starts with (prefixes that
    # matched nothing are absent).
    per_prefix: dict[int, int]
    unproven: list[int]  # slots skipped: not served by the node, or mid-migration
    # Matched keys by prefix index, each under every prefix it starts with (shared passes).
    per_prefix_all: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TagTake:
    """What taking a tag's member set found.

    ``count`` members were moved aside (0: the tag had no set); ``members`` lists them when the
    set was small enough to come back with the take (else they are read in steps); ``leftovers``
    are sets earlier runs took and did not finish.
    """

    count: int
    members: list[bytes] | None
    leftovers: list[bytes]
