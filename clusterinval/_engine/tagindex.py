"""Writing the tag index: tagging existing keys, writing entries with their tags, and trimming
members that no longer exist (gc)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import partial

import anyio
from redis.exceptions import RedisError

from clusterinval._core.slots import key_slot
from clusterinval._core.tags import TAG_KEY_PREFIX, merged_ttl, set_key, tag_slot
from clusterinval._core.values import NodeAddr
from clusterinval._engine.slotcall import SlotCaller
from clusterinval._engine.topology import Topology
from clusterinval._io.protocol import NodeIO
from clusterinval.result import TagGcResult

__all__ = ["TTL_MARGIN_MS", "TagIndex"]

# An index set outlives its longest-lived member by this much: the member's TTL is read a moment
# before the set's is set, and an index that expires first would leave its member unreachable.
TTL_MARGIN_MS = 1000
_MEMBERS_PER_CALL = 1000


class TagIndex:
    """Adds keys to tags' member sets, and trims members whose keys are gone."""

    def __init__(self, topology: Topology, caller: SlotCaller, command_timeout_s: float) -> None:
        self._topology = topology
        self._caller = caller
        self._timeout_s = command_timeout_s

    async def tag(self, keys: Sequence[bytes], tags: Sequence[bytes]) -> int:
        """Add existing ``keys`` to each tag; members added (a key absent now is not added)."""
        ttls = await self._ttls(keys)
        alive = [k for k in keys if ttls[k] != -2]
        if not alive:
            return 0
        ttl = merged_ttl([ttls[k] for k in alive])
        return await self.add(alive, tags, None if ttl is None else ttl + TTL_MARGIN_MS)

    async def add(self, members: Sequence[bytes], tags: Sequence[bytes], ttl_ms: int | None
                  ) -> int:
        """Add ``members`` to each tag's set, whose TTL grows to ``ttl_ms`` (None: no TTL)."""
        added = 0

        async def one(tag: bytes) -> None:
            nonlocal added
            for start in range(0, len(members), _MEMBERS_PER_CALL):
                chunk = members[start : start + _MEMBERS_PER_CALL]
                # Read the count before adding: ``added += await ...`` would read ``added``
                # first and lose what other tags added meanwhile.
                n = await self._caller.call(
                    tag_slot(tag), partial(_add, set_key(tag), chunk, ttl_ms), "tagging keys")
                added += n

        async with anyio.create_task_group() as tg:
            for tag in tags:
                tg.start_soon(one, tag)
        return added

    async def write(self, items: Sequence[tuple[bytes, bytes, int | None]],
                    tags: Sequence[bytes]) -> None:
        """SET each ``(key, value, ttl_ms)``, then add the keys to ``tags``.

        The SETs go out together, then the index writes together: one extra round trip. The
        order matters: a key is indexed only once it exists, so an invalidation that takes the
        set either finds it there (and deletes the entry) or runs before it is indexed (and the
        entry, written after the invalidation began, stays, indexed for the next one). Indexing
        first could leave a live entry that no index lists.
        """
        async with anyio.create_task_group() as tg:
            for key, value, ttl_ms in items:
                tg.start_soon(self._caller.call, key_slot(key),
                              partial(_write, key, value, ttl_ms), "writing a tagged entry")
        ttls = [ttl for _k, _v, ttl in items]
        longest = None if any(t is None for t in ttls) else max(t or 0 for t in ttls)
        await self.add([k for k, _v, _t in items], tags,
                       None if longest is None else longest + TTL_MARGIN_MS)

    async def gc(self, tags: Sequence[bytes] | None, *, step: int = 500) -> TagGcResult:
        """Remove members whose key no longer exists, in bounded steps; all tags when None."""
        sets = [set_key(t) for t in tags] if tags is not None else await self._find_sets()
        checked = removed = 0
        for key in sets:
            slot = key_slot(key)
            cursor = 0
            while True:
                cursor, members = await self._caller.call(
                    slot, partial(_scan, key, cursor, step), "reading a tag's set")
                checked += len(members)
                ttls = await self._ttls(members)
                dead = [m for m in members if ttls[m] == -2]
                if dead:
                    removed += await self._caller.call(slot, partial(_remove, key, dead),
                                                       "trimming a tag's set")
                if cursor == 0:
                    break
        return TagGcResult(len(sets), checked, removed)

    async def _find_sets(self) -> list[bytes]:
        """Every tag member set in the cluster (SCAN of each primary for the index prefix)."""
        topology = self._topology
        view = topology.view or await topology.refresh()
        found: list[bytes] = []
        for node in view.primaries:
            io = topology.node(node)
            cursor = 0
            while True:
                with anyio.fail_after(self._timeout_s):
                    cursor, keys = await io.scan(cursor, TAG_KEY_PREFIX + b"{*}", 1000)
                found.extend(k for k in keys if k.endswith(b"}"))
                if cursor == 0:
                    break
        return sorted(set(found))

    async def _ttls(self, keys: Sequence[bytes]) -> dict[bytes, int]:
        """PTTL of each key on its owner; a key whose owner could not answer counts as never
        expiring (-1), so the index that holds it is never given a shorter life."""
        topology = self._topology
        view = topology.view or await topology.refresh()
        by_node: dict[NodeAddr | None, list[bytes]] = defaultdict(list)
        for k in keys:
            by_node[view.owner(key_slot(k))].append(k)
        out: dict[bytes, int] = dict.fromkeys(keys, -1)

        async def read(node: NodeAddr, batch: list[bytes]) -> None:
            try:
                with anyio.fail_after(self._timeout_s):
                    replies = await topology.node(node).ttls(batch)
            except (RedisError, OSError, TimeoutError):
                return
            for k, reply in zip(batch, replies, strict=True):
                if isinstance(reply, int):
                    out[k] = reply

        async with anyio.create_task_group() as tg:
            for node, batch in by_node.items():
                if node is not None:
                    tg.start_soon(read, node, batch)
        return out


async def _add(key: bytes, members: Sequence[bytes], ttl_ms: int | None, io: NodeIO) -> int:
    return await io.tags.add(key, members, ttl_ms)


async def _write(key: bytes, value: bytes, ttl_ms: int | None, io: NodeIO) -> None:
    reply = await io.write(key, value, ttl_ms)
    if isinstance(reply, BaseException):
        raise reply


async def _scan(key: bytes, cursor: int, count: int, io: NodeIO) -> tuple[int, list[bytes]]:
    return await io.tags.scan(key, cursor, count)


async def _remove(key: bytes, members: Sequence[bytes], io: NodeIO) -> int:
    return await io.tags.remove(key, members)
