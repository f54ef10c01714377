"""The hot path of the most common call: a few exact keys, one write to each owner.

A call of exact keys only, small enough for one staged write per owner (``staged.stageable``),
is sent straight from the view: keys grouped by slot, then one staged exchange
(``staged.exchange``: every owner written its ``UNLINK``s before any reply is read, the replies
read in the calling task, under one timer). Nothing else is on the way: no topology read, no
per-run machinery.

It confirms only what it can prove: a batch whose owner (by the view) answered with a count was
deleted there. Everything else (a redirect, an error reply, a lost connection, no reply in time)
is left unconfirmed and handed to the run's general path, which deals with it exactly as it would
have from the start: redirects followed, refusals raised, retries within the deadline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from redis.exceptions import RedisError

from clusterinval._core.slots import SlotSet, key_slot
from clusterinval._core.tally import NodeTally, RunTally
from clusterinval._core.values import NodeAddr, SlotBatch
from clusterinval._engine import staged
from clusterinval._engine.ratelimit import Limits
from clusterinval._engine.retry import classify, is_transient
from clusterinval._engine.topology import Topology
from clusterinval._io.protocol import PendingReplies, StagedKeyCommands

__all__ = ["SMALL_CALL_KEYS", "SmallCall"]

# Exact keys a call may hold to take the hot path (larger calls gain nothing from skipping the
# run's machinery, whose cost is per call, not per key).
SMALL_CALL_KEYS = 64


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
        if not staged.stageable(topology, limits, by_node):
            return None
        return cls([_Owner(node, cast(StagedKeyCommands, topology.node(node)), batches, tally)
                    for node, batches in by_node.items()])

    async def send(self, timeout_s: float) -> None:
        """Send every owner its share, then read the replies, within ``timeout_s``.

        Never raises for a node's failure (its batches stay unconfirmed); a caller's
        cancellation propagates, after the replies already on the way are read briefly.
        """
        await staged.exchange(self._owners, _Owner.send, _Owner.read, timeout_s)

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
    """One node's share: its batches, and which of them a reply confirmed."""

    __slots__ = ("batches", "confirmed", "counts", "done", "io", "node", "tally")

    def __init__(self, node: NodeAddr, io: StagedKeyCommands, batches: list[SlotBatch],
                 tally: RunTally) -> None:
        self.node = node
        self.io = io
        self.batches = batches
        self.tally = tally
        self.counts: NodeTally = tally.node(node)
        self.done = [False] * len(batches)
        self.confirmed = 0  # how many are done

    async def send(self) -> PendingReplies | None:
        """Write the share's UNLINKs; None when that failed."""
        try:
            pending = await self.io.begin_key_commands(
                "UNLINK", [keys for _slot, keys in self.batches], on_reply=self.on_reply)
        except (RedisError, OSError, TimeoutError) as exc:
            self.failed(exc)
            return None
        self.counts.unlink_calls += len(self.batches)
        return pending

    async def read(self, pending: PendingReplies) -> None:
        """Read the replies (each counted by ``on_reply`` as it comes)."""
        try:
            await pending.replies()
        except (RedisError, OSError, TimeoutError) as exc:
            self.failed(exc)

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
