"""Serving one scan pass on one node, by the cheapest of its paths.

* slot walk (``slotwalk.py``): a prefix pattern read slot by slot and deleted server-side;
* server-side step: one short script call runs a SCAN step and unlinks what it found (single
  pattern, not a dry run, scripts allowed); no key crosses the network;
* slot listing: a pass fixed to one slot by a hash tag reads that slot with one bounded
  ``CLUSTER GETKEYSINSLOT``;
* scan + deleters: SCAN here, matching keys go through a bounded memory object stream to deleter
  tasks that group them by slot and unlink them (multi-pattern passes, dry runs, old servers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from redis.exceptions import RedisError

from clusterinval.batching import SlotBatcher, group_by_slot
from clusterinval.errors import ClusterPermissionError
from clusterinval.figures import EngineOutcome, ProgressWatch
from clusterinval.options import InvalidatorOptions
from clusterinval.planner import Plan, ScanPass
from clusterinval.retry import describe, leading_error
from clusterinval.slots import SlotSet
from clusterinval.slotwalk import RATED_CALLS_PER_S, RATED_MIN_KEYS, SlotWalks
from clusterinval.topology import NodeAddr, Topology, command
from clusterinval.unlinker import Unlinker

if TYPE_CHECKING:
    from clusterinval.engine import Engine

__all__ = ["NodePasses"]

log = logging.getLogger("clusterinval.engine")

# A hash-tagged pattern's slot is listed with GETKEYSINSLOT when it holds at most this many keys
# (one bounded command); a larger slot is served by a SCAN of its owner instead.
_SLOT_LIST_LIMIT = 5000
# How long a pass waits for a replica to catch up with its primary before scanning the primary.
_REPLICA_CATCH_UP_S = 1.0


class NodePasses(SlotWalks):
    """The per-node half of a run (mixed into the run, which provides the state below)."""

    engine: Engine
    topology: Topology
    options: InvalidatorOptions
    out: EngineOutcome
    watch: ProgressWatch
    dry_run: bool
    unlinker: Unlinker
    plan: Plan
    _seen_sample: set[bytes]
    _exact_names: frozenset[bytes] | None

    async def _call(self, node: NodeAddr, fn: Any, attempts: int = 3) -> Any:
        raise NotImplementedError

    def _add_sample(self, keys: Any) -> None:
        limit = self.options.sample_size
        if len(self.out.sample) >= limit:
            return
        for k in keys:
            if k not in self._seen_sample:
                self._seen_sample.add(k)
                self.out.sample.append(k)
                if len(self.out.sample) >= limit:
                    return

    async def _list_slot(self, node: NodeAddr, scan_pass: ScanPass, index: int, slot: int) -> bool:
        """Serve a one-slot pass with one bounded GETKEYSINSLOT; False when the slot is too big."""
        client = self.topology.client(node)
        # Asking for one key more than the limit tells "too big" without a COUNTKEYSINSLOT.
        keys = await self._call(node, lambda: command(
            client, "CLUSTER", "GETKEYSINSLOT", slot, _SLOT_LIST_LIMIT + 1))
        if len(keys) > _SLOT_LIST_LIMIT:
            return False
        counters = self.unlinker.counters(node)
        counters.scan_calls += 1
        counters.scanned += len(keys)
        self.out.scanned += len(keys)
        if keys:
            await self._consume_keys(node, scan_pass, index, list(keys), None)
        return True

    async def _scan_node(
        self, node: NodeAddr, scan_pass: ScanPass, index: int, slots: SlotSet | None = None
    ) -> tuple[SlotSet, bool]:
        """Serve a pass on ``node``; ``slots`` (those it needs and the node holds) may narrow it.

        Returns the slots a slot walk proved it read whole, and whether the node's keyspace was
        scanned (a scan is judged by what the node served before and after it).
        """
        client = self.topology.client(node)
        counters = self.unlinker.counters(node)
        source = await self._scan_source(node) if self.options.scan_on_replicas else node
        # Server-side paths read the primary; scanning a replica instead needs the client path.
        server_side = not self.dry_run and scan_pass.server_exact and source == node
        walkable = all(g.prefix_only for g in scan_pass.globs)
        proven = SlotSet()
        if (not self.dry_run and source == node and walkable and slots is not None
                and await self.unlinker.slot_walk_ready(node)):
            proven, whole = await self._slot_walk_node(node, scan_pass, slots)
            if whole:
                return proven, False
        size = int(await self._call(node, client.dbsize))
        if server_side and await self.unlinker.scan_unlink_ready(node):
            await self._scan_unlink_node(node, scan_pass, index)
        else:
            await self._scan_then_delete(node, scan_pass, index, source)
        counters.scanned += size
        self.out.scanned += size
        return proven, True

    async def _scan_unlink_node(self, node: NodeAddr, scan_pass: ScanPass, index: int) -> None:
        """Scan and delete in one server-side step per SCAN call (the fast path)."""
        cursor = 0
        dense, sparse = self.options.server_scan_count, max(self.options.scan_count,
                                                           self.options.server_scan_count)
        rate = self._node_rate()
        if rate is not None:
            # As for the slot walk: short steps under a rate limit.
            dense = sparse = max(RATED_MIN_KEYS, min(dense, int(rate / RATED_CALLS_PER_S)))
        count = dense
        match = scan_pass.match
        while True:
            cursor, matched, deleted, left = await self._call(
                node, lambda c=cursor, n=count: self.unlinker.scan_unlink(node, c, match, n)
            )
            # A step's cost is mostly its deletions: where matches are sparse, a step may walk
            # further (scan_count) for the same work; where they are dense, it walks less.
            count = sparse if matched * 4 < dense else dense
            self.count_server_step(node, scan_pass.origins, [matched], deleted)
            await self._settle_step(node, matched, left)
            if cursor == 0:
                return

    async def _scan_source(self, node: NodeAddr) -> NodeAddr:
        """A replica of ``node`` that has caught up with it, to SCAN on; else ``node`` itself.

        The replica must have applied the primary's whole replication stream as of now, so every
        key written before the pass started is visible to its SCAN; one that lags longer than
        ``_REPLICA_CATCH_UP_S`` is skipped. Coverage is still judged on the primary's ownership.
        """
        view = self.topology.view
        replicas = view.replicas.get(node, ()) if view is not None else ()
        if not replicas:
            return node
        primary = self.topology.client(node)
        try:
            info = await self._call(node, lambda: primary.info("replication"))
        except ClusterPermissionError as exc:  # a user without INFO: scan the primary
            log.info("cannot read %s's replication offset (%s); scanning it", node, exc)
            return node
        target = int(info.get("master_repl_offset", 0))
        for replica in replicas:
            client = self.topology.client(replica)
            try:
                with anyio.move_on_after(_REPLICA_CATCH_UP_S):
                    while True:
                        rinfo = await self._call(replica, lambda c=client: c.info("replication"))
                        if (rinfo.get("master_link_status") == "up"
                                and int(rinfo.get("slave_repl_offset", -1)) >= target):
                            return replica
                        await anyio.sleep(0.02)  # polling the replica's offset, bounded above
            except (RedisError, OSError, TimeoutError) as exc:
                log.info("replica %s of %s not usable for SCAN: %s", replica, node, describe(exc))
        log.info("no replica of %s caught up; scanning the primary", node)
        return node

    async def _scan_then_delete(
        self, node: NodeAddr, scan_pass: ScanPass, index: int, source: NodeAddr | None = None
    ) -> None:
        """SCAN ``source`` (``node`` or its replica), delete on the owners through a stream."""
        source = source or node
        send, recv = anyio.create_memory_object_stream[list[bytes]](self.options.stream_depth)
        failure: list[BaseException] = []
        script = not self.dry_run and await self.unlinker.uses_script(node)
        try:
            await self._scan_into_deleters(node, source, scan_pass, index, recv, send, script,
                                           failure)
        except BaseExceptionGroup as group:
            # A deleter's error arrives wrapped by the task group; the job needs it plain.
            raise leading_error(group) from None
        if failure:
            raise failure[0]

    async def _scan_into_deleters(
        self,
        node: NodeAddr,
        source: NodeAddr,
        scan_pass: ScanPass,
        index: int,
        recv: MemoryObjectReceiveStream[list[bytes]],
        send: Any,
        script: bool,
        failure: list[BaseException],
    ) -> None:
        client = self.topology.client(source)
        counters = self.unlinker.counters(node)
        async with anyio.create_task_group() as tg:
            for _ in range(self.options.deleters_per_node):
                tg.start_soon(self._deleter, node, scan_pass, index, recv.clone(), script)
            recv.close()
            async with send:
                cursor = 0
                count = self.options.scan_count
                match = scan_pass.match
                try:
                    while True:
                        cursor, keys = await self._call(
                            source, lambda c=cursor: client.scan(c, match=match, count=count)
                        )
                        counters.scan_calls += 1
                        self.watch.scan_calls += 1
                        if keys:
                            await send.send(keys)
                        if cursor == 0:
                            break
                except (RedisError, OSError, TimeoutError) as exc:
                    # Let the deleters finish what was found, then report the pass as unfinished.
                    failure.append(exc)

    async def _deleter(
        self,
        node: NodeAddr,
        scan_pass: ScanPass,
        index: int,
        recv: MemoryObjectReceiveStream[list[bytes]],
        script: bool,
    ) -> None:
        per_task = max(self.options.buffer_keys // self.options.deleters_per_node,
                       self.options.unlink_batch)
        # With the server-side script every SCAN batch goes at once (one call serves many slots);
        # with plain UNLINK, keys wait per slot so that each command carries several.
        batcher = None if script else SlotBatcher(self.options.unlink_batch, per_task)
        async with recv:
            async for keys in recv:
                await self._consume_keys(node, scan_pass, index, keys, batcher)
        if batcher is not None and batcher.held:
            await self._delete(batcher.drain())

    async def _consume_keys(
        self,
        node: NodeAddr,
        scan_pass: ScanPass,
        index: int,
        keys: list[bytes],
        batcher: SlotBatcher | None,
    ) -> None:
        matched = self._filter(scan_pass, keys)
        if matched and self.dry_run:
            matched = self._first_count(index, matched)
        if not matched:
            return
        counters = self.unlinker.counters(node)
        counters.matched += len(matched)
        self.out.matched += len(matched)
        self.watch.matched += len(matched)
        if self.dry_run:
            self._add_sample(matched)
            return
        ready = batcher.add(matched) if batcher is not None else group_by_slot(
            matched, self.options.unlink_batch)
        if ready:
            await self._delete(ready)

    def _first_count(self, index: int, keys: list[bytes]) -> list[bytes]:
        """The keys a dry run counts in pass ``index``: those no exact key or earlier pass names.

        Nothing is deleted in a dry run, so a key matching patterns of two passes (or also named
        as an exact key) is found twice; it is counted where it is first asked for.
        """
        earlier = [g for p in self.plan.passes[:index] for g in p.globs]
        if self._exact_names is None:
            self._exact_names = frozenset((*self.plan.keys, *self.plan.literal_origins))
        exact = self._exact_names
        if not earlier and not exact:
            return keys
        return [k for k in keys if k not in exact and not any(g.match(k) for g in earlier)]

    def _filter(self, scan_pass: ScanPass, keys: list[bytes]) -> list[bytes]:
        per_pattern = self.out.per_pattern
        if scan_pass.server_exact and scan_pass.single_slot is None:
            per_pattern[scan_pass.origins[0]] += len(keys)
            return keys
        kept: list[bytes] = []
        globs = scan_pass.globs
        origins = scan_pass.origins
        for k in keys:
            for g, origin in zip(globs, origins, strict=True):
                if g.match(k):
                    kept.append(k)
                    per_pattern[origin] += 1
                    break
        return kept

    async def _delete(self, batches: Sequence[tuple[int, list[bytes]]]) -> None:
        await self.unlinker.unlink(batches, self._confirm_deleted)

    def _confirm_deleted(self, batches: Sequence[tuple[int, list[bytes]]], n: int) -> None:
        self.out.deleted += n
        self.watch.deleted += n
