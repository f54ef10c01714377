"""One in-memory node: its keyspace in SCAN order, its role, and the faults it is under."""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Final

import anyio

from clusterinval._core.slots import key_slot
from clusterinval._core.values import NodeAddr

__all__ = ["GONE", "PRIMARY", "REPLICA", "NodeState", "scan_hash"]

PRIMARY: Final = "primary"
REPLICA: Final = "replica"
GONE: Final = "gone"  # replaced by a new node after a failover without replica


def scan_hash(key: bytes) -> int:
    """Where ``key`` sits in a node's SCAN order: a stable position, never 0 (the end cursor)."""
    return int.from_bytes(blake2b(key, digest_size=8).digest(), "big") % (2**63 - 1) + 1


@dataclass
class NodeState:
    """One node's data and condition."""

    addr: NodeAddr
    role: str
    epoch: int
    primary: NodeAddr | None = None  # a replica's primary
    data: dict[bytes, bytes] = field(default_factory=dict)
    sets: dict[bytes, set[bytes]] = field(default_factory=dict)  # set-typed keys (tag indexes)
    ttls: dict[bytes, int] = field(default_factory=dict)  # PTTL of keys given one (ms; static)
    by_slot: dict[int, dict[bytes, None]] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)  # sorted SCAN positions present
    at: dict[int, list[bytes]] = field(default_factory=dict)  # SCAN position -> keys
    migrating: dict[int, NodeAddr] = field(default_factory=dict)
    importing: dict[int, NodeAddr] = field(default_factory=dict)
    repl_offset: int = 0
    link_up: bool = True
    killed: bool = False
    frozen: bool = False
    thaw: anyio.Event | None = None
    slow_s: float = 0.0
    scripts: bool = True

    # -- keyspace ------------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes) -> None:
        """Set ``key``; a new key takes its place in its slot and in the SCAN order."""
        if key not in self.data:
            self.by_slot.setdefault(key_slot(key), {})[key] = None
            pos = scan_hash(key)
            bucket = self.at.get(pos)
            if bucket is None:
                self.at[pos] = [key]
                insort(self.order, pos)
            else:
                bucket.append(key)
        self.data[key] = value

    def drop(self, key: bytes) -> bool:
        """Delete ``key``; False when the node does not hold it."""
        if key not in self.data:
            return False
        del self.data[key]
        self.sets.pop(key, None)
        self.ttls.pop(key, None)
        slot = key_slot(key)
        keys = self.by_slot[slot]
        del keys[key]
        if not keys:
            del self.by_slot[slot]
        pos = scan_hash(key)
        bucket = self.at[pos]
        bucket.remove(key)
        if not bucket:
            del self.at[pos]
            del self.order[bisect_left(self.order, pos)]
        return True

    def load(self, other: NodeState) -> None:
        """Replace the keyspace with a copy of ``other``'s (a full resync)."""
        self.data, self.by_slot, self.order, self.at = {}, {}, [], {}
        for k, v in dict(other.data).items():
            self.put(k, v)
        self.sets = {k: set(v) for k, v in other.sets.items()}
        self.ttls = dict(other.ttls)

    def slot_keys(self, slot: int) -> list[bytes]:
        """The keys of ``slot`` the node holds, in the order they were written."""
        return list(self.by_slot.get(slot, ()))

    # -- condition -----------------------------------------------------------------------------

    def wake(self) -> None:
        """Let every call waiting on this frozen node look at its condition again."""
        if self.thaw is not None:
            self.thaw.set()
            self.thaw = None
