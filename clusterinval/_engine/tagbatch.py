"""Tag batches: concurrent tag invalidations on one invalidator share their round trips.

A call's tags join the batch that is forming; one batch runs at a time, so calls that arrive
while one runs make up the next, and a lone call is a batch of one that starts at once. A batch
is two exchanges per node, whatever the number of its tags:

1. every tag's set is taken (the take scripts of all the tags a node serves, in one write);
2. every member is unlinked on its owner (``Unlinker``), in slot batches that each belong to one
   tag of one call, so every reply counts for exactly that tag and that call.

A taken set whose members are all confirmed gone is dropped in the first exchange of the next
batch (before any take, so the tag's next take never meets it), or when the invalidator closes.
Until then it stays registered: if that never happens (the process dies), the tag's next take
reads it again and finds its members gone.

No task outlives its caller: the batch runs in the task of one of its callers, the first to find
it ready. If that caller leaves (cancelled, past its deadline) the batch stops, and each other
caller finishes its own unfinished tags alone (``TagTaker``); nothing is lost, as a taken set
stays registered until its members are confirmed gone. A call whose tag is already in the
forming batch runs alone: two takes of one tag are atomic either way.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
from redis.exceptions import RedisError

from clusterinval._core.batching import group_by_slot
from clusterinval._core.slots import SlotSet
from clusterinval._core.tags import set_key, tag_slot, taken_key, takes_key
from clusterinval._core.tally import RunTally
from clusterinval._core.values import ClusterView, NodeAddr, SlotBatch, TagTake
from clusterinval._engine import staged, tagtake
from clusterinval._engine.retry import describe
from clusterinval._engine.run import Engine
from clusterinval._engine.tagtake import TAKEN_KEEP_MS, TagOutcome, TagTaker
from clusterinval._engine.unlinker import Unlinker
from clusterinval._io.protocol import TakesInFlight
from clusterinval.errors import ClusterConnectionError, ClusterPermissionError

__all__ = ["TagBatches"]

log = logging.getLogger("clusterinval.engine")


# A taken set to drop once its members are gone: (the tag's slot, its takes key, the set's key).
_Finished = tuple[int, bytes, bytes]


@dataclass(eq=False)
class _Entry:
    """One tag of one call, in a batch."""

    index: int  # the tag's place in its call
    tag: bytes
    slot: int
    tally: RunTally
    taken: bytes = b""
    sets: list[bytes] = field(default_factory=list)  # taken sets read (dropped once finished)
    members: list[bytes] = field(default_factory=list)
    removed: int = 0
    pending: Counter[int] = field(default_factory=Counter)  # keys not confirmed yet, per slot
    alone: bool = False  # the batch could not serve it: its caller runs it alone
    finished: bool = False  # every member confirmed gone
    settled: bool = False  # its figures are final (finished, or reported incomplete)


@dataclass(eq=False)
class _Call:
    entries: list[_Entry]
    left: bool = False


@dataclass(eq=False)
class _Batch:
    calls: list[_Call] = field(default_factory=list)
    tags: set[bytes] = field(default_factory=set)
    started: bool = False
    completed: bool = False  # ran to its end (its driver did not leave)
    finished: anyio.Event = field(default_factory=anyio.Event)


class TagBatches:
    """Runs the tag invalidations of concurrent calls in shared batches."""

    def __init__(self, engine: Engine, taker: TagTaker) -> None:
        self._engine = engine
        self._taker = taker
        self._forming: _Batch | None = None
        self._running: _Batch | None = None
        self._idle = anyio.Event()  # set (and replaced) whenever a batch ends
        self._finished: list[_Finished] = []  # taken sets whose members are all gone

    async def run(self, tags: Sequence[bytes], patterns: int) -> TagOutcome:
        """Invalidate ``tags`` (never a dry run); ``patterns`` sizes the tally's figures."""
        batch = self._forming
        if batch is not None and not batch.tags.isdisjoint(tags):
            # A tag of this call is in the forming batch already: take it alone, now.
            return await self._taker.run(tags, patterns, dry_run=False)
        if batch is None:
            batch = self._forming = _Batch()
        run_id = os.urandom(8).hex().encode()
        call = _Call([_Entry(i, t, tag_slot(t), RunTally(patterns),
                             taken=taken_key(t, run_id)) for i, t in enumerate(tags)])
        batch.calls.append(call)
        batch.tags.update(tags)
        outcome = TagOutcome([0] * len(tags), [0] * len(tags), RunTally(patterns))
        timeout_s = self._engine.options.timeout_s
        with anyio.move_on_after(timeout_s) as scope:
            try:
                await self._serve(batch)
            except BaseException:
                call.left = True
                raise
            if not batch.completed:
                # Its driver left before the end: what it did not finish, this call does.
                for entry in call.entries:
                    entry.alone = entry.alone or not entry.finished
            await self._finish_alone(call, outcome, patterns)
        for entry in call.entries:
            outcome.removed[entry.index] += entry.removed
            outcome.tally.absorb(entry.tally)
            if not entry.alone:
                outcome.sizes[entry.index] += len(entry.members)
                outcome.members.extend(entry.members)
        if scope.cancelled_caught:
            call.left = True
            outcome.tally.timed_out = True
            outcome.tally.messages.append(f"deadline of {timeout_s:g} s passed")
            for entry in call.entries:
                if not entry.settled:
                    outcome.tally.uncovered.add(entry.slot)
                    outcome.tally.uncovered.update(
                        SlotSet(slot for slot, n in entry.pending.items() if n > 0))
        return outcome

    async def flush(self) -> None:
        """Drop the finished sets now (the invalidator is closing)."""
        topology = self._engine.topology
        view = topology.view
        if not self._finished or view is None:
            return
        by_node, retry = self._hand_over_finished(view)
        for node, sets in by_node.items():
            try:
                with anyio.fail_after(self._engine.options.command_timeout_s):
                    await topology.node(node).tags.take_many(
                        [], [(takes, taken) for _slot, takes, taken in sets],
                        keep_ms=TAKEN_KEEP_MS, inline=tagtake.INLINE_MEMBERS)
            except (RedisError, OSError, TimeoutError):
                retry.extend(sets)  # moved or gone: each set on its slot's current owner
        for slot, takes, taken in retry:
            try:
                await self._taker.drop(slot, takes, taken)
            except ClusterPermissionError as exc:  # closing goes on: the set stays registered
                log.warning("finished tag set %r not dropped: %s", taken, exc)

    def _hand_over_finished(self, view: ClusterView
                            ) -> tuple[dict[NodeAddr, list[_Finished]], list[_Finished]]:
        """The finished sets to drop, taken off the list: by their slot's owner, and those whose
        slot has none in ``view``."""
        finished, self._finished = self._finished, []
        by_owner: dict[NodeAddr, list[_Finished]] = {}
        unowned: list[_Finished] = []
        for item in finished:
            owner = view.owner(item[0])
            if owner is None:
                unowned.append(item)
            else:
                by_owner.setdefault(owner, []).append(item)
        return by_owner, unowned

    async def _serve(self, batch: _Batch) -> None:
        """Wait for ``batch`` to be run, running it in this task when it is ready first."""
        while not batch.finished.is_set():
            if not batch.started and self._running is None:
                batch.started = True
                self._running = batch
                if self._forming is batch:
                    self._forming = None
                try:
                    await self._drive(batch)
                    batch.completed = True
                finally:
                    self._running = None
                    batch.finished.set()
                    idle, self._idle = self._idle, anyio.Event()
                    idle.set()
                return
            if batch.started:
                await batch.finished.wait()
            else:
                await self._idle.wait()

    async def _drive(self, batch: _Batch) -> None:
        """Take every tag's set, then unlink every member: one exchange per node for each."""
        entries = [e for call in batch.calls if not call.left for e in call.entries]
        try:
            await self._take(entries)
            await self._unlink([e for e in entries if not e.alone])
        except ClusterPermissionError:
            # Refused: each call meets the refusal itself, alone, and reports it.
            for entry in entries:
                entry.alone = entry.alone or not entry.finished
            return
        for entry in entries:
            if entry.finished:
                self._finished.extend((entry.slot, takes_key(entry.tag), s) for s in entry.sets)

    async def _take(self, entries: list[_Entry]) -> None:
        """Stage 1: the sets finished by earlier batches are dropped, then every set is taken."""
        topology = self._engine.topology
        try:
            view = topology.view or await topology.refresh()
        except ClusterConnectionError:
            for entry in entries:
                entry.alone = True
            return
        by_node: dict[NodeAddr, tuple[list[_Entry], list[tuple[bytes, bytes]]]] = {}
        for entry in entries:
            owner = view.owner(entry.slot)
            if owner is None:
                entry.alone = True
            else:
                by_node.setdefault(owner, ([], []))[0].append(entry)
        # A finished set whose slot has no owner now stays registered: its tag's next take
        # finishes it.
        finished, _unowned = self._hand_over_finished(view)
        for owner, dropping in finished.items():
            by_node.setdefault(owner, ([], []))[1].extend((t, k) for _slot, t, k in dropping)

        # Every node gets its scripts before any reply is awaited: one round trip to the slowest,
        # read in this task (no task per node).
        answered: list[tuple[list[_Entry], list[TagTake | BaseException]]] = []

        async def send(node: NodeAddr) -> TakesInFlight | None:
            node_entries, sets = by_node[node]
            requests = [(set_key(e.tag), takes_key(e.tag), e.taken) for e in node_entries]
            try:
                return await topology.node(node).tags.begin_take_many(
                    requests, sets, keep_ms=TAKEN_KEEP_MS, inline=tagtake.INLINE_MEMBERS)
            except (RedisError, OSError) as exc:
                _alone(node, node_entries, exc)
                return None

        async def read(node: NodeAddr, pending: TakesInFlight) -> None:
            try:
                answered.append((by_node[node][0], await pending.results()))
            except (RedisError, OSError) as exc:
                _alone(node, by_node[node][0], exc)

        timeout_s = self._engine.options.command_timeout_s
        for node in await staged.exchange(list(by_node), send, read, timeout_s):
            # Not taken in time (never sent, or its results not read): its tags go alone.
            _alone(node, by_node[node][0], TimeoutError(f"no reply within {timeout_s:g} s"))
        for node_entries, results in answered:
            for entry, take in zip(node_entries, results, strict=True):
                await self._taken(entry, take)

    async def _taken(self, entry: _Entry, take: TagTake | BaseException) -> None:
        """Record what a take found; a set too big to come back inline is read in steps."""
        if isinstance(take, BaseException):
            # Moved, refused, no script: the lone path follows redirects and reports refusals.
            entry.alone = True
            return
        entry.sets = ([entry.taken] if take.count else []) + list(take.leftovers)
        found: dict[bytes, None] = dict.fromkeys(take.members or ())
        rest = entry.sets if take.members is None else list(take.leftovers)
        try:
            for source in rest:
                found.update(dict.fromkeys(await self._taker.read(entry.slot, source)))
        except (RedisError, OSError, TimeoutError, ClusterConnectionError):
            entry.alone = True  # the taken sets stay registered: the lone take reads them
            return
        entry.members = list(found)

    async def _unlink(self, entries: list[_Entry]) -> None:
        """Stage 2: every member on its owner, in slot batches of one tag each."""
        engine = self._engine
        batches: list[SlotBatch] = []
        owners: dict[int, _Entry] = {}
        for entry in entries:
            for batch in group_by_slot(entry.members, engine.options.unlink_batch):
                batches.append(batch)
                owners[id(batch)] = entry
                entry.pending[batch[0]] += len(batch[1])
        work = RunTally(0)
        # A batch split up mid-migration (TRYAGAIN: one key at a time) comes back as new
        # one-key batches: each is traced to a tag through its key.
        by_key: dict[tuple[int, bytes], list[_Entry]] = {}

        def owner(batch: SlotBatch) -> _Entry | None:
            found = owners.get(id(batch))
            if found is not None or len(batch[1]) != 1:
                return found
            if not by_key:
                for b in batches:
                    for key in b[1]:
                        by_key.setdefault((b[0], key), []).append(owners[id(b)])
            candidates = by_key.get((batch[0], batch[1][0]))
            return candidates.pop(0) if candidates else None

        def confirm(node: NodeAddr, done: Sequence[SlotBatch], n: int) -> None:
            # Without the batch script every reply answers one batch, hence one tag.
            entry = owner(done[0])
            if entry is None:
                return  # not ours to count (never happens): its slot stays unconfirmed
            for slot, keys in done:
                entry.pending[slot] -= len(keys)
            counts = entry.tally.node(node)
            counts.matched += n
            counts.deleted += n
            entry.tally.exact_deleted += n
            entry.removed += n

        try:
            if batches:
                unlinker = Unlinker(engine.topology, engine.policy, engine.limits, work,
                                    engine.options.command_timeout_s, use_scripts=False)
                await unlinker.unlink(batches, confirm)
        except (RedisError, OSError, TimeoutError, ConnectionError) as exc:
            message = f"tag members: {describe(exc)}"
            for entry in entries:
                if any(entry.pending.values()):
                    entry.tally.messages.append(message)
        finally:
            self._unconfirmed(entries)
        # The batch's own errors count once, for the first tag served.
        if entries:
            entries[0].tally.errors.extend(work.errors)

    @staticmethod
    def _unconfirmed(entries: list[_Entry]) -> None:
        for entry in entries:
            entry.settled = True
            left = SlotSet(slot for slot, n in entry.pending.items() if n > 0)
            if left:
                entry.tally.uncovered.update(left)
            else:
                entry.finished = True

    async def _finish_alone(self, call: _Call, outcome: TagOutcome, patterns: int) -> None:
        """The tags the batch could not serve, run by their own caller."""
        alone = [e for e in call.entries if e.alone]
        if not alone:
            return
        for entry in alone:
            # What the batch confirmed stays counted; its coverage is the lone run's to say.
            entry.tally.uncovered = SlotSet()
            entry.tally.messages.clear()
            entry.settled = False
        done = await self._taker.run([e.tag for e in alone], patterns, dry_run=False)
        for entry, removed, size in zip(alone, done.removed, done.sizes, strict=True):
            outcome.removed[entry.index] += removed
            outcome.sizes[entry.index] += size
            entry.settled = True
        outcome.tally.absorb(done.tally)
        outcome.members.extend(done.members)


def _alone(node: NodeAddr, entries: list[_Entry], exc: BaseException) -> None:
    """A node's takes failed as a whole: its tags go alone (retried and redirected there)."""
    log.info("tag batch: takes on %s failed (%s); its tags go alone", node.name, describe(exc))
    for entry in entries:
        entry.alone = True
