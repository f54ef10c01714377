"""``MemoryCluster``: the in-memory cluster a test builds, reads, and breaks on purpose.

Every test control is a plain (synchronous) method here; the work is done in the modules named
after it (``migration``, ``failures``, ``controls``) on the one ``ClusterState`` that the
cluster's nodes share.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from clusterinval._core.slots import SlotSet, key_slot
from clusterinval._core.values import NodeAddr
from clusterinval._io.memory import failures, migration
from clusterinval._io.memory.controls import CallControls, CallHook
from clusterinval._io.memory.errors import DOWN_UNBOUND, redis_error
from clusterinval._io.memory.node import MemoryNode
from clusterinval._io.memory.node_state import GONE, PRIMARY
from clusterinval._io.memory.tags import sadd
from clusterinval._io.memory.topology import ClusterState
from clusterinval._io.protocol import ClusterIO

__all__ = ["MemoryCluster"]


class MemoryCluster:
    """An in-memory Redis Cluster (``ClusterIO``) with the controls a test needs.

    ``primaries`` primaries with ``replicas`` replicas each, on ``host`` and consecutive ports
    from ``base_port`` (primaries first), slots split in contiguous ranges like ``LocalCluster``.
    ``require_full_coverage``: as Redis's ``cluster-require-full-coverage``, key commands are
    refused with ``CLUSTERDOWN`` while a slot has no owner. ``scan_repeat``: each SCAN call
    also returns again the last keys of the call before (Redis may return a key twice).
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 0,
        host: str = "127.0.0.1",
        base_port: int = 30001,
        *,
        require_full_coverage: bool = True,
        scan_repeat: bool = False,
    ) -> None:
        self._state = ClusterState(primaries, replicas, host, base_port,
                                   require_full_coverage=require_full_coverage,
                                   scan_repeat=scan_repeat)  # fmt: skip
        self._controls = CallControls()
        self._ios: dict[NodeAddr, MemoryNode] = {}
        self.closed = False

    # -- settings ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address every node listens on."""
        return self._state.host

    @property
    def require_full_coverage(self) -> bool:
        """Whether key commands are refused (``CLUSTERDOWN``) while a slot has no owner."""
        return self._state.require_full_coverage

    @require_full_coverage.setter
    def require_full_coverage(self, value: bool) -> None:
        self._state.require_full_coverage = value

    @property
    def scan_repeat(self) -> bool:
        """Whether each SCAN call also returns again the last keys of the call before."""
        return self._state.scan_repeat

    @scan_repeat.setter
    def scan_repeat(self, value: bool) -> None:
        self._state.scan_repeat = value

    # -- ClusterIO -----------------------------------------------------------------------------

    def node(self, addr: NodeAddr) -> MemoryNode:
        """The node at ``addr``; an address the cluster does not have refuses every call."""
        found = self._ios.get(addr)
        if found is None:
            found = self._ios[addr] = MemoryNode(self._state, self._controls, addr)
        return found

    async def aclose(self) -> None:
        """Close every connection (nothing to close: marks the cluster closed)."""
        self.closed = True

    # -- reading the cluster -------------------------------------------------------------------

    @property
    def seeds(self) -> list[NodeAddr]:
        """The addresses a client would be given: the first primary."""
        return [self.primaries()[0]]

    @property
    def nodes(self) -> list[NodeAddr]:
        """Every node of the cluster, in the order they were made (gone ones left out)."""
        return [a for a, n in self._state.nodes.items() if n.role != GONE]

    def primaries(self) -> list[NodeAddr]:
        """The current primaries, in port order."""
        return self._state.primaries()

    def replicas_of(self, primary: NodeAddr) -> list[NodeAddr]:
        """The replicas of ``primary``, in port order."""
        return self._state.replicas_of(primary)

    def role(self, node: NodeAddr) -> str:
        """``primary``, ``replica`` or ``gone``."""
        return self._state.node_state(node).role

    def owner(self, slot: int) -> NodeAddr | None:
        """The primary serving ``slot``, or None."""
        return self._state.owners[slot]

    def slots_of(self, node: NodeAddr) -> SlotSet:
        """The slots ``node`` serves."""
        return self._state.slots_of(node)

    def epoch(self, node: NodeAddr) -> int:
        """The config epoch ``node`` reports (a replica reports its primary's)."""
        return self._state.reported_epoch(self._state.node_state(node))

    @property
    def current_epoch(self) -> int:
        """The cluster's current epoch (the highest ever given)."""
        return self._state.current_epoch

    def keys(self) -> set[bytes]:
        """Every key held by a primary (what is left in the cluster)."""
        out: set[bytes] = set()
        for n in self._state.nodes.values():
            if n.role == PRIMARY:
                out.update(n.data)
        return out

    def node_keys(self, node: NodeAddr) -> set[bytes]:
        """The keys ``node`` itself holds."""
        return set(self._state.node_state(node).data)

    @property
    def calls(self) -> Counter[tuple[NodeAddr, str]]:
        """The call log: how many times each (node, operation) was called."""
        return self._controls.calls

    def call_count(self, node: NodeAddr | None = None, operation: str | None = None) -> int:
        """Operations logged, for one node and/or one operation name (None: any)."""
        return sum(
            n
            for (a, op), n in self.calls.items()
            if (node is None or a == node) and (operation is None or op == operation)
        )

    def reset_calls(self) -> None:
        """Empty the call log."""
        self.calls.clear()

    # -- writing keys --------------------------------------------------------------------------

    def set(
        self, keys: Iterable[bytes | str], value: bytes = b"v", *, node: NodeAddr | None = None
    ) -> int:
        """Write ``keys`` where a cluster client's SET would land (or on ``node`` itself).

        A key of a slot being migrated goes to the target when the source does not hold it
        (the ASK a client would follow). Returns the number of keys written.
        """
        cluster = self._state
        n = 0
        for k in keys:
            key = k.encode() if isinstance(k, str) else k
            if node is not None:
                target = cluster.node_state(node)
            else:
                slot = key_slot(key)
                owner = cluster.owners[slot]
                if owner is None:
                    raise redis_error(DOWN_UNBOUND)
                target = cluster.nodes[owner]
                dst = target.migrating.get(slot)
                if dst is not None and key not in target.data:
                    target = cluster.nodes[dst]
            cluster.write(target, key, value)
            n += 1
        return n

    def remove(self, keys: Iterable[bytes | str], *, node: NodeAddr | None = None) -> int:
        """Delete ``keys`` from whichever primary holds them (or from ``node``); the count."""
        cluster = self._state
        if node is not None:
            targets = [cluster.node_state(node)]
        else:
            targets = [s for s in cluster.nodes.values() if s.role == PRIMARY]
        n = 0
        for k in keys:
            key = k.encode() if isinstance(k, str) else k
            for t in targets:
                n += cluster.unlink(t, key)
        return n

    def set_members(self, key: bytes) -> frozenset[bytes]:
        """The members of the set at ``key`` on the slot's owner (empty when there is none)."""
        owner = self._state.owners[key_slot(key)]
        if owner is None:
            return frozenset()
        return frozenset(self._state.nodes[owner].sets.get(key, ()))

    def sadd(self, key: bytes, members: Iterable[bytes]) -> int:
        """``SADD key members`` on the slot's owner, at once (a side door for tests)."""
        owner = self._state.owners[key_slot(key)]
        if owner is None:
            raise redis_error(DOWN_UNBOUND)
        wanted = list(members)
        return self._state.apply(self._state.nodes[owner], lambda node: sadd(node, key, wanted))

    # -- slots and migration -------------------------------------------------------------------

    def setslot_importing(self, slot: int, dst: NodeAddr, src: NodeAddr) -> None:
        """``CLUSTER SETSLOT slot IMPORTING src`` on ``dst``."""
        migration.setslot_importing(self._state, slot, dst, src)

    def setslot_migrating(self, slot: int, src: NodeAddr, dst: NodeAddr) -> None:
        """``CLUSTER SETSLOT slot MIGRATING dst`` on ``src``."""
        migration.setslot_migrating(self._state, slot, src, dst)

    def setslot_stable(self, slot: int, node: NodeAddr) -> None:
        """``CLUSTER SETSLOT slot STABLE`` on ``node``: its migration state for the slot goes."""
        migration.setslot_stable(self._state, slot, node)

    def migrate_keys(
        self, slot: int, src: NodeAddr, dst: NodeAddr, n: int | None = None, *,
        keys: Iterable[bytes] | None = None,
    ) -> int:  # fmt: skip
        """``MIGRATE`` keys of ``slot`` from ``src`` to ``dst``; how many moved.

        The first ``n`` keys ``CLUSTER GETKEYSINSLOT`` lists (all when None), or the given
        ``keys`` (those ``src`` holds).
        """
        return migration.migrate_keys(self._state, slot, src, dst, n, keys)

    def setslot_node(self, slot: int, node: NodeAddr, *, on: NodeAddr | None = None) -> None:
        """``CLUSTER SETSLOT slot NODE node`` run on ``on`` (default: ``node`` itself).

        As in Redis: the running node refuses to give away a slot it still holds keys of; it
        drops its MIGRATING state for the slot when it holds no key of it; taking its own
        importing slot ends the import and bumps its config epoch unless it already holds the
        cluster's highest one (``clusterBumpConfigEpochWithoutConsensus``). The new owner is
        known to every node at once; a former owner drops keys it still held in the slot.
        """
        migration.setslot_node(self._state, slot, node, on)

    def move_slot(self, slot: int, src: NodeAddr, dst: NodeAddr) -> int:
        """Migrate ``slot`` from ``src`` to ``dst`` the way redis-cli does; keys moved."""
        return migration.move_slot(self._state, slot, src, dst)

    def del_slots(self, slots: Iterable[int]) -> None:
        """``CLUSTER DELSLOTS`` on every node: nobody serves these slots (their keys stay)."""
        migration.del_slots(self._state, slots)

    def add_slots(self, node: NodeAddr, slots: Iterable[int]) -> None:
        """``CLUSTER ADDSLOTS`` on ``node`` for unowned slots (no epoch change, as in Redis)."""
        migration.add_slots(self._state, node, slots)

    def set_cluster_down(self, down: bool) -> None:
        """Force the cluster state to fail (``CLUSTERDOWN The cluster is down``) or back."""
        self._state.down = down

    # -- node failures -------------------------------------------------------------------------

    def failover(self, primary: NodeAddr, *, keep_keys: bool = True) -> NodeAddr:
        """Promote a replica of ``primary`` (a new config epoch, all its slots); the new primary.

        The first live replica is taken; the old primary becomes its replica. With no live
        replica, a new node takes over on the next free port, holding the old node's keys
        (``keep_keys``, as if restored from its persistence) or none; the old node is gone.
        """
        return failures.failover(self._state, primary, keep_keys)

    def kill(self, node: NodeAddr) -> None:
        """Stop ``node``: every call to it, also one waiting on it, raises ConnectionError."""
        failures.kill(self._state, node)

    def revive(self, node: NodeAddr) -> None:
        """Start a killed node again, with the keys it had (a replica resyncs from its primary)."""
        failures.revive(self._state, node)

    def freeze(self, node: NodeAddr) -> None:
        """Make calls to ``node`` wait until ``thaw``; only the caller's own timeouts end them."""
        failures.freeze(self._state, node)

    def thaw(self, node: NodeAddr) -> None:
        """Let a frozen node's calls run."""
        failures.thaw(self._state, node)

    def slow(self, node: NodeAddr, seconds: float) -> None:
        """Delay every call to ``node`` by ``seconds`` (0: no delay)."""
        failures.slow(self._state, node, seconds)

    def replication_link(self, replica: NodeAddr, up: bool) -> None:
        """Cut or restore a replica's link; restored, it resyncs its primary's keyspace."""
        failures.replication_link(self._state, replica, up)

    def script_support(self, node: NodeAddr, supported: bool) -> None:
        """Whether ``node`` runs the server-side steps (False: an old server, or an ACL)."""
        failures.script_support(self._state, node, supported)

    # -- faults and hooks ----------------------------------------------------------------------

    def inject(
        self, node: NodeAddr, operation: str, error_or_reply: Any, times: int = 1, *,
        after: int | None = None,
    ) -> None:  # fmt: skip
        """Make the next ``times`` calls of ``operation`` on ``node`` fail or answer otherwise.

        An exception (instance or class) is raised in place of the call; any other value is
        returned as the call's reply without running it. With ``after=n`` (pipelined
        operations: ``key_commands``, ``batch_calls``) the first ``n`` commands run and are
        told to ``on_reply``, then the exception is raised: a connection lost mid-pipeline.
        """
        self._controls.inject(node, operation, error_or_reply, times, after)

    def inject_replies(
        self, node: NodeAddr, operation: str, error: BaseException, commands: int = 1
    ) -> None:
        """Make the next ``commands`` commands of a pipeline on ``node`` answer ``error``.

        For ``key_commands``, ``asking`` and ``batch_calls``: those commands do not run, their
        reply is the error (``CLUSTERDOWN``, ``TRYAGAIN``... as a server puts it in a pipeline).
        """
        self._controls.inject_replies(node, operation, error, commands)

    def on_call(self, callback: CallHook) -> Callable[[], None]:
        """Call ``callback(node, operation)`` before every node operation; returns its remover."""
        return self._controls.on_call(callback)


if TYPE_CHECKING:
    # The cluster implements the seam (checked by mypy, no cost at run time).
    _io: ClusterIO = MemoryCluster()
