"""Exact keys: grouped by slot and unlinked on their owners, no scan; each key's slot counts as
done only once a node's reply confirmed it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from redis.exceptions import RedisError

from clusterinval._core.batching import group_by_slot
from clusterinval._core.slots import SlotSet, key_slot
from clusterinval._core.values import NodeAddr, SlotBatch
from clusterinval._engine.context import RunContext
from clusterinval._engine.retry import describe
from clusterinval.errors import ClusterPermissionError

__all__ = ["ExactKeys"]

# Exact keys are grouped by slot this many at a time. Large chunks group best (keys of a slot go
# in one UNLINK); the batches only reference the caller's keys, so memory grows little.
_EXACT_CHUNK = 200_000


class ExactKeys:
    """Deletes (or, in a dry run, counts) the plan's exact keys."""

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx
        # Keys sent and not yet confirmed by a reply, per slot; keys not yet sent are those from
        # ``_next`` on (and literal-pattern keys from ``_next_literal`` on).
        self._pending: Counter[int] = Counter()
        self._next = 0
        self._next_literal = 0

    def unconfirmed(self) -> SlotSet:
        """Slots of keys no reply confirmed (sent and unanswered, or never sent)."""
        plan = self._ctx.plan
        if self._next == len(plan.keys) and self._next_literal == len(plan.literal_origins) and (
                not any(self._pending.values())):
            return SlotSet()  # everything sent, every reply in: the common ending
        left = SlotSet(slot for slot, n in self._pending.items() if n > 0)
        for key in (*plan.keys[self._next:], *list(plan.literal_origins)[self._next_literal:]):
            left.add(key_slot(key))
        return left

    async def run(self) -> None:
        """Send every exact key to its owner."""
        ctx = self._ctx
        keys = ctx.plan.keys
        for start in range(0, len(keys), _EXACT_CHUNK):
            chunk = keys[start : start + _EXACT_CHUNK]
            batches = group_by_slot(chunk, ctx.options.unlink_batch)
            self._claim(batches)
            self._next = start + len(chunk)
            await self._send(batches, None)
        # A pattern without metacharacters names one key; it is sent on its own so that its
        # per-pattern figure is exact.
        for key, origin in ctx.plan.literal_origins.items():
            batches = group_by_slot([key], 1)
            self._claim(batches)
            self._next_literal += 1
            await self._send(batches, origin)

    def _claim(self, batches: list[SlotBatch]) -> None:
        pending = self._pending
        get = pending.get  # a plain lookup: Counter's own missing-key path is a Python call
        for slot, keys in batches:
            pending[slot] = get(slot, 0) + len(keys)

    async def _send(self, batches: list[SlotBatch], origin: int | None) -> None:
        ctx = self._ctx
        tally, pending = ctx.tally, self._pending

        def confirm(node: NodeAddr, done: Sequence[SlotBatch], n: int) -> None:
            sent = 0
            for slot, keys in done:
                pending[slot] -= len(keys)
                sent += len(keys)
            counts = tally.node(node)
            counts.matched += n
            if origin is not None:
                tally.per_pattern[origin] += n
            if ctx.dry_run:
                if n and n == sent:
                    ctx.sample([k for _slot, keys in done for k in keys])
            else:
                counts.deleted += n
                tally.exact_deleted += n

        try:
            await ctx.unlinker.unlink(batches, confirm)
        except ClusterPermissionError:
            raise
        except (RedisError, OSError, TimeoutError, ConnectionError) as exc:
            # The keys no reply confirmed stay pending: their slots are reported uncovered.
            tally.messages.append(f"exact keys: {describe(exc)}")
