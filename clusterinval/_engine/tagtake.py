"""Invalidating by tag: take each tag's member set, then unlink its members like exact keys.

Per tag:

1. *Take* the set (one script on the tag's slot): it is renamed to a per-run key and registered
   in the tag's *takes* set. A key tagged from then on goes into a new set and survives this run.
2. Read the taken set: inline when small, else in bounded SSCAN steps. Sets that earlier runs took
   and never finished (``leftovers``: a process died, a run ended incomplete) are read too.
3. Unlink the members through the exact-key path: grouped by slot, each slot done only once a
   node confirmed it.
4. Only when every member is confirmed gone are the taken sets dropped. Otherwise they stay
   registered, and the next run of the tag finishes them.

A tag whose index cannot be reached or read whole leaves its slot uncovered: the run is
incomplete, never silently empty. A dry run reads the live set (and leftovers) without taking.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import anyio
from redis.exceptions import RedisError

from clusterinval._core.planning import Plan
from clusterinval._core.tags import set_key, tag_slot, taken_key, takes_key
from clusterinval._core.tally import RunTally
from clusterinval._engine.retry import describe
from clusterinval._engine.run import Engine
from clusterinval._engine.slotcall import SlotCaller
from clusterinval._io.protocol import NodeIO
from clusterinval.errors import ClusterConnectionError, ClusterPermissionError

__all__ = ["TagOutcome", "TagTaker"]

log = logging.getLogger("clusterinval.engine")

# How long a taken set is kept if its run never finishes it (the next run of the tag does).
TAKEN_KEEP_MS = 7 * 24 * 3600 * 1000
# Members returned with the take itself; a larger set is read in SSCAN steps of this many.
INLINE_MEMBERS = 1000
SCAN_STEP = 1000
# Tags taken at once by one call.
_CONCURRENT_TAGS = 16


@dataclass
class TagOutcome:
    """What one call's tags did: per tag, members removed and the size of the set taken."""

    removed: list[int]
    sizes: list[int]
    tally: RunTally = field(default_factory=RunTally)
    members: list[bytes] = field(default_factory=list)  # every member read, all tags together


class TagTaker:
    """Invalidates tags through an engine (the members go through its exact-key path)."""

    def __init__(self, engine: Engine, caller: SlotCaller) -> None:
        self._engine = engine
        self._caller = caller

    async def run(self, tags: Sequence[bytes], patterns: int, *, dry_run: bool) -> TagOutcome:
        """Invalidate ``tags``; ``patterns`` sizes the tally's per-pattern figures (unused)."""
        outcome = TagOutcome([0] * len(tags), [0] * len(tags), RunTally(patterns))
        run_id = os.urandom(8).hex().encode()
        if len(tags) == 1:
            await self._one(0, tags[0], run_id, outcome, dry_run)
            return outcome
        limiter = anyio.CapacityLimiter(_CONCURRENT_TAGS)

        async def one(index: int, tag: bytes) -> None:
            async with limiter:
                await self._one(index, tag, run_id, outcome, dry_run)

        async with anyio.create_task_group() as tg:
            for index, tag in enumerate(tags):
                tg.start_soon(one, index, tag)
        return outcome

    async def _one(self, index: int, tag: bytes, run_id: bytes, outcome: TagOutcome,
                   dry_run: bool) -> None:
        tally = outcome.tally
        slot = tag_slot(tag)
        shown = tag.decode("utf-8", "backslashreplace")
        try:
            members, sets = await self._members(tag, run_id, dry_run)
        except (RedisError, OSError, TimeoutError, ClusterConnectionError) as exc:
            tally.uncovered.add(slot)
            tally.messages.append(f"tag {shown!r}: its index could not be read ({describe(exc)})")
            log.warning("tag %r: index not readable: %s", shown, describe(exc))
            return
        outcome.sizes[index] = len(members)
        outcome.members.extend(members)
        part = RunTally(len(tally.per_pattern))
        if members:
            await self._engine.run(Plan(keys=tuple(members), passes=(), patterns=()), part,
                                   dry_run=dry_run)
        outcome.removed[index] = part.matched if dry_run else part.deleted
        tally.absorb(part)
        if dry_run or not part.complete:
            return  # the taken sets stay registered: the next run of the tag finishes them
        for taken in sets:
            await self.drop(slot, takes_key(tag), taken)

    async def drop(self, slot: int, takes: bytes, taken: bytes) -> None:
        """Drop a taken set whose members are all gone (on failure it stays registered)."""
        try:
            await self._caller.call(slot, partial(_done, takes, taken),
                                    "dropping a finished tag set")
        except ClusterPermissionError:
            raise
        except (RedisError, OSError, TimeoutError, ClusterConnectionError) as exc:
            # Harmless: its members are gone; the next run reads it again and finds nothing.
            log.info("finished tag set %r not dropped yet: %s", taken, describe(exc))

    async def _members(self, tag: bytes, run_id: bytes, dry_run: bool
                       ) -> tuple[list[bytes], list[bytes]]:
        """(every member, the taken sets they were read from)."""
        slot = tag_slot(tag)
        caller = self._caller
        if dry_run:
            sources = [set_key(tag)]
            sources += await self.read(slot, takes_key(tag))
            members: dict[bytes, None] = {}
            for source in sources:
                members.update(dict.fromkeys(await self.read(slot, source)))
            return list(members), []
        taken = taken_key(tag, run_id)
        take = await caller.call(slot, lambda io: io.tags.take(
            set_key(tag), takes_key(tag), taken, keep_ms=TAKEN_KEEP_MS, inline=INLINE_MEMBERS),
            "taking a tag's set")
        sets = ([taken] if take.count else []) + list(take.leftovers)
        found: dict[bytes, None] = {}
        if take.members is not None:
            found.update(dict.fromkeys(take.members))
            rest = sets[1:] if take.count else sets
        else:
            rest = sets
        for source in rest:
            found.update(dict.fromkeys(await self.read(slot, source)))
        return list(found), sets

    async def read(self, slot: int, key: bytes) -> list[bytes]:
        """Every member of the set at ``key``, in bounded SSCAN steps."""
        out: list[bytes] = []
        cursor = 0
        while True:
            cursor, members = await self._caller.call(
                slot, partial(_scan, key, cursor), "reading a tag's set")
            out.extend(members)
            if cursor == 0:
                return out


async def _done(takes: bytes, taken: bytes, io: NodeIO) -> None:
    await io.tags.done(takes, taken)


async def _scan(key: bytes, cursor: int, io: NodeIO) -> tuple[int, list[bytes]]:
    return await io.tags.scan(key, cursor, SCAN_STEP)
