"""Delete slot batches on whichever node owns them, following redirects, counting what went.

Two ways to send a node its batches, same result:

* a pipeline of multi-key ``UNLINK`` commands, one per slot batch (works on every server);
* one short server-side script per call that runs those same per-slot ``UNLINK`` commands
  (``scripts.py``): a round trip and a parse for hundreds of slots instead of one each. A batch
  the script could not delete (its slot moved) falls back to the pipeline, which follows MOVED
  and ASK like a cluster client does.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    MovedError,
    RedisError,
    TryAgainError,
)

from clusterinval.batching import SlotBatch
from clusterinval.errors import ClusterPermissionError
from clusterinval.figures import NodeCounters
from clusterinval.options import InvalidatorOptions
from clusterinval.ratelimit import KeyRateLimiter
from clusterinval.retry import Backoff, ErrorKind, classify, is_transient
from clusterinval.scripts import ServerScripts, SlotWalkStep, batch_offsets, split_calls
from clusterinval.topology import NodeAddr, Topology
from clusterinval.wire import pack, send_many

__all__ = ["Confirm", "Unlinker"]

# Told which slot batches a node's reply confirmed, and how many keys that reply counted.
Confirm = Callable[[Sequence[SlotBatch], int], None]

log = logging.getLogger("clusterinval.engine")

# Keys in pipelined UNLINKs a node has queued from us at once (a sliding window): enough to hide
# the round trip, few enough that the node idles between bursts and is not preempted mid-command.
_KEYS_IN_FLIGHT = 1000

class Unlinker:
    """Routes slot batches to their owners and deletes them."""

    def __init__(
        self,
        topology: Topology,
        options: InvalidatorOptions,
        counters: dict[NodeAddr, NodeCounters],
        limiter: KeyRateLimiter,
        node_limiter: Callable[[NodeAddr], KeyRateLimiter],
        on_error: list[tuple[str, ErrorKind]],
        *,
        command: str = "UNLINK",
        scripts: ServerScripts | None = None,
    ) -> None:
        # command is UNLINK to delete, or EXISTS to count for a dry run (same routing, no effect).
        self._command = command
        self._topology = topology
        self._options = options
        self._counters = counters
        self._limiter = limiter
        self._node_limiter = node_limiter
        self._on_error = on_error
        self._backoff = Backoff(options.backoff_base_s, options.backoff_cap_s)
        # Slots a MOVED reply told us about, used until the next topology refresh.
        self._moved: dict[int, NodeAddr] = {}
        self._moved_generation = -1
        # Shared across runs of one engine: which nodes took which script.
        self._scripts = scripts if scripts is not None else ServerScripts(topology, options)

    def counters(self, node: NodeAddr) -> NodeCounters:
        """The tallies for ``node`` (created on first use)."""
        c = self._counters.get(node)
        if c is None:
            c = self._counters[node] = NodeCounters()
        return c

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

        ``confirm(batches, n)`` is called as soon as a node's reply confirms ``batches`` (``n``
        keys removed, or found by EXISTS), so what was done is known however the call ends.
        """
        pending = list(batches)
        attempt = 0
        while pending:
            by_node, orphans = self._route(pending)
            retry: list[SlotBatch] = list(orphans)
            last_error: BaseException | None = None
            outcomes: list[tuple[list[SlotBatch], BaseException | None]] = []

            async def send(
                node: NodeAddr, node_batches: list[SlotBatch], sink: list[Any] = outcomes
            ) -> None:
                sink.append(await self._send(node, node_batches, confirm))

            async with anyio.create_task_group() as tg:
                for node, node_batches in by_node.items():
                    tg.start_soon(send, node, node_batches)
            for again, err in outcomes:
                retry.extend(again)
                last_error = err or last_error
            pending = retry
            if not pending:
                break
            attempt += 1
            if attempt > self._options.retries:
                if last_error is not None:
                    raise last_error
                raise TimeoutError(f"{len(pending)} slot batches have no reachable owner")
            await anyio.sleep(self._backoff.delay(attempt))
            if orphans or last_error is not None:
                await self._refresh_quietly()

    async def _refresh_quietly(self) -> None:
        try:
            await self._topology.refresh(if_generation=self._topology.generation)
        except (RedisError, OSError, TimeoutError) as exc:
            # ClusterConnectionError is an OSError too: keep retrying within the run's deadline.
            log.debug("topology refresh failed: %s", exc)

    async def _send(
        self, node: NodeAddr, batches: list[SlotBatch], confirm: Confirm
    ) -> tuple[list[SlotBatch], BaseException | None]:
        """Send ``batches`` to ``node``: (batches to retry elsewhere or later, last error)."""
        n_keys = sum(len(k) for _s, k in batches)
        await self._limiter.acquire(n_keys)
        await self._node_limiter(node).acquire(n_keys)
        done: set[int] = set()  # id() of each batch a reply confirmed

        def confirmed(group: Sequence[SlotBatch], n: int) -> None:
            done.update(map(id, group))
            confirm(group, n)

        try:
            with anyio.fail_after(self._options.command_timeout_s):
                if len(batches) > 1 and await self.uses_script(node):
                    return await self._send_script(node, batches, confirmed)
                return await self._send_pipeline(node, batches, confirmed)
        except (RedisError, OSError, TimeoutError) as exc:
            self._note(node, exc)
            if not is_transient(exc):
                self._raise_permanent(node, exc)
            # Only what no reply confirmed is sent again.
            return [b for b in batches if id(b) not in done], exc

    async def uses_script(self, node: NodeAddr) -> bool:
        """True when ``node`` takes the server-side batch script (loading it on first ask)."""
        if self._command != "UNLINK":
            return False
        return await self._scripts.batch_ready(node)

    async def scan_unlink_ready(self, node: NodeAddr) -> bool:
        """True when ``node`` can scan and delete in one server-side step."""
        if self._command != "UNLINK":
            return False
        return await self._scripts.scan_step_ready(node)

    async def slot_walk_ready(self, node: NodeAddr) -> bool:
        """True when ``node`` can walk its slots server-side, deleting by prefix."""
        if self._command != "UNLINK":
            return False
        return await self._scripts.slot_walk_ready(node)

    async def slot_walk_ranges(
        self, node: NodeAddr, prefixes: tuple[bytes, ...], ranges: deque[tuple[int, int]],
        budget: int, cap: int, on_step: Callable[[int, int, SlotWalkStep], None],
        max_calls: int, *, empty_key: bool = False,
    ) -> None:
        """Slot-walk ranges from ``ranges`` on ``node`` (see ``scripts.py``), counted there."""
        counters = self.counters(node)

        def counted(lo: int, hi: int, step: SlotWalkStep) -> None:
            counters.unlink_calls += 1
            counters.scan_calls += 1
            counters.deleted += step.deleted
            on_step(lo, hi, step)

        await self._scripts.slot_walk_ranges(node, prefixes, ranges, budget, cap, counted,
                                             max_calls, empty_key=empty_key)

    async def scan_unlink(
        self, node: NodeAddr, cursor: int, match: bytes, count: int
    ) -> tuple[int, int, int, list[bytes]]:
        """One server-side SCAN step that deletes its matches: (cursor, matched, deleted, left)."""
        step = await self._scripts.scan_step(node, cursor, match, count)
        counters = self.counters(node)
        counters.unlink_calls += 1
        counters.scan_calls += 1
        counters.deleted += step.deleted
        return step.cursor, step.matched, step.deleted, step.left

    async def _send_script(
        self, node: NodeAddr, batches: list[SlotBatch], confirm: Confirm
    ) -> tuple[list[SlotBatch], BaseException | None]:
        calls = split_calls(batches)
        counters = self.counters(node)
        fallback: list[SlotBatch] = []

        def on_reply(index: int, reply: Any) -> None:
            if isinstance(reply, BaseException):
                return  # decided below, once every reply is in
            call = calls[index]
            removed, failed = int(reply[0]), reply[1] or []
            if failed:
                offsets = batch_offsets(call)
                skip = {id(offsets[int(i)]) for i in failed}
                fallback.extend(b for b in call if id(b) in skip)
                call = [b for b in call if id(b) not in skip]
            counters.deleted += removed
            confirm(call, removed)

        replies = await self._scripts.run_batches(node, calls, on_reply)
        counters.unlink_calls += len(calls)
        for call, reply in zip(calls, replies, strict=True):
            if isinstance(reply, BaseException):
                if classify(reply) == "permission":
                    self._raise_permanent(node, reply)
                fallback.extend(call)  # the pipeline path decides what the error means
        if not fallback:
            return [], None
        return await self._send_pipeline(node, fallback, confirm)

    async def _send_pipeline(
        self, node: NodeAddr, batches: list[SlotBatch], confirm: Confirm
    ) -> tuple[list[SlotBatch], BaseException | None]:
        client = self._topology.client(node)
        counters = self.counters(node)

        def on_reply(index: int, reply: Any) -> None:
            if not isinstance(reply, BaseException):
                n = int(reply)
                self._credit(counters, n)
                confirm((batches[index],), n)

        # As with the batch script (scripts.py): about this many keys queued on the node at once.
        per_command = max(1, sum(len(k) for _s, k in batches) // len(batches))
        replies = await send_many(client, [pack(self._command, *keys) for _s, keys in batches],
                                  window=max(4, _KEYS_IN_FLIGHT // per_command),
                                  on_reply=on_reply)
        counters.unlink_calls += len(batches)
        retry: list[SlotBatch] = []
        last: BaseException | None = None
        for batch, reply in zip(batches, replies, strict=True):
            if not isinstance(reply, BaseException):
                continue
            last = reply
            self._note(node, reply)
            if isinstance(reply, MovedError):
                self._moved[batch[0]] = NodeAddr(reply.host, int(reply.port))
                retry.append(batch)
            elif isinstance(reply, AskError):
                n = await self._send_asking(NodeAddr(reply.host, int(reply.port)), batch)
                confirm((batch,), n)
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

    def _credit(self, counters: NodeCounters, n: int) -> None:
        if self._command == "UNLINK":
            counters.deleted += n
        else:
            counters.matched += n

    async def _send_asking(self, target: NodeAddr, batch: SlotBatch) -> int:
        client = self._topology.client(target)
        async with client.pipeline(transaction=False) as pipe:
            pipe.execute_command("ASKING")
            pipe.execute_command(self._command, *batch[1])
            replies = await pipe.execute(raise_on_error=False)
        reply = replies[1]
        counters = self.counters(target)
        counters.unlink_calls += 1
        if isinstance(reply, TryAgainError):
            total = 0
            for k in batch[1]:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.execute_command("ASKING")
                    pipe.execute_command(self._command, k)
                    one = await pipe.execute(raise_on_error=False)
                if isinstance(one[1], BaseException):
                    raise one[1]
                total += int(one[1])
            self._credit(counters, total)
            return total
        if isinstance(reply, BaseException):
            raise reply
        self._credit(counters, int(reply))
        return int(reply)

    def _note(self, node: NodeAddr, exc: BaseException) -> None:
        self._on_error.append((node.name, classify(exc)))

    def _raise_permanent(self, node: NodeAddr, exc: BaseException) -> None:
        if classify(exc) == "permission":
            raise ClusterPermissionError(
                f"{node.name} refused {self._command}: {exc}; check the ACL user's key "
                "patterns and command permissions",
                node.name,
            ) from None
        raise exc
