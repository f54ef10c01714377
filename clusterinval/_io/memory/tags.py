"""The tag index on an in-memory node: member sets as the real scripts and SSCAN handle them."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from redis.exceptions import ResponseError

from clusterinval._core.values import NodeAddr, TagTake
from clusterinval._io.memory.call import enter
from clusterinval._io.memory.commands import route
from clusterinval._io.memory.controls import CallControls
from clusterinval._io.memory.errors import redis_error
from clusterinval._io.memory.node_state import NodeState
from clusterinval._io.memory.topology import ClusterState

__all__ = ["MemoryTagStore", "sadd", "srem"]

_SET_MARK = b"\x00set"  # the value a set-typed key holds in ``data`` (its members are in ``sets``)
_WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"


class _Done:
    """A ``take_many`` the in-memory node has already answered."""

    def __init__(self, results: list[TagTake | BaseException]) -> None:
        self._results = results

    async def results(self) -> list[TagTake | BaseException]:
        """The results."""
        return self._results

    async def abandon(self) -> None:
        """Nothing is in flight."""


class MemoryTagStore:
    """A node's side of the tag index (``TagStore``)."""

    def __init__(self, cluster: ClusterState, controls: CallControls, addr: NodeAddr) -> None:
        self._cluster = cluster
        self._controls = controls
        self._addr = addr

    async def _serving(self, operation: str, keys: Sequence[bytes]) -> NodeState:
        state, _injected = await enter(self._cluster, self._controls, self._addr, operation)
        refused = route(self._cluster, state, keys, False)
        if refused is not None:
            raise refused
        for key in keys:
            if key in state.data and key not in state.sets:
                raise redis_error(_WRONGTYPE)
        return state

    async def add(self, set_key: bytes, members: Sequence[bytes], ttl_ms: int | None) -> int:
        """SADD; the set's TTL grows to ``ttl_ms`` (None: never expires)."""
        state = await self._serving("tag_add", [set_key])

        def change(node: NodeState) -> int:
            existed = set_key in node.sets
            added = sadd(node, set_key, members)
            if ttl_ms is None:
                node.ttls.pop(set_key, None)
            else:
                current = node.ttls.get(set_key, -1)
                if not existed or 0 <= current < ttl_ms:
                    node.ttls[set_key] = max(int(ttl_ms), 1)
            return added

        return self._cluster.apply(state, change)

    async def take(self, set_key: bytes, takes_key: bytes, taken_key: bytes, *, keep_ms: int,
                   inline: int) -> TagTake:
        """RENAME the set aside, register it, and list what earlier takes left."""
        state = await self._serving("tag_take", [set_key, takes_key, taken_key])
        leftovers = sorted(k for k in state.sets.get(takes_key, ()) if k != taken_key)

        def change(node: NodeState) -> int:
            members = node.sets.get(set_key)
            if members is None:
                return 0
            node.drop(set_key)
            node.drop(taken_key)
            node.put(taken_key, _SET_MARK)
            node.sets[taken_key] = set(members)
            node.ttls[taken_key] = keep_ms
            sadd(node, takes_key, [taken_key])
            node.ttls[takes_key] = keep_ms
            return len(members)

        count = self._cluster.apply(state, change)
        taken = state.sets.get(taken_key, set())
        return TagTake(count, sorted(taken) if count and count <= inline else None, leftovers)

    async def done(self, takes_key: bytes, taken_key: bytes) -> None:
        """UNLINK the taken set and SREM its registration."""
        state = await self._serving("tag_done", [takes_key, taken_key])

        def change(node: NodeState) -> None:
            node.drop(taken_key)
            srem(node, takes_key, [taken_key])

        self._cluster.apply(state, change)

    async def take_many(self, takes: Sequence[tuple[bytes, bytes, bytes]],
                        finished: Sequence[tuple[bytes, bytes]], *, keep_ms: int, inline: int
                        ) -> list[TagTake | BaseException]:
        """``done`` for each finished set, then ``take`` for each set, as one exchange would."""
        for takes_key, taken_key in finished:
            # A failure leaves the set registered: a later take of its tag finishes it.
            with contextlib.suppress(ResponseError):
                await self.done(takes_key, taken_key)
        out: list[TagTake | BaseException] = []
        for set_key, takes_key, taken_key in takes:
            try:
                out.append(await self.take(set_key, takes_key, taken_key, keep_ms=keep_ms,
                                           inline=inline))
            except ResponseError as exc:
                out.append(exc)
        return out

    async def begin_take_many(self, takes: Sequence[tuple[bytes, bytes, bytes]],
                              finished: Sequence[tuple[bytes, bytes]], *, keep_ms: int,
                              inline: int) -> _Done:
        """``take_many``, done now; its results handed out by ``results()``."""
        return _Done(await self.take_many(takes, finished, keep_ms=keep_ms, inline=inline))

    async def scan(self, key: bytes, cursor: int, count: int) -> tuple[int, list[bytes]]:
        """SSCAN over the members in sorted order; the cursor is an index into it."""
        state = await self._serving("tag_scan", [key])
        members = sorted(state.sets.get(key, ()))
        end = min(cursor + max(count, 1), len(members))
        return (0 if end >= len(members) else end), members[cursor:end]

    async def restore(self, set_key: bytes, members: Sequence[bytes]) -> int:
        """SADD members back."""
        state = await self._serving("tag_restore", [set_key])
        return self._cluster.apply(state, lambda node: sadd(node, set_key, members))

    async def remove(self, set_key: bytes, members: Sequence[bytes]) -> int:
        """SREM members."""
        state = await self._serving("tag_remove", [set_key])
        return self._cluster.apply(state, lambda node: srem(node, set_key, members))


def sadd(node: NodeState, key: bytes, members: Sequence[bytes]) -> int:
    """SADD on one node's state; the number of members that were new."""
    if not members:
        raise ResponseError("ERR wrong number of arguments for 'sadd' command")
    found = node.sets.get(key)
    if found is None:
        node.put(key, _SET_MARK)
        found = node.sets[key] = set()
    before = len(found)
    found.update(members)
    return len(found) - before


def srem(node: NodeState, key: bytes, members: Sequence[bytes]) -> int:
    """SREM on one node's state (an emptied set is deleted); the number removed."""
    found = node.sets.get(key)
    if found is None:
        return 0
    before = len(found)
    found.difference_update(members)
    if not found:
        node.drop(key)  # Redis deletes a set that becomes empty
    return before - len(found)
