"""An in-memory Redis Cluster behind the same seam as ``redis_io``, with faults a test can inject.

``MemoryCluster`` implements ``ClusterIO``; its nodes implement ``NodeIO``. It models what the
engine relies on, the way Redis 7.0 does it (``cluster.c`` ``getNodeByQuery``, ``SETSLOT``,
failover, the Lua steps of ``lua.py``), and nothing else:

* every node has a keyspace, a config epoch (distinct per node at the start, like
  ``LocalCluster``), its own MIGRATING/IMPORTING slots and a role; replicas mirror their primary
  (every write is applied to them too and advances a replication offset);
* one owner table for the whole cluster: gossip is instant, so every node agrees on who owns a
  slot the moment a ``SETSLOT``, ``ADDSLOTS``/``DELSLOTS`` or failover changes it;
* ``SCAN`` walks a per-node order that no write disturbs, so every key present for the whole
  iteration is returned, once (``scan_repeat=True`` also returns some keys twice, as Redis may);
* key commands get the replies Redis gives: ``CROSSSLOT``, ``MOVED``, ``ASK``, ``TRYAGAIN``,
  ``CLUSTERDOWN``; the Lua steps see the same checks through ``pcall``;
* errors are the instances redis-py's parser makes from the server's error text.

Where it knowingly differs from Redis: a killed node is never marked failed (the cluster acts as
it does within ``cluster-node-timeout``: other nodes keep serving); nothing expires or is evicted;
``COUNT`` is exactly the keys a ``SCAN`` call examines; a call cancelled while its node is frozen
or slow never runs (on a real server a command already sent still runs when the node wakes);
``READONLY`` connections to replicas are not modelled (every key command on a replica is MOVED).

Test controls are plain (synchronous) methods on ``MemoryCluster``; ``on_call`` hooks run before
every node operation, so a test can change the cluster at an exact point of a run.
"""

from __future__ import annotations

import copy
from bisect import bisect_left, insort
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, Final, Literal, cast

import anyio
import anyio.lowlevel
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from clusterinval._core.glob import compile_pattern, redis_glob_match
from clusterinval._core.slots import SLOT_COUNT, SlotSet, key_slot
from clusterinval._core.values import (
    ClusterView,
    NodeAddr,
    NodeOwnership,
    Replication,
    ScanStep,
    SlotBatch,
    SlotWalkStep,
)
from clusterinval._io.protocol import (
    ClusterIO,
    KeyCommand,
    NodeIO,
    OnReply,
    ScriptName,
    WalkStepHandler,
)
from clusterinval.errors import InvalidPatternError

__all__ = ["OPERATIONS", "CallHook", "MemoryCluster", "MemoryNode", "redis_error"]

# Every node operation, by the name used in the call log, ``inject`` and ``on_call`` hooks.
Operation = Literal[
    "cluster_view", "ownership", "dbsize", "scan", "keys_in_slot", "replication",
    "key_commands", "asking", "script_ready", "batch_calls", "scan_step", "slot_walk",
]
OPERATIONS: Final[tuple[Operation, ...]] = (
    "cluster_view", "ownership", "dbsize", "scan", "keys_in_slot", "replication",
    "key_commands", "asking", "script_ready", "batch_calls", "scan_step", "slot_walk",
)
# Operations that run several commands in one call (a pipeline, or a walk of several calls).
_PIPELINED: Final = frozenset({"key_commands", "batch_calls"})

# Told (node, operation) before every node operation; may change the cluster, or raise to fail
# the call with that exception.
CallHook = Callable[[NodeAddr, str], None]

_PRIMARY: Final = "primary"
_REPLICA: Final = "replica"
_GONE: Final = "gone"  # replaced by a new node after a failover without replica

_CROSSSLOT: Final = "CROSSSLOT Keys in request don't hash to the same slot"
_UNSTABLE: Final = "TRYAGAIN Multiple keys request during rehashing of slot"
_DOWN_STATE: Final = "CLUSTERDOWN The cluster is down"
_DOWN_UNBOUND: Final = "CLUSTERDOWN Hash slot not served"
_READONLY: Final = "READONLY You can't write against a read only replica."
_NOSCRIPT: Final = "NOSCRIPT No matching script. Please use EVAL."
_UNLINK_CHUNK: Final = 500  # keys per UNLINK in the slot-walk step, as in the Lua


def redis_error(text: str) -> ResponseError:
    """The exception redis-py's parser makes of the server error reply ``text``."""
    parse = cast(Callable[[str], ResponseError], BaseParser.parse_error)
    return parse(text)


def _connection_refused(addr: NodeAddr) -> RedisConnectionError:
    return RedisConnectionError(f"Error 111 connecting to {addr.host}:{addr.port}. "
                                "Connection refused.")


def _scan_hash(key: bytes) -> int:
    """Where ``key`` sits in a node's SCAN order: a stable position, never 0 (the end cursor)."""
    return int.from_bytes(blake2b(key, digest_size=8).digest(), "big") % (2**63 - 1) + 1


@dataclass
class _Injection:
    value: Any
    times: int
    after: int | None


@dataclass
class _NodeState:
    """One node's data and condition."""

    addr: NodeAddr
    role: str
    epoch: int
    primary: NodeAddr | None = None  # a replica's primary
    data: dict[bytes, bytes] = field(default_factory=dict)
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
        if key not in self.data:
            self.by_slot.setdefault(key_slot(key), {})[key] = None
            pos = _scan_hash(key)
            bucket = self.at.get(pos)
            if bucket is None:
                self.at[pos] = [key]
                insort(self.order, pos)
            else:
                bucket.append(key)
        self.data[key] = value

    def drop(self, key: bytes) -> bool:
        if key not in self.data:
            return False
        del self.data[key]
        slot = key_slot(key)
        keys = self.by_slot[slot]
        del keys[key]
        if not keys:
            del self.by_slot[slot]
        pos = _scan_hash(key)
        bucket = self.at[pos]
        bucket.remove(key)
        if not bucket:
            del self.at[pos]
            del self.order[bisect_left(self.order, pos)]
        return True

    def load(self, data: dict[bytes, bytes]) -> None:
        """Replace the keyspace (a full resync)."""
        self.data, self.by_slot, self.order, self.at = {}, {}, [], {}
        for k, v in data.items():
            self.put(k, v)

    def slot_keys(self, slot: int) -> list[bytes]:
        return list(self.by_slot.get(slot, ()))


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
        if primaries < 1 or replicas < 0:
            raise ValueError("need at least one primary and a non-negative replica count")
        self.host = host
        self.require_full_coverage = require_full_coverage
        self.scan_repeat = scan_repeat
        self._next_port = base_port
        self._nodes: dict[NodeAddr, _NodeState] = {}
        self._ios: dict[NodeAddr, MemoryNode] = {}
        self._owners: list[NodeAddr | None] = [None] * SLOT_COUNT
        self._unbound: set[int] = set()  # slots no node serves (after DELSLOTS)
        self._current_epoch = 0
        self._down = False
        self._hooks: list[CallHook] = []
        self._injections: dict[tuple[NodeAddr, str], deque[_Injection]] = {}
        self._reply_injections: dict[tuple[NodeAddr, str], deque[_Injection]] = {}
        self.calls: Counter[tuple[NodeAddr, str]] = Counter()
        self.closed = False
        primary_addrs = [self._new_node(_PRIMARY) for _ in range(primaries)]
        for i, addr in enumerate(primary_addrs):
            lo = i * SLOT_COUNT // primaries
            hi = (i + 1) * SLOT_COUNT // primaries - 1
            for s in range(lo, hi + 1):
                self._owners[s] = addr
        for addr in primary_addrs:
            for _ in range(replicas):
                self._new_node(_REPLICA, primary=addr)

    def _new_node(self, role: str, primary: NodeAddr | None = None) -> NodeAddr:
        addr = NodeAddr(self.host, self._next_port)
        self._next_port += 1
        self._current_epoch += 1
        self._nodes[addr] = _NodeState(addr, role, self._current_epoch, primary=primary)
        return addr

    # -- ClusterIO -----------------------------------------------------------------------------

    def node(self, addr: NodeAddr) -> MemoryNode:
        """The node at ``addr``; an address the cluster does not have refuses every call."""
        found = self._ios.get(addr)
        if found is None:
            found = self._ios[addr] = MemoryNode(self, addr)
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
        return [a for a, n in self._nodes.items() if n.role != _GONE]

    def primaries(self) -> list[NodeAddr]:
        """The current primaries, in port order."""
        return sorted(a for a, n in self._nodes.items() if n.role == _PRIMARY)

    def replicas_of(self, primary: NodeAddr) -> list[NodeAddr]:
        """The replicas of ``primary``, in port order."""
        return sorted(a for a, n in self._nodes.items()
                      if n.role == _REPLICA and n.primary == primary)

    def role(self, node: NodeAddr) -> str:
        """``primary``, ``replica`` or ``gone``."""
        return self._state(node).role

    def owner(self, slot: int) -> NodeAddr | None:
        """The primary serving ``slot``, or None."""
        return self._owners[slot]

    def slots_of(self, node: NodeAddr) -> SlotSet:
        """The slots ``node`` serves."""
        state = self._nodes.get(node)
        if state is None:
            return SlotSet()
        target = state.addr  # the very object the owner table holds
        out = SlotSet()
        start = -1
        for s, o in enumerate(self._owners):
            if o is target:
                if start < 0:
                    start = s
            elif start >= 0:
                out.add_range(start, s - 1)
                start = -1
        if start >= 0:
            out.add_range(start, SLOT_COUNT - 1)
        return out

    def epoch(self, node: NodeAddr) -> int:
        """The config epoch ``node`` reports (a replica reports its primary's)."""
        return self._reported_epoch(self._state(node))

    @property
    def current_epoch(self) -> int:
        """The cluster's current epoch (the highest ever given)."""
        return self._current_epoch

    def keys(self) -> set[bytes]:
        """Every key held by a primary (what is left in the cluster)."""
        out: set[bytes] = set()
        for n in self._nodes.values():
            if n.role == _PRIMARY:
                out.update(n.data)
        return out

    def node_keys(self, node: NodeAddr) -> set[bytes]:
        """The keys ``node`` itself holds."""
        return set(self._state(node).data)

    def call_count(self, node: NodeAddr | None = None, operation: str | None = None) -> int:
        """Operations logged, for one node and/or one operation name (None: any)."""
        return sum(n for (a, op), n in self.calls.items()
                   if (node is None or a == node) and (operation is None or op == operation))

    def reset_calls(self) -> None:
        """Empty the call log."""
        self.calls.clear()

    # -- writing keys --------------------------------------------------------------------------

    def set(self, keys: Iterable[bytes | str], value: bytes = b"v", *,
            node: NodeAddr | None = None) -> int:
        """Write ``keys`` where a cluster client's SET would land (or on ``node`` itself).

        A key of a slot being migrated goes to the target when the source does not hold it
        (the ASK a client would follow). Returns the number of keys written.
        """
        n = 0
        for k in keys:
            key = k.encode() if isinstance(k, str) else k
            if node is not None:
                target = self._state(node)
            else:
                slot = key_slot(key)
                owner = self._owners[slot]
                if owner is None:
                    raise redis_error(_DOWN_UNBOUND)
                target = self._nodes[owner]
                dst = target.migrating.get(slot)
                if dst is not None and key not in target.data:
                    target = self._nodes[dst]
            self._write(target, key, value)
            n += 1
        return n

    def remove(self, keys: Iterable[bytes | str], *, node: NodeAddr | None = None) -> int:
        """Delete ``keys`` from whichever primary holds them (or from ``node``); the count."""
        n = 0
        targets = [self._state(node)] if node is not None else [
            s for s in self._nodes.values() if s.role == _PRIMARY]
        for k in keys:
            key = k.encode() if isinstance(k, str) else k
            for t in targets:
                n += self._unlink(t, key)
        return n

    def _write(self, node: _NodeState, key: bytes, value: bytes) -> None:
        node.put(key, value)
        self._replicate(node, lambda r: r.put(key, value))

    def _unlink(self, node: _NodeState, key: bytes) -> int:
        if not node.drop(key):
            return 0
        self._replicate(node, lambda r: r.drop(key))
        return 1

    def _replicate(self, primary: _NodeState, apply: Callable[[_NodeState], object]) -> None:
        primary.repl_offset += 1
        for r in self._nodes.values():
            if r.role == _REPLICA and r.primary == primary.addr and r.link_up:
                apply(r)
                r.repl_offset = primary.repl_offset

    # -- slots and migration -------------------------------------------------------------------

    def setslot_importing(self, slot: int, dst: NodeAddr, src: NodeAddr) -> None:
        """``CLUSTER SETSLOT slot IMPORTING src`` on ``dst``."""
        node = self._primary_state(dst)
        if self._owners[slot] == dst:
            raise redis_error(f"ERR I'm already the owner of hash slot {slot}")
        node.importing[slot] = self._primary_state(src).addr

    def setslot_migrating(self, slot: int, src: NodeAddr, dst: NodeAddr) -> None:
        """``CLUSTER SETSLOT slot MIGRATING dst`` on ``src``."""
        node = self._primary_state(src)
        if self._owners[slot] != src:
            raise redis_error(f"ERR I'm not the owner of hash slot {slot}")
        node.migrating[slot] = self._primary_state(dst).addr

    def setslot_stable(self, slot: int, node: NodeAddr) -> None:
        """``CLUSTER SETSLOT slot STABLE`` on ``node``: its migration state for the slot goes."""
        state = self._state(node)
        state.migrating.pop(slot, None)
        state.importing.pop(slot, None)

    def migrate_keys(self, slot: int, src: NodeAddr, dst: NodeAddr, n: int | None = None, *,
                     keys: Iterable[bytes] | None = None) -> int:
        """``MIGRATE`` keys of ``slot`` from ``src`` to ``dst``; how many moved.

        The first ``n`` keys ``CLUSTER GETKEYSINSLOT`` lists (all when None), or the given
        ``keys`` (those ``src`` holds).
        """
        source, target = self._primary_state(src), self._primary_state(dst)
        if keys is not None:
            chosen = [k for k in keys if k in source.data and key_slot(k) == slot]
        else:
            chosen = source.slot_keys(slot)[:n]
        moved = 0
        for key in chosen:
            if key in target.data:
                raise redis_error("BUSYKEY Target key name already exists.")
            self._write(target, key, source.data[key])
            self._unlink(source, key)
            moved += 1
        return moved

    def setslot_node(self, slot: int, node: NodeAddr, *, on: NodeAddr | None = None) -> None:
        """``CLUSTER SETSLOT slot NODE node`` run on ``on`` (default: ``node`` itself).

        As in Redis: the running node refuses to give away a slot it still holds keys of; it
        drops its MIGRATING state for the slot when it holds no key of it; taking its own
        importing slot ends the import and bumps its config epoch unless it already holds the
        cluster's highest one (``clusterBumpConfigEpochWithoutConsensus``). The new owner is
        known to every node at once; a former owner drops keys it still held in the slot.
        """
        new_owner = self._primary_state(node)
        runner = self._state(on if on is not None else node)
        if runner.role != _PRIMARY:
            raise redis_error("ERR Please use SETSLOT only with masters.")
        if self._owners[slot] == runner.addr and new_owner is not runner and \
                runner.by_slot.get(slot):
            raise redis_error(f"ERR Can't assign hashslot {slot} to a different node while I "
                              "still hold keys for this hash slot.")
        if slot in runner.migrating and not runner.by_slot.get(slot):
            del runner.migrating[slot]
        if new_owner is runner and slot in runner.importing:
            self._bump_epoch(runner)
            del runner.importing[slot]
        self._assign(slot, new_owner.addr)

    def move_slot(self, slot: int, src: NodeAddr, dst: NodeAddr) -> int:
        """Migrate ``slot`` from ``src`` to ``dst`` the way redis-cli does; keys moved."""
        self.setslot_importing(slot, dst, src)
        self.setslot_migrating(slot, src, dst)
        moved = self.migrate_keys(slot, src, dst, len(self._state(src).slot_keys(slot)))
        self.setslot_node(slot, dst)
        self.setslot_node(slot, dst, on=src)
        return moved

    def del_slots(self, slots: Iterable[int]) -> None:
        """``CLUSTER DELSLOTS`` on every node: nobody serves these slots (their keys stay)."""
        for s in slots:
            self._owners[s] = None
            self._unbound.add(s)

    def add_slots(self, node: NodeAddr, slots: Iterable[int]) -> None:
        """``CLUSTER ADDSLOTS`` on ``node`` for unowned slots (no epoch change, as in Redis)."""
        state = self._primary_state(node)
        for s in slots:
            if self._owners[s] is not None:
                raise redis_error(f"ERR Slot {s} is already busy")
            self._owners[s] = state.addr
            self._unbound.discard(s)

    def set_cluster_down(self, down: bool) -> None:
        """Force the cluster state to fail (``CLUSTERDOWN The cluster is down``) or back."""
        self._down = down

    def _assign(self, slot: int, owner: NodeAddr) -> None:
        before = self._owners[slot]
        self._owners[slot] = owner
        if before is not None and before != owner:
            old = self._nodes[before]
            # A node that learns its slot went elsewhere deletes the keys it kept of it.
            if slot not in old.importing:
                for key in old.slot_keys(slot):
                    self._unlink(old, key)

    def _bump_epoch(self, node: _NodeState) -> bool:
        highest = max([self._current_epoch, *(n.epoch for n in self._nodes.values())])
        if node.epoch == 0 or node.epoch != highest:
            self._current_epoch = highest + 1
            node.epoch = self._current_epoch
            return True
        return False

    # -- node failures -------------------------------------------------------------------------

    def failover(self, primary: NodeAddr, *, keep_keys: bool = True) -> NodeAddr:
        """Promote a replica of ``primary`` (a new config epoch, all its slots); the new primary.

        The first live replica is taken; the old primary becomes its replica. With no live
        replica, a new node takes over on the next free port, holding the old node's keys
        (``keep_keys``, as if restored from its persistence) or none; the old node is gone.
        """
        old = self._primary_state(primary)
        candidates = [self._nodes[r] for r in self.replicas_of(primary)
                      if not self._nodes[r].killed]
        if candidates:
            new = candidates[0]  # it keeps what it holds, even if its link was down
            new.role, new.primary, new.link_up = _PRIMARY, None, True
        else:
            new = self._nodes[self._new_node(_PRIMARY)]
            if keep_keys:
                new.load(dict(old.data))
        self._current_epoch = max([self._current_epoch, *(n.epoch for n in self._nodes.values())])
        self._current_epoch += 1
        new.epoch = self._current_epoch
        for s, o in enumerate(self._owners):
            if o == primary:
                self._owners[s] = new.addr
        old.migrating.clear()
        old.importing.clear()
        if candidates:
            old.role, old.primary = _REPLICA, new.addr
            if not old.killed:
                old.load(dict(new.data))
        else:
            old.role, old.primary, old.killed = _GONE, None, True
            self._wake(old)
        for r in self._nodes.values():
            if r.role == _REPLICA and r.primary == primary:
                r.primary = new.addr
                if r.link_up and not r.killed:
                    r.load(dict(new.data))
                    r.repl_offset = new.repl_offset
        return new.addr

    def kill(self, node: NodeAddr) -> None:
        """Stop ``node``: every call to it, also one waiting on it, raises ConnectionError."""
        state = self._state(node)
        state.killed = True
        self._wake(state)

    def revive(self, node: NodeAddr) -> None:
        """Start a killed node again, with the keys it had (a replica resyncs from its primary)."""
        state = self._state(node)
        if state.role == _GONE:
            raise ValueError(f"{node} was replaced and left the cluster")
        state.killed = False
        if state.role == _REPLICA and state.primary is not None and state.link_up:
            primary = self._nodes[state.primary]
            state.load(dict(primary.data))
            state.repl_offset = primary.repl_offset

    def freeze(self, node: NodeAddr) -> None:
        """Make calls to ``node`` wait until ``thaw``; only the caller's own timeouts end them."""
        self._state(node).frozen = True

    def thaw(self, node: NodeAddr) -> None:
        """Let a frozen node's calls run."""
        state = self._state(node)
        state.frozen = False
        self._wake(state)

    def slow(self, node: NodeAddr, seconds: float) -> None:
        """Delay every call to ``node`` by ``seconds`` (0: no delay)."""
        self._state(node).slow_s = seconds

    def replication_link(self, replica: NodeAddr, up: bool) -> None:
        """Cut or restore a replica's link; restored, it resyncs its primary's keyspace."""
        state = self._state(replica)
        if state.role != _REPLICA or state.primary is None:
            raise ValueError(f"{replica} is not a replica")
        state.link_up = up
        if up:
            primary = self._nodes[state.primary]
            state.load(dict(primary.data))
            state.repl_offset = primary.repl_offset

    def script_support(self, node: NodeAddr, supported: bool) -> None:
        """Whether ``node`` runs the server-side steps (False: an old server, or an ACL)."""
        self._state(node).scripts = supported

    def _wake(self, state: _NodeState) -> None:
        if state.thaw is not None:
            state.thaw.set()
            state.thaw = None

    # -- faults and hooks ----------------------------------------------------------------------

    def inject(self, node: NodeAddr, operation: str, error_or_reply: Any, times: int = 1, *,
               after: int | None = None) -> None:
        """Make the next ``times`` calls of ``operation`` on ``node`` fail or answer otherwise.

        An exception (instance or class) is raised in place of the call; any other value is
        returned as the call's reply without running it. With ``after=n`` (pipelined
        operations: ``key_commands``, ``batch_calls``) the first ``n`` commands run and are
        told to ``on_reply``, then the exception is raised: a connection lost mid-pipeline.
        """
        self._check_op(operation)
        if after is not None and operation not in _PIPELINED:
            raise ValueError(f"after= applies to pipelined operations, not {operation!r}")
        self._injections.setdefault((node, operation), deque()).append(
            _Injection(error_or_reply, times, after))

    def inject_replies(self, node: NodeAddr, operation: str, error: BaseException,
                       commands: int = 1) -> None:
        """Make the next ``commands`` commands of a pipeline on ``node`` answer ``error``.

        For ``key_commands``, ``asking`` and ``batch_calls``: those commands do not run, their
        reply is the error (``CLUSTERDOWN``, ``TRYAGAIN``... as a server puts it in a pipeline).
        """
        if operation not in ("key_commands", "asking", "batch_calls"):
            raise ValueError(f"inject_replies() applies to pipelines, not {operation!r}")
        self._reply_injections.setdefault((node, operation), deque()).append(
            _Injection(error, commands, None))

    def on_call(self, callback: CallHook) -> Callable[[], None]:
        """Call ``callback(node, operation)`` before every node operation; returns its remover."""
        self._hooks.append(callback)

        def remove() -> None:
            if callback in self._hooks:
                self._hooks.remove(callback)

        return remove

    def _check_op(self, operation: str) -> None:
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; one of {', '.join(OPERATIONS)}")

    def _take(self, table: dict[tuple[NodeAddr, str], deque[_Injection]], addr: NodeAddr,
              operation: str) -> _Injection | None:
        queue = table.get((addr, operation))
        if not queue:
            return None
        head = queue[0]
        head.times -= 1
        if head.times <= 0:
            queue.popleft()
        return head

    def _reply_fault(self, addr: NodeAddr, operation: str) -> BaseException | None:
        found = self._take(self._reply_injections, addr, operation)
        return _fresh(found.value) if found is not None else None

    # -- what nodes do -------------------------------------------------------------------------

    def _state(self, node: NodeAddr) -> _NodeState:
        state = self._nodes.get(node)
        if state is None:
            raise ValueError(f"{node} is not a node of this cluster")
        return state

    def _primary_state(self, node: NodeAddr) -> _NodeState:
        state = self._state(node)
        if state.role != _PRIMARY:
            raise ValueError(f"{node} is not a primary")
        return state

    def _reported_epoch(self, state: _NodeState) -> int:
        if state.role == _REPLICA and state.primary is not None:
            return self._nodes[state.primary].epoch
        return state.epoch

    def _state_ok(self) -> bool:
        if self._down:
            return False
        return not (self.require_full_coverage and self._unbound)

    async def _enter(self, addr: NodeAddr, operation: str) -> tuple[_NodeState, _Injection | None]:
        """What every call starts with: log, hooks, faults, a yield like real I/O."""
        self.calls[(addr, operation)] += 1
        for hook in list(self._hooks):
            hook(addr, operation)
        state = self._nodes.get(addr)
        if state is None or state.killed:
            raise _connection_refused(addr)
        if state.slow_s > 0:
            await anyio.sleep(state.slow_s)
        while state.frozen and not state.killed:
            if state.thaw is None:
                state.thaw = anyio.Event()
            await state.thaw.wait()
        if state.killed:
            raise RedisConnectionError(f"Connection closed by server ({addr.name}).")
        injection = self._take(self._injections, addr, operation)
        if injection is not None and injection.after is None and \
                _is_error(injection.value):
            raise _fresh(injection.value)
        await anyio.lowlevel.checkpoint()
        if state.killed:
            raise RedisConnectionError(f"Connection closed by server ({addr.name}).")
        return state, injection

    def _route(self, node: _NodeState, keys: Sequence[bytes], asking: bool
               ) -> BaseException | None:
        """Redis's ``getNodeByQuery`` for a key command: None when ``node`` serves it."""
        first = keys[0]
        slot = key_slot(first)
        owner = self._owners[slot]
        if owner is None:
            return redis_error(_DOWN_UNBOUND)
        multiple = False
        for k in keys[1:]:
            if k != first:
                if key_slot(k) != slot:
                    return redis_error(_CROSSSLOT)
                multiple = True
        migrating = owner == node.addr and node.role == _PRIMARY and slot in node.migrating
        importing = not migrating and node.role == _PRIMARY and slot in node.importing
        missing = existing = 0
        if migrating or importing:
            for k in keys:
                if k in node.data:
                    existing += 1
                else:
                    missing += 1
        if not self._state_ok():
            return redis_error(_DOWN_STATE)
        if migrating and missing:
            if existing:
                return redis_error(_UNSTABLE)
            target = self._nodes[node.migrating[slot]].addr
            return redis_error(f"ASK {slot} {target.host}:{target.port}")
        if importing and asking:
            return redis_error(_UNSTABLE) if multiple and missing else None
        if owner != node.addr:
            return redis_error(f"MOVED {slot} {owner.host}:{owner.port}")
        return None

    def _key_command(self, node: _NodeState, command: str, keys: Sequence[bytes],
                     asking: bool) -> Any:
        """One UNLINK or EXISTS as ``node`` answers it: an int or the error instance."""
        if not keys:
            return redis_error(f"ERR wrong number of arguments for '{command.lower()}' command")
        refused = self._route(node, keys, asking)
        if refused is not None:
            return refused
        if command == "UNLINK":
            return sum(self._unlink(node, k) for k in dict.fromkeys(keys))
        if command == "EXISTS":
            return sum(1 for k in keys if k in node.data)
        return redis_error(f"ERR unknown command '{command}'")

    def _script_unlink(self, node: _NodeState, keys: Sequence[bytes]) -> int | None:
        """``redis.pcall('UNLINK', ...)`` inside a step: the count, or None when it errs."""
        if self._route(node, keys, asking=False) is not None:
            return None
        return sum(self._unlink(node, k) for k in dict.fromkeys(keys))

    def _script_refusal(self, node: _NodeState) -> BaseException | None:
        if not node.scripts:
            return redis_error(_NOSCRIPT)
        if node.role != _PRIMARY:
            return redis_error(_READONLY)
        return None

    def _scan(self, node: _NodeState, cursor: int, match: bytes, count: int
              ) -> tuple[int, list[bytes]]:
        matches = _matcher(match)
        order = node.order
        i = bisect_left(order, cursor) if cursor else 0
        examined = 0
        start = i
        found: list[bytes] = []
        while i < len(order) and examined < max(1, count):
            for k in node.at[order[i]]:
                examined += 1
                if matches(k):
                    found.append(k)
            i += 1
        if i >= len(order):
            return 0, found
        if self.scan_repeat and i - start >= 2:
            i -= 1  # the next call reads this position again
        return order[i], found


def _is_error(value: Any) -> bool:
    return isinstance(value, BaseException) or (
        isinstance(value, type) and issubclass(value, BaseException))


def _fresh(value: Any) -> BaseException:
    """A new exception each time an injected one is raised (tracebacks do not pile up)."""
    if isinstance(value, type):
        return cast(BaseException, value(f"injected {value.__name__}"))
    return copy.copy(cast(BaseException, value))


_MATCHERS: dict[bytes, Callable[[bytes], bool]] = {}


def _matcher(pattern: bytes) -> Callable[[bytes], bool]:
    """``SCAN ... MATCH pattern`` as Redis decides it (the pattern "*" alone skips matching)."""
    found = _MATCHERS.get(pattern)
    if found is None:
        if pattern == b"*":
            found = _match_all
        else:
            try:
                found = compile_pattern(pattern).match
            except InvalidPatternError:
                # Redis takes any bytes as a pattern; follow its own matcher for malformed ones.
                found = partial(_match_malformed, pattern)
        if len(_MATCHERS) < 1024:
            _MATCHERS[pattern] = found
    return found


def _match_all(key: bytes) -> bool:
    return True


def _match_malformed(pattern: bytes, key: bytes) -> bool:
    return bool(key) and redis_glob_match(pattern, key)


class MemoryNode:
    """One node of a ``MemoryCluster`` (``NodeIO``)."""

    def __init__(self, cluster: MemoryCluster, addr: NodeAddr) -> None:
        self._cluster = cluster
        self._addr = addr
        self._ready: dict[str, bool] = {}

    @property
    def addr(self) -> NodeAddr:
        """The node's address."""
        return self._addr

    async def cluster_view(self) -> ClusterView | None:
        """Slot ownership as CLUSTER SLOTS gives it, with each primary's live replicas."""
        c = self._cluster
        await c._enter(self._addr, "cluster_view")
        if all(o is None for o in c._owners):
            return None
        replicas = {p: tuple(r for r in c.replicas_of(p) if not c._nodes[r].killed)
                    for p in c.primaries()}
        return ClusterView(owners=tuple(c._owners),
                           replicas={p: r for p, r in replicas.items() if r})

    async def ownership(self) -> NodeOwnership:
        """The node's own ``myself`` line: owned, migrating, importing slots and epoch."""
        c = self._cluster
        state, injected = await c._enter(self._addr, "ownership")
        if injected is not None:
            return cast(NodeOwnership, injected.value)
        owned = c.slots_of(self._addr) if state.role == _PRIMARY else SlotSet()
        return NodeOwnership(owned, SlotSet(state.migrating), SlotSet(state.importing),
                             c._reported_epoch(state))

    async def dbsize(self) -> int:
        """Keys the node holds."""
        state, injected = await self._cluster._enter(self._addr, "dbsize")
        if injected is not None:
            return cast(int, injected.value)
        return len(state.data)

    async def scan(self, cursor: int, match: bytes, count: int) -> tuple[int, list[bytes]]:
        """One ``SCAN cursor MATCH match COUNT count`` over the node's own keys."""
        state, injected = await self._cluster._enter(self._addr, "scan")
        if injected is not None:
            return cast(tuple[int, list[bytes]], injected.value)
        return self._cluster._scan(state, cursor, match, count)

    async def keys_in_slot(self, slot: int, limit: int) -> list[bytes]:
        """``CLUSTER GETKEYSINSLOT slot limit`` over the node's own keys."""
        state, injected = await self._cluster._enter(self._addr, "keys_in_slot")
        if injected is not None:
            return cast(list[bytes], injected.value)
        return state.slot_keys(slot)[:limit]

    async def replication(self) -> Replication:
        """The node's replication offset, and for a replica whether its link is up."""
        state, injected = await self._cluster._enter(self._addr, "replication")
        if injected is not None:
            return cast(Replication, injected.value)
        if state.role == _REPLICA:
            return Replication(state.repl_offset, state.link_up)
        return Replication(state.repl_offset)

    async def key_commands(
        self, command: KeyCommand, key_lists: Sequence[Sequence[bytes]], *, window: int,
        on_reply: OnReply | None = None,
    ) -> list[Any]:
        """One ``command`` per key list; each reply an int or the error instance."""
        c = self._cluster
        state, injected = await c._enter(self._addr, "key_commands")
        if injected is not None and not _is_error(injected.value):
            return cast(list[Any], injected.value)
        replies: list[Any] = []
        for i, keys in enumerate(key_lists):
            if injected is not None and i == injected.after:
                raise _fresh(injected.value)
            if state.killed:
                raise RedisConnectionError(f"Connection closed by server ({self._addr.name}).")
            fault = c._reply_fault(self._addr, "key_commands")
            reply = fault if fault is not None else c._key_command(state, command, keys, False)
            replies.append(reply)
            if on_reply is not None:
                on_reply(i, reply)
            if (i + 1) % max(1, window) == 0 and i + 1 < len(key_lists):
                await anyio.lowlevel.checkpoint()
        if injected is not None and injected.after is not None:
            raise _fresh(injected.value)
        return replies

    async def asking(self, command: KeyCommand, keys: Sequence[bytes]) -> Any:
        """``ASKING`` then ``command keys``: the reply or the error instance."""
        c = self._cluster
        state, injected = await c._enter(self._addr, "asking")
        if injected is not None:
            return injected.value
        fault = c._reply_fault(self._addr, "asking")
        return fault if fault is not None else c._key_command(state, command, keys, True)

    async def script_ready(self, name: ScriptName) -> bool:
        """Whether the node runs the step (asked once; False when refused or unreachable)."""
        if name in self._ready:
            return self._ready[name]
        try:
            state, injected = await self._cluster._enter(self._addr, "script_ready")
        except ResponseError:
            self._ready[name] = False
            return False
        except (RedisError, OSError):
            return False  # not remembered: asked again next time, as redis_io does
        ok = bool(injected.value) if injected is not None else state.scripts
        self._ready[name] = ok
        return ok

    async def batch_calls(
        self, calls: Sequence[Sequence[SlotBatch]], *, window: int,
        on_reply: OnReply | None = None,
    ) -> list[Any]:
        """The per-slot UNLINK step once per call: ``(removed, failed batch indexes)`` each."""
        c = self._cluster
        state, injected = await c._enter(self._addr, "batch_calls")
        if injected is not None and not _is_error(injected.value):
            return cast(list[Any], injected.value)
        replies: list[Any] = []
        for i, call in enumerate(calls):
            if injected is not None and i == injected.after:
                raise _fresh(injected.value)
            if state.killed:
                raise RedisConnectionError(f"Connection closed by server ({self._addr.name}).")
            reply: Any = c._reply_fault(self._addr, "batch_calls") or c._script_refusal(state)
            if reply is None:
                removed = 0
                failed: list[int] = []
                for index, (_slot, keys) in enumerate(call):
                    n = c._script_unlink(state, keys) if keys else None
                    if n is None:
                        failed.append(index)
                    else:
                        removed += n
                reply = (removed, failed)
            replies.append(reply)
            if on_reply is not None:
                on_reply(i, reply)
            if (i + 1) % max(1, window) == 0 and i + 1 < len(calls):
                await anyio.lowlevel.checkpoint()
        if injected is not None and injected.after is not None:
            raise _fresh(injected.value)
        return replies

    async def scan_step(self, cursor: int, match: bytes, count: int, *,
                        on_late: Callable[[ScanStep], None] | None = None) -> ScanStep:
        """One server-side SCAN step that unlinks each key it finds.

        The step runs at once after the call's last wait, so a cancelled call never ran and
        ``on_late`` is never needed.
        """
        c = self._cluster
        state, injected = await c._enter(self._addr, "scan_step")
        if injected is not None:
            return cast(ScanStep, injected.value)
        refused = c._script_refusal(state)
        if refused is not None:
            raise refused
        next_cursor, keys = c._scan(state, cursor, match, count)
        deleted = 0
        left: list[bytes] = []
        for k in keys:
            n = c._script_unlink(state, [k])
            if n is None:
                left.append(k)
            else:
                deleted += n
        return ScanStep(next_cursor, len(keys), deleted, left)

    async def slot_walk(
        self, prefixes: Sequence[bytes], ranges: deque[tuple[int, int]], *, budget: int,
        cap: int, on_step: WalkStepHandler, max_calls: int, empty_key: bool,
    ) -> None:
        """Walk slot ranges as the Lua step does, one call (one logged operation) at a time."""
        c = self._cluster
        while ranges and max_calls > 0:
            lo, hi = ranges[0]
            state, injected = await c._enter(self._addr, "slot_walk")
            if injected is not None:
                step = cast(SlotWalkStep, injected.value)
            else:
                refused = c._script_refusal(state)
                if refused is not None:
                    raise refused
                step = self._walk_call(state, prefixes, lo, hi, budget, cap, empty_key)
            max_calls -= 1
            ranges.popleft()
            if step.next_slot != -1:
                ranges.appendleft((step.next_slot, hi))
            on_step(lo, hi if step.next_slot == -1 else step.next_slot - 1, step)

    def _walk_call(self, state: _NodeState, prefixes: Sequence[bytes], lo: int, hi: int,
                   budget: int, cap: int, empty_key: bool) -> SlotWalkStep:
        c = self._cluster
        mine = state.addr
        moving = set(state.migrating) | set(state.importing)
        per = [0] * len(prefixes)
        examined = matched = deleted = 0
        big: list[int] = []
        failed: list[bytes] = []
        unproven: list[int] = []
        s = lo
        while s <= hi:
            if examined >= budget:
                break
            if state.role != _PRIMARY or c._owners[s] is not mine or s in moving:
                unproven.append(s)
            else:
                keys = state.slot_keys(s)
                if len(keys) > cap:
                    big.append(s)
                elif keys:
                    examined += len(keys)
                    hit: list[bytes] = []
                    for k in keys:
                        if k or empty_key:
                            for p, prefix in enumerate(prefixes):
                                if k.startswith(prefix):
                                    hit.append(k)
                                    per[p] += 1
                                    break
                    for j in range(0, len(hit), _UNLINK_CHUNK):
                        chunk = hit[j:j + _UNLINK_CHUNK]
                        n = c._script_unlink(state, chunk)
                        if n is None:
                            failed.extend(chunk)
                        else:
                            deleted += n
                    matched += len(hit)
            s += 1
        return SlotWalkStep(-1 if s > hi else s, examined, matched, deleted, big, failed, per,
                            unproven)


if TYPE_CHECKING:
    # The cluster and its nodes implement the seam (checked by mypy, no cost at run time).
    _io: ClusterIO = MemoryCluster()
    _node: NodeIO = MemoryNode(MemoryCluster(), NodeAddr("127.0.0.1", 1))
