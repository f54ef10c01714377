"""One in-memory node behind the ``NodeIO`` seam: each operation as its node would answer it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import RedisError, ResponseError

from clusterinval._core.slots import SlotSet
from clusterinval._core.values import (
    ClusterView,
    NodeAddr,
    NodeOwnership,
    Replication,
    ScanStep,
    SlotBatch,
    SlotWalkStep,
)
from clusterinval._io.memory import steps
from clusterinval._io.memory.call import enter, pipeline
from clusterinval._io.memory.commands import key_command, route, scan
from clusterinval._io.memory.controls import CallControls, Injection
from clusterinval._io.memory.node_state import PRIMARY, REPLICA, NodeState
from clusterinval._io.memory.tags import MemoryTagStore
from clusterinval._io.memory.topology import ClusterState
from clusterinval._io.protocol import KeyCommand, NodeIO, OnReply, ScriptName, WalkStepHandler

__all__ = ["MemoryNode"]


class MemoryNode:
    """One node of a ``MemoryCluster`` (``NodeIO``)."""

    def __init__(self, cluster: ClusterState, controls: CallControls, addr: NodeAddr) -> None:
        self._cluster = cluster
        self._controls = controls
        self._addr = addr
        self._ready: dict[str, bool] = {}
        self._tags = MemoryTagStore(cluster, controls, addr)

    @property
    def addr(self) -> NodeAddr:
        """The node's address."""
        return self._addr

    @property
    def tags(self) -> MemoryTagStore:
        """The node's side of the tag index."""
        return self._tags

    async def ttls(self, keys: Sequence[bytes]) -> list[Any]:
        """PTTL of each key as the node answers it: ms, -1 (no TTL), -2 (absent) or the error."""
        state, _injected = await self._enter("ttls")
        out: list[Any] = []
        for key in keys:
            refused = route(self._cluster, state, [key], False)
            if refused is not None:
                out.append(refused)
            elif key not in state.data:
                out.append(-2)
            else:
                out.append(state.ttls.get(key, -1))
        return out

    async def write(self, key: bytes, value: bytes, ttl_ms: int | None) -> Any:
        """SET (PX ``ttl_ms``): True, or the error instance the node answered."""
        state, _injected = await self._enter("write")
        refused = route(self._cluster, state, [key], False)
        if refused is not None:
            return refused

        def change(node: NodeState) -> None:
            node.drop(key)
            node.put(key, value)
            if ttl_ms is not None:
                node.ttls[key] = ttl_ms

        self._cluster.apply(state, change)
        return True

    async def _enter(self, operation: str) -> tuple[NodeState, Injection | None]:
        return await enter(self._cluster, self._controls, self._addr, operation)

    # -- reading the node ----------------------------------------------------------------------

    async def cluster_view(self) -> ClusterView | None:
        """Slot ownership as CLUSTER SLOTS gives it, with each primary's live replicas."""
        c = self._cluster
        await self._enter("cluster_view")
        if all(o is None for o in c.owners):
            return None
        replicas = {
            p: tuple(r for r in c.replicas_of(p) if not c.nodes[r].killed) for p in c.primaries()
        }
        return ClusterView(
            owners=tuple(c.owners), replicas={p: r for p, r in replicas.items() if r}
        )

    async def ownership(self) -> NodeOwnership:
        """The node's own ``myself`` line: owned, migrating, importing slots and epoch."""
        c = self._cluster
        state, injected = await self._enter("ownership")
        if injected is not None:
            return cast(NodeOwnership, injected.value)
        owned = c.slots_of(self._addr) if state.role == PRIMARY else SlotSet()
        return NodeOwnership(
            owned, SlotSet(state.migrating), SlotSet(state.importing), c.reported_epoch(state)
        )

    async def dbsize(self) -> int:
        """Keys the node holds."""
        state, injected = await self._enter("dbsize")
        if injected is not None:
            return cast(int, injected.value)
        return len(state.data)

    async def scan(self, cursor: int, match: bytes, count: int) -> tuple[int, list[bytes]]:
        """One ``SCAN cursor MATCH match COUNT count`` over the node's own keys."""
        state, injected = await self._enter("scan")
        if injected is not None:
            return cast(tuple[int, list[bytes]], injected.value)
        return scan(self._cluster, state, cursor, match, count)

    async def keys_in_slot(self, slot: int, limit: int) -> list[bytes]:
        """``CLUSTER GETKEYSINSLOT slot limit`` over the node's own keys."""
        state, injected = await self._enter("keys_in_slot")
        if injected is not None:
            return cast(list[bytes], injected.value)
        return state.slot_keys(slot)[:limit]

    async def replication(self) -> Replication:
        """The node's replication offset, and for a replica whether its link is up."""
        state, injected = await self._enter("replication")
        if injected is not None:
            return cast(Replication, injected.value)
        if state.role == REPLICA:
            return Replication(state.repl_offset, state.link_up)
        return Replication(state.repl_offset)

    # -- key commands --------------------------------------------------------------------------

    async def key_commands(
        self, command: KeyCommand, key_lists: Sequence[Sequence[bytes]], *, window: int,
        on_reply: OnReply | None = None,
    ) -> list[Any]:  # fmt: skip
        """One ``command`` per key list; each reply an int or the error instance."""

        def answer(state: NodeState, keys: Sequence[bytes]) -> Any:
            return key_command(self._cluster, state, command, keys, False)

        return await pipeline(self._cluster, self._controls, self._addr, "key_commands",
                              key_lists, answer, window=window, on_reply=on_reply)  # fmt: skip

    def can_begin(self) -> bool:
        """Always: an in-memory node needs no connection (``StagedKeyCommands``)."""
        return True

    async def begin_key_commands(
        self, command: KeyCommand, key_lists: Sequence[Sequence[bytes]], *,
        on_reply: OnReply | None = None,
    ) -> StagedReplies:
        """The commands, run now as the node runs what it receives; their replies read later.

        A fault after some replies keeps those (they were on the wire) and is raised when the
        replies are read; a fault before any reply fails the send itself.
        """
        got: list[Any] = []
        try:
            replies = await self.key_commands(command, key_lists, window=max(1, len(key_lists)),
                                              on_reply=lambda _i, reply: got.append(reply))
        except (RedisError, OSError) as exc:
            if not got:
                raise
            return StagedReplies(got, on_reply, exc)
        return StagedReplies(replies, on_reply, None)

    async def asking(self, command: KeyCommand, keys: Sequence[bytes]) -> Any:
        """``ASKING`` then ``command keys``: the reply or the error instance."""
        state, injected = await self._enter("asking")
        if injected is not None:
            return injected.value
        fault = self._controls.reply_fault(self._addr, "asking")
        if fault is not None:
            return fault
        return key_command(self._cluster, state, command, keys, True)

    # -- server-side steps ---------------------------------------------------------------------

    async def script_ready(self, name: ScriptName) -> bool:
        """Whether the node runs the step (asked once; False when refused or unreachable)."""
        if name in self._ready:
            return self._ready[name]
        try:
            state, injected = await self._enter("script_ready")
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
    ) -> list[Any]:  # fmt: skip
        """The per-slot UNLINK step once per call: ``(removed, failed batch indexes)`` each."""

        def answer(state: NodeState, call: Sequence[SlotBatch]) -> Any:
            return steps.script_refusal(state) or steps.batch_call(self._cluster, state, call)

        return await pipeline(self._cluster, self._controls, self._addr, "batch_calls",
                              calls, answer, window=window, on_reply=on_reply)  # fmt: skip

    async def scan_step(
        self, cursor: int, match: bytes, count: int, *,
        on_late: Callable[[ScanStep], None] | None = None,
        prefixes: Sequence[bytes] = (), empty_key: bool = False,
    ) -> ScanStep:  # fmt: skip
        """One server-side SCAN step that unlinks each key it finds.

        The step runs at once after the call's last wait, so a cancelled call never ran and
        ``on_late`` is never needed.
        """
        state, injected = await self._enter("scan_step")
        if injected is not None:
            return cast(ScanStep, injected.value)
        refused = steps.script_refusal(state)
        if refused is not None:
            raise refused
        return steps.scan_step(self._cluster, state, cursor, match, count, prefixes, empty_key)

    async def slot_walk(
        self, prefixes: Sequence[bytes], ranges: deque[tuple[int, int]], *, budget: int,
        cap: int, on_step: WalkStepHandler, max_calls: int, empty_key: bool, probe: bytes = b"",
    ) -> None:  # fmt: skip
        """Walk slot ranges as the Lua step does, one call (one logged operation) at a time.

        The probe key changes only how a real node proves ownership, not what it proves: it is
        not needed here."""
        while ranges and max_calls > 0:
            lo, hi = ranges[0]
            state, injected = await self._enter("slot_walk")
            if injected is not None:
                step = cast(SlotWalkStep, injected.value)
            else:
                refused = steps.script_refusal(state)
                if refused is not None:
                    raise refused
                step = steps.walk_call(
                    self._cluster, state, prefixes, lo, hi, budget, cap, empty_key
                )
            max_calls -= 1
            ranges.popleft()
            if step.next_slot != -1:
                ranges.appendleft((step.next_slot, hi))
            on_step(lo, hi if step.next_slot == -1 else step.next_slot - 1, step)


if TYPE_CHECKING:
    # The node implements the seam (checked by mypy, no cost at run time).
    _node: NodeIO = MemoryNode(
        ClusterState(1, 0, "127.0.0.1", 1, require_full_coverage=True, scan_repeat=False),
        CallControls(),
        NodeAddr("127.0.0.1", 1),
    )


class StagedReplies:
    """Replies of staged commands an in-memory node already answered (``PendingReplies``)."""

    def __init__(self, replies: list[Any], on_reply: OnReply | None,
                 error: BaseException | None) -> None:
        self._replies = replies
        self._on_reply = on_reply
        self._error = error
        self._told = False

    def _tell(self) -> None:
        if self._told:
            return
        self._told = True
        if self._on_reply is not None:
            for i, reply in enumerate(self._replies):
                self._on_reply(i, reply)

    async def replies(self) -> list[Any]:
        """Every reply, each told to ``on_reply``; the fault that cut them short, raised."""
        self._tell()
        if self._error is not None:
            raise self._error
        return self._replies

    async def abandon(self) -> None:
        """The replies already answered are told, as a drain reads them."""
        self._tell()
