"""The hot path of the most common call: a few exact keys, one write to each owner.

A call of exact keys only, small enough for one staged write per owner (see ``stageable``), is
sent straight from the view: keys grouped by slot, each owner sent its ``UNLINK`` commands before
any reply is read, the replies read in the calling task, under one timer. Nothing else is on the
way: no topology read, no per-run machinery.

It confirms only what it can prove: a batch whose owner (by the view) answered with a count was
deleted there. Everything else (a redirect, an error reply, a lost connection, no reply in time)
is left unconfirmed and handed to the run's general path, which deals with it exactly as it would
have from the start: redirects followed, refusals raised, retries within the deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from redis.exceptions import RedisError

from clusterinval._core.slots import SlotSet, key_slot
from clusterinval._core.tally import NodeTally, RunTally
from clusterinval._core.values import NodeAddr, SlotBatch
from clusterinval._engine.ratelimit import Limits
from clusterinval._engine.retry import classify, is_transient
from clusterinval._engine.topology import Topology
from clusterinval._io.protocol import PendingReplies, StagedKeyCommands

__all__ = ["SMALL_CALL_KEYS", "SmallCall", "stageable"]

# Exact keys a call may hold to take the hot path (larger calls gain nothing from skipping the
# run's machinery, whose cost is per call, not per key).
SMALL_CALL_KEYS = 64
# A node's share goes in one staged write when it is at most this many slot batches: one
# pipelined UNLINK per slot is then as few round trips as the server-side batch step, and its
# replies need no script.
STAGED_BATCHES = 8
# Keys one staged write may carry (as many as a node is given in flight on the windowed paths).
STAGED_KEYS = 1000


def stageable(topology: Topology, limits: Limits, by_node: dict[NodeAddr, list[SlotBatch]]
              ) -> bool:
    """Whether every node's share is small enough to go in one write, staged, now."""
    if not by_node or limits.paced:
        return False  # under a budget each share is paid for before it goes: per node
    if not topology.staged(next(iter(by_node))):
        return False
    for node, node_batches in by_node.items():
        if len(node_batches) > STAGED_BATCHES:
            return False
        # Sends go one node after another: each must find a connection ready, so that a node
        # slow to connect (or a full pool) cannot hold up the others' sends.
        if not cast(StagedKeyCommands, topology.node(node)).can_begin():
            return False
        keys = 0
        for batch in node_batches:
            keys += len(batch[1])
        if keys > STAGED_KEYS:
            return False
    return True


class SmallCall:
    """One small call of exact keys on the hot path; ``route`` says whether it fits."""

    __slots__ = ("_owners",)

    def __init__(self, owners: list[_Owner]) -> None:
        self._owners = owners

    @classmethod
    def route(cls, topology: Topology, limits: Limits, tally: RunTally, keys: Sequence[bytes],
              unlink_batch: int) -> SmallCall | None:
        """The call, routed by the current view; None when it does not fit the hot path."""
        view = topology.view
        if view is None or not keys or len(keys) > SMALL_CALL_KEYS:
            return None
        if len(keys) > unlink_batch:
            return None  # a slot's keys may need several commands: the general path splits
        owners = view.owners
        # Keys by owner, then by slot: a few keys, grouped by hand (no batching machinery).
        slots_by_node: dict[NodeAddr, dict[int, list[bytes]]] = {}
        for key in keys:
            slot = key_slot(key)
            owner = owners[slot]
            if owner is None:
                return None  # a slot nobody serves: the general path waits for an owner
            node_slots = slots_by_node.get(owner)
            if node_slots is None:
                slots_by_node[owner] = {slot: [key]}
            elif slot in node_slots:
                node_slots[slot].append(key)
            else:
                node_slots[slot] = [key]
        by_node = {node: list(node_slots.items()) for node, node_slots in slots_by_node.items()}
        if not stageable(topology, limits, by_node):
            return None
        return cls([_Owner(node, cast(StagedKeyCommands, topology.node(node)), batches, tally)
                    for node, batches in by_node.items()])

    async def send(self, timeout_s: float) -> None:
        """Send every owner its share, then read the replies, within ``timeout_s``.

        Never raises for a node's failure (its batches stay unconfirmed); a caller's
        cancellation propagates, after the replies already on the way are read briefly.
        """
        owners = self._owners
        try:
            # asyncio's own timer, not an anyio cancel scope: on this path the scope's
            # bookkeeping costs as much as the client's whole share of a round trip. Both follow
            # the same cancellation counting, so a caller's cancel scope outside still wins.
            async with asyncio.timeout(timeout_s):
                for owner in owners:
                    try:
                        owner.pending = await owner.io.begin_key_commands(
                            "UNLINK", [keys for _slot, keys in owner.batches],
                            on_reply=owner.on_reply)
                    except (RedisError, OSError, TimeoutError) as exc:
                        owner.failed(exc)
                    else:
                        owner.counts.unlink_calls += len(owner.batches)
                for owner in owners:
                    pending = owner.pending
                    if pending is None:
                        continue
                    try:
                        await pending.replies()
                    except (RedisError, OSError, TimeoutError) as exc:
                        owner.failed(exc)
                    owner.pending = None
        except TimeoutError:
            pass  # the timer fired (a node's own failure is caught above): left unconfirmed
        finally:
            # Sent and not read (the timer fired, the caller was cancelled): what is in flight
            # is read briefly, so that it is counted.
            for owner in owners:
                if owner.pending is not None:
                    await owner.pending.abandon()
                    owner.pending = None

    def unconfirmed(self) -> list[SlotBatch]:
        """The slot batches no reply confirmed (for the general path)."""
        if all(owner.confirmed == len(owner.batches) for owner in self._owners):
            return []  # the common ending
        return [batch for owner in self._owners
                for batch, done in zip(owner.batches, owner.done, strict=True) if not done]

    def unconfirmed_slots(self) -> SlotSet:
        """The slots of the unconfirmed batches."""
        return SlotSet(slot for slot, _keys in self.unconfirmed())


class _Owner:
    """One node's share: its batches, which a reply confirmed, and its exchange."""

    __slots__ = ("batches", "confirmed", "counts", "done", "io", "node", "pending", "tally")

    def __init__(self, node: NodeAddr, io: StagedKeyCommands, batches: list[SlotBatch],
                 tally: RunTally) -> None:
        self.node = node
        self.io = io
        self.batches = batches
        self.tally = tally
        self.counts: NodeTally = tally.node(node)
        self.done = [False] * len(batches)
        self.confirmed = 0  # how many are done
        self.pending: PendingReplies | None = None

    def on_reply(self, index: int, reply: Any) -> None:
        """A count from the slot's owner: that batch is gone (an error reply is left over)."""
        if isinstance(reply, BaseException):
            return
        n = int(reply)
        self.done[index] = True
        self.confirmed += 1
        counts = self.counts
        counts.matched += n
        counts.deleted += n
        self.tally.exact_deleted += n

    def failed(self, exc: BaseException) -> None:
        """The exchange failed: a transient error is noted here (a retry may not meet it
        again); one that is not is left for the general path to meet and raise."""
        if is_transient(exc):
            self.tally.error(self.node, classify(exc))
