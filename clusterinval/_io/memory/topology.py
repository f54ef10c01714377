"""What every in-memory node agrees on at once: which nodes exist, who owns each slot, epochs.

Gossip is instant here, so one owner table serves the whole cluster, and a write to a primary
reaches its linked replicas in the same step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from clusterinval._core.slots import SLOT_COUNT, SlotSet
from clusterinval._core.values import NodeAddr
from clusterinval._io.memory.node_state import PRIMARY, REPLICA, NodeState

__all__ = ["ClusterState"]

T = TypeVar("T")


class ClusterState:
    """Every node's state, the one slot-owner table, the epochs, and the cluster's settings.

    ``primaries`` primaries with ``replicas`` replicas each, on ``host`` and consecutive ports
    from ``base_port`` (primaries first), slots split in contiguous ranges like ``LocalCluster``.
    """

    def __init__(
        self,
        primaries: int,
        replicas: int,
        host: str,
        base_port: int,
        *,
        require_full_coverage: bool,
        scan_repeat: bool,
    ) -> None:
        if primaries < 1 or replicas < 0:
            raise ValueError("need at least one primary and a non-negative replica count")
        self.host = host
        self.require_full_coverage = require_full_coverage
        self.scan_repeat = scan_repeat
        self.nodes: dict[NodeAddr, NodeState] = {}
        self.owners: list[NodeAddr | None] = [None] * SLOT_COUNT
        self.unbound: set[int] = set()  # slots no node serves (after DELSLOTS)
        self.current_epoch = 0
        self.down = False
        self._next_port = base_port
        primary_addrs = [self.new_node(PRIMARY) for _ in range(primaries)]
        for i, addr in enumerate(primary_addrs):
            lo = i * SLOT_COUNT // primaries
            hi = (i + 1) * SLOT_COUNT // primaries - 1
            for s in range(lo, hi + 1):
                self.owners[s] = addr
        for addr in primary_addrs:
            for _ in range(replicas):
                self.new_node(REPLICA, primary=addr)

    def new_node(self, role: str, primary: NodeAddr | None = None) -> NodeAddr:
        """Add a node on the next free port, with a config epoch of its own; its address."""
        addr = NodeAddr(self.host, self._next_port)
        self._next_port += 1
        self.current_epoch += 1
        self.nodes[addr] = NodeState(addr, role, self.current_epoch, primary=primary)
        return addr

    # -- looking nodes up ----------------------------------------------------------------------

    def node_state(self, node: NodeAddr) -> NodeState:
        """The state of ``node``; ValueError when the cluster has no such node."""
        state = self.nodes.get(node)
        if state is None:
            raise ValueError(f"{node} is not a node of this cluster")
        return state

    def primary_state(self, node: NodeAddr) -> NodeState:
        """The state of ``node``; ValueError unless it is a primary now."""
        state = self.node_state(node)
        if state.role != PRIMARY:
            raise ValueError(f"{node} is not a primary")
        return state

    def primaries(self) -> list[NodeAddr]:
        """The current primaries, in port order."""
        return sorted(a for a, n in self.nodes.items() if n.role == PRIMARY)

    def replicas_of(self, primary: NodeAddr) -> list[NodeAddr]:
        """The replicas of ``primary``, in port order."""
        return sorted(
            a for a, n in self.nodes.items() if n.role == REPLICA and n.primary == primary
        )

    def slots_of(self, node: NodeAddr) -> SlotSet:
        """The slots ``node`` serves."""
        state = self.nodes.get(node)
        if state is None:
            return SlotSet()
        target = state.addr  # the very object the owner table holds
        out = SlotSet()
        start = -1
        for s, o in enumerate(self.owners):
            if o is target:
                if start < 0:
                    start = s
            elif start >= 0:
                out.add_range(start, s - 1)
                start = -1
        if start >= 0:
            out.add_range(start, SLOT_COUNT - 1)
        return out

    def reported_epoch(self, state: NodeState) -> int:
        """The config epoch the node reports (a replica reports its primary's)."""
        if state.role == REPLICA and state.primary is not None:
            return self.nodes[state.primary].epoch
        return state.epoch

    def state_ok(self) -> bool:
        """Whether nodes answer key commands (``cluster_state:ok``)."""
        if self.down:
            return False
        return not (self.require_full_coverage and self.unbound)

    # -- writes and ownership ------------------------------------------------------------------

    def write(self, node: NodeState, key: bytes, value: bytes) -> None:
        """Set ``key`` on ``node`` and on its linked replicas."""
        node.put(key, value)
        self._replicate(node, lambda r: r.put(key, value))

    def apply(self, node: NodeState, change: Callable[[NodeState], T]) -> T:
        """Apply ``change`` to ``node`` and to its linked replicas; its result on ``node``."""
        result = change(node)
        self._replicate(node, change)
        return result

    def unlink(self, node: NodeState, key: bytes) -> int:
        """Delete ``key`` from ``node`` and its linked replicas; 1 when it was there, else 0."""
        if not node.drop(key):
            return 0
        self._replicate(node, lambda r: r.drop(key))
        return 1

    def _replicate(self, primary: NodeState, apply: Callable[[NodeState], object]) -> None:
        primary.repl_offset += 1
        for r in self.nodes.values():
            if r.role == REPLICA and r.primary == primary.addr and r.link_up:
                apply(r)
                r.repl_offset = primary.repl_offset

    def assign(self, slot: int, owner: NodeAddr) -> None:
        """Make ``owner`` the owner of ``slot``; the former owner drops the keys it kept of it."""
        before = self.owners[slot]
        self.owners[slot] = owner
        if before is not None and before != owner:
            old = self.nodes[before]
            # A node that learns its slot went elsewhere deletes the keys it kept of it.
            if slot not in old.importing:
                for key in old.slot_keys(slot):
                    self.unlink(old, key)

    def bump_epoch(self, node: NodeState) -> bool:
        """Give ``node`` a new highest config epoch unless it holds the highest; True if so."""
        highest = max([self.current_epoch, *(n.epoch for n in self.nodes.values())])
        if node.epoch == 0 or node.epoch != highest:
            self.current_epoch = highest + 1
            node.epoch = self.current_epoch
            return True
        return False
