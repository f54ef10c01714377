"""Delete slot batches on whichever node owns them, following redirects, confirming what went.

Two ways to send a node its batches, same result:

* a pipeline of multi-key ``UNLINK`` commands, one per slot batch (works on every server);
* the server-side batch step, one call per few hundred keys, running those same per-slot
  ``UNLINK`` commands (a round trip and a parse for hundreds of slots instead of one each). A
  batch the step could not delete (its slot moved) falls back to the pipeline, which follows MOVED
  and ASK like a cluster client does.

A small call (a few slot batches per node, the common invalidation of a handful of keys) is sent
to every node first and the replies read afterwards, all in the calling task: one round trip to
each owner at once, without a task per node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

import anyio
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    MovedError,
    RedisError,
    TryAgainError,
)

from clusterinval._core.tally import RunTally
from clusterinval._core.values import NodeAddr, SlotBatch
from clusterinval._engine import staged
from clusterinval._engine.ratelimit import Limits
from clusterinval._engine.retry import RetryPolicy, classify, is_transient, leading_error, refusal
from clusterinval._engine.topology import Topology
from clusterinval._io.lua import split_calls
from clusterinval._io.protocol import (
    KeyCommand,
    OnReply,
    PendingReplies,
    ScriptName,
    StagedKeyCommands,
)

__all__ = ["Confirm", "Unlinker"]

log = logging.getLogger("clusterinval.engine")

# Told which slot batches a node's reply confirmed, the node, and how many keys the reply counted.
Confirm = Callable[[NodeAddr, Sequence[SlotBatch], int], None]

# Keys in pipelined UNLINKs a node has queued from us at once (a sliding window): enough to hide
# the round trip, few enough that the node idles between bursts and is not preempted mid-command.
# The same figure bounds a staged write, which puts a node's whole share in flight at once.
_KEYS_IN_FLIGHT = staged.STAGED_KEYS
# Batch-step calls a node has queued from us at once. A node fed a long pipeline runs flat out
# and, on a busy host, is preempted in the middle of a call (SLOWLOG then shows 10+ ms for a
# 0.3 ms call); with a few calls in flight it idles briefly between them, is scheduled promptly,
# and other clients' commands interleave with ours. A few in flight still hide the round trip.
_CALLS_IN_FLIGHT = 2
Outcome = tuple[list[SlotBatch], BaseException | None]


class Unlinker:
    """Routes slot batches to their owners and deletes them (or counts them, for a dry run)."""

    def __init__(
        self,
        topology: Topology,
        policy: RetryPolicy,
        limits: Limits,
        tally: RunTally,
        command_timeout_s: float,
        *,
        command: KeyCommand = "UNLINK",
        use_scripts: bool = True,
    ) -> None:
        self._topology = topology
        self._policy = policy
        self._limits = limits
        self._tally = tally
        self._timeout_s = command_timeout_s
        # UNLINK deletes; EXISTS counts for a dry run (same routing, no effect).
        self._command: KeyCommand = command
        self._use_scripts = use_scripts and command == "UNLINK"
        # Slots a MOVED reply told us about, used until the next topology refresh.
        self._moved: dict[int, NodeAddr] = {}
        self._moved_generation = -1

    async def script_ready(self, node: NodeAddr, name: ScriptName) -> bool:
        """True when server-side steps may run on ``node`` (never in a dry run)."""
        return self._use_scripts and await self._topology.node(node).script_ready(name)

    def _route(self, batches: list[SlotBatch]) -> tuple[dict[NodeAddr, list[SlotBatch]],
                                                         list[SlotBatch]]:
        """Batches by the node serving their slot (MOVED answers first), and those with none."""
        view = self._topology.view
        if self._moved_generation != self._topology.generation:
            self._moved.clear()
            self._moved_generation = self._topology.generation
        moved = self._moved
        owners = view.owners if view is not None else None
        by_node: dict[NodeAddr, list[SlotBatch]] = {}
        orphans: list[SlotBatch] = []
        for b in batches:
            slot = b[0]
            owner = moved.get(slot) if moved else None
            if owner is None and owners is not None:
                owner = owners[slot]
            if owner is None:
                orphans.append(b)
            else:
                node_batches = by_node.get(owner)
                if node_batches is None:
                    by_node[owner] = [b]
                else:
                    node_batches.append(b)
        return by_node, orphans

    async def unlink(self, batches: Sequence[SlotBatch], confirm: Confirm) -> None:
        """Delete every batch on its slot's owner; raises when some could not be handled.

        ``confirm(node, batches, n)`` is called as soon as a node's reply confirms ``batches``
        (``n`` keys removed, or found by EXISTS), so what was done is known however the call
        ends.
        """
        pending = list(batches)
        attempt = 0
        while pending:
            by_node, orphans = self._route(pending)
            retry: list[SlotBatch] = list(orphans)
            last_error: BaseException | None = None
            if staged.stageable(self._topology, self._limits, by_node):
                outcomes = await self._send_staged(by_node, confirm)
            else:
                outcomes = await self._send_each(by_node, confirm)
            for again, err in outcomes:
                retry.extend(again)
                last_error = err or last_error
            pending = retry
            if not pending:
                break
            attempt += 1
            if attempt > self._policy.attempts:
                if last_error is not None:
                    raise last_error
                raise TimeoutError(f"{len(pending)} slot batches have no reachable owner")
            await anyio.sleep(self._policy.delay(attempt))
            if orphans or last_error is not None:
                await self._refresh_quietly()

    async def _send_each(self, by_node: dict[NodeAddr, list[SlotBatch]], confirm: Confirm
                         ) -> list[Outcome]:
        """One task per node (large calls: each node's window moves as its replies come)."""
        outcomes: list[Outcome] = []

        async def send(node: NodeAddr, node_batches: list[SlotBatch]) -> None:
            outcomes.append(await self._send(node, node_batches, confirm))

        if len(by_node) == 1:
            [(node, node_batches)] = by_node.items()
            await send(node, node_batches)
            return outcomes
        try:
            async with anyio.create_task_group() as tg:
                for node, node_batches in by_node.items():
                    tg.start_soon(send, node, node_batches)
        except BaseExceptionGroup as group:
            # A refusal ends the call; its callers expect the error itself, not a group.
            raise leading_error(group) from None
        return outcomes

    async def _send_staged(self, by_node: dict[NodeAddr, list[SlotBatch]], confirm: Confirm
                           ) -> list[Outcome]:
        """Send every node its share, then read each node's replies, in this task.

        All the nodes have their commands before any reply is awaited, so the call takes one
        round trip to the slowest owner, as with a task per node. Each share is judged as
        ``_send`` judges it: what a reply confirmed is done, anything else goes back to be
        retried; one command timeout covers the whole exchange.
        """
        shares = [_Share(node, node_batches, confirm) for node, node_batches in by_node.items()]
        outcomes: list[Outcome] = []
        topology, command = self._topology, self._command

        async def send(share: _Share) -> PendingReplies | None:
            io = cast(StagedKeyCommands, topology.node(share.node))
            try:
                pending = await io.begin_key_commands(
                    command, [keys for _s, keys in share.batches], on_reply=share.on_reply)
            except (RedisError, OSError, TimeoutError) as exc:
                outcomes.append(self._failed(share.node, share.batches, share.done, exc))
                return None
            self._tally.node(share.node).unlink_calls += len(share.batches)
            return pending

        async def read(share: _Share, pending: PendingReplies) -> None:
            try:
                replies = await pending.replies()
                if len(share.done) == len(share.batches):
                    outcome: Outcome = ([], None)  # every batch confirmed
                else:
                    outcome = await self._pipeline_outcome(
                        share.node, share.batches, replies, share.confirmed)
            except (RedisError, OSError, TimeoutError) as exc:
                outcome = self._failed(share.node, share.batches, share.done, exc)
            outcomes.append(outcome)

        # Not answered within the command timeout (what was in flight was read briefly, so it
        # is counted): retried like any failed send.
        for share in await staged.exchange(shares, send, read, self._timeout_s):
            late = TimeoutError(f"no reply from {share.node.name} within {self._timeout_s:g} s")
            outcomes.append(self._failed(share.node, share.batches, share.done, late))
        return outcomes

    async def _refresh_quietly(self) -> None:
        try:
            await self._topology.refresh(if_generation=self._topology.generation)
        except (RedisError, OSError, TimeoutError) as exc:
            # ClusterConnectionError is an OSError too: keep retrying within the run's deadline.
            log.debug("topology refresh failed: %s", exc)

    async def _send(self, node: NodeAddr, batches: list[SlotBatch], confirm: Confirm
                    ) -> Outcome:
        """Send ``batches`` to ``node``: (batches to retry elsewhere or later, last error)."""
        await self._limits.acquire(node, sum(len(k) for _s, k in batches))
        done: set[int] = set()  # id() of each batch a reply confirmed

        def confirmed(at: NodeAddr, group: Sequence[SlotBatch], n: int) -> None:
            done.update(map(id, group))
            confirm(at, group, n)

        try:
            with anyio.fail_after(self._timeout_s):
                if len(batches) > 1 and await self.script_ready(node, "batch"):
                    return await self._send_script(node, batches, confirmed)
                return await self._send_pipeline(node, batches, confirmed)
        except (RedisError, OSError, TimeoutError) as exc:
            return self._failed(node, batches, done, exc)

    def _failed(self, node: NodeAddr, batches: list[SlotBatch], done: set[int],
                exc: BaseException) -> Outcome:
        """What a failed send leaves: the batches no reply confirmed, to retry; refusals raise."""
        self._tally.error(node, classify(exc))
        if not is_transient(exc):
            self._raise_permanent(node, exc)
        # Only what no reply confirmed is sent again.
        return [b for b in batches if id(b) not in done], exc

    async def _send_script(
        self, node: NodeAddr, batches: list[SlotBatch], confirm: Confirm
    ) -> tuple[list[SlotBatch], BaseException | None]:
        calls = split_calls(batches)
        fallback: list[SlotBatch] = []

        def on_reply(index: int, reply: Any) -> None:
            if isinstance(reply, BaseException):
                return  # decided below, once every reply is in
            call = calls[index]
            removed, failed = reply
            if failed:
                skip = set(failed)
                fallback.extend(b for i, b in enumerate(call) if i in skip)
                call = [b for i, b in enumerate(call) if i not in skip]
            confirm(node, call, removed)

        replies = await self._topology.node(node).batch_calls(
            calls, window=_CALLS_IN_FLIGHT, on_reply=on_reply)
        self._tally.node(node).unlink_calls += len(calls)
        for call, reply in zip(calls, replies, strict=True):
            if isinstance(reply, BaseException):
                refused = refusal(node, reply, "the batch step")
                if refused is not None:
                    raise refused
                fallback.extend(call)  # the pipeline path decides what the error means
        if not fallback:
            return [], None
        return await self._send_pipeline(node, fallback, confirm)

    async def _send_pipeline(self, node: NodeAddr, batches: list[SlotBatch], confirm: Confirm
                             ) -> Outcome:
        # As with the batch step: about this many keys queued on the node at once.
        per_command = max(1, sum(len(k) for _s, k in batches) // len(batches))
        replies = await self._topology.node(node).key_commands(
            self._command, [keys for _s, keys in batches],
            window=max(4, _KEYS_IN_FLIGHT // per_command),
            on_reply=_confirming(node, batches, confirm))
        self._tally.node(node).unlink_calls += len(batches)
        return await self._pipeline_outcome(node, batches, replies, confirm)

    async def _pipeline_outcome(self, node: NodeAddr, batches: list[SlotBatch],
                                replies: list[Any], confirm: Confirm) -> Outcome:
        """Follow the pipeline's error replies: redirects, TRYAGAIN, transient errors."""
        retry: list[SlotBatch] = []
        last: BaseException | None = None
        for batch, reply in zip(batches, replies, strict=True):
            if not isinstance(reply, BaseException):
                continue
            last = reply
            self._tally.error(node, classify(reply))
            if isinstance(reply, MovedError):
                self._moved[batch[0]] = NodeAddr(reply.host, int(reply.port))
                retry.append(batch)
            elif isinstance(reply, AskError):
                target = NodeAddr(reply.host, int(reply.port))
                confirm(target, (batch,), await self._send_asking(target, batch))
            elif isinstance(reply, TryAgainError) and len(batch[1]) > 1:
                # Mid-migration, a multi-key command whose keys are split between the two nodes:
                # one key at a time always has a single answer.
                retry.extend((batch[0], [k]) for k in batch[1])
            elif isinstance(reply, ClusterCrossSlotError):
                raise AssertionError(f"bug: cross-slot {self._command}, slot {batch[0]}: {reply}")
            elif is_transient(reply):
                retry.append(batch)
            else:
                self._raise_permanent(node, reply)
        return retry, last

    async def _send_asking(self, target: NodeAddr, batch: SlotBatch) -> int:
        """The batch on the node importing its slot; one key at a time on TRYAGAIN."""
        io = self._topology.node(target)
        self._tally.node(target).unlink_calls += 1
        reply = await io.asking(self._command, batch[1])
        if isinstance(reply, TryAgainError) and len(batch[1]) > 1:
            total = 0
            for k in batch[1]:
                one = await io.asking(self._command, [k])
                if isinstance(one, BaseException):
                    raise one
                total += int(one)
            return total
        if isinstance(reply, BaseException):
            raise reply
        return int(reply)

    def _raise_permanent(self, node: NodeAddr, exc: BaseException) -> None:
        refused = refusal(node, exc, self._command)
        if refused is not None:
            raise refused from None
        raise exc


def _confirming(node: NodeAddr, batches: list[SlotBatch], confirm: Confirm) -> OnReply:
    """An ``on_reply`` that confirms each batch whose UNLINK (or EXISTS) was answered."""

    def on_reply(index: int, reply: Any) -> None:
        if not isinstance(reply, BaseException):
            confirm(node, (batches[index],), int(reply))

    return on_reply


class _Share:
    """One node's part of a staged send: its batches, and what its replies confirmed."""

    __slots__ = ("batches", "confirm", "done", "node")

    def __init__(self, node: NodeAddr, batches: list[SlotBatch], confirm: Confirm) -> None:
        self.node = node
        self.batches = batches
        self.confirm = confirm
        self.done: set[int] = set()  # id() of each batch a reply confirmed

    def on_reply(self, index: int, reply: Any) -> None:
        """Confirm the batch whose UNLINK (or EXISTS) was answered."""
        if not isinstance(reply, BaseException):
            batch = self.batches[index]
            self.done.add(id(batch))
            self.confirm(self.node, (batch,), int(reply))

    def confirmed(self, at: NodeAddr, group: Sequence[SlotBatch], n: int) -> None:
        """Confirm ``group`` (answered by ``at``, after a redirect)."""
        self.done.update(map(id, group))
        self.confirm(at, group, n)
