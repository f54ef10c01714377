"""The run: exact keys by slot, one scan task per primary, deletion overlapping scanning, coverage.

Shape of a run (all tasks live in task groups owned by ``Engine.run``; the run's deadline is one
cancel scope around them):

* exact keys are grouped by slot and unlinked on their owners, no scan;
* each scan pass is served, round after round, by one job per primary that owns slots the pass has
  not covered yet. A job asks the node what it owns, runs ``SCAN ... MATCH ... COUNT`` to the end,
  feeds found keys through a bounded stream to deleter tasks (so memory stays flat), and asks again.
  Slots the node owned, not in migration, before and after its pass are covered;
* slots left uncovered (node died, slot moved, migration under way) are retried on their current
  owner after a back-off and a topology refresh, until all are covered or the deadline passes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from redis.exceptions import RedisError

from clusterinval.batching import SlotBatcher, group_by_slot
from clusterinval.coverage import Coverage
from clusterinval.errors import ClusterConnectionError, ClusterInvalError, ClusterPermissionError
from clusterinval.options import InvalidatorOptions
from clusterinval.planner import Plan, ScanPass
from clusterinval.ratelimit import KeyRateLimiter, LatencyGovernor
from clusterinval.retry import Backoff, ErrorKind, classify, is_transient
from clusterinval.slots import SlotSet
from clusterinval.topology import ClusterView, NodeAddr, NodeOwnership, Topology, command
from clusterinval.unlinker import NodeCounters, ScriptCache, Unlinker

__all__ = ["Engine", "EngineOutcome", "Progress", "ProgressWatch"]

log = logging.getLogger("clusterinval.engine")

# A hash-tagged pattern's slot is listed with GETKEYSINSLOT when it holds at most this many keys
# (one bounded command); a larger slot is served by a SCAN of its owner instead.
_SLOT_LIST_LIMIT = 5000
# A view older than this is re-read at the start of a run (MOVED replies refresh it sooner).
_VIEW_TTL_S = 5.0
# How long a pass waits for a replica to catch up with its primary before scanning the primary.
_REPLICA_CATCH_UP_S = 1.0
# Exact keys are handled this many at a time, bounding the batches held in memory.
_EXACT_CHUNK = 20_000


@dataclass(frozen=True, slots=True)
class Progress:
    """A live reading of a run, for progress displays."""

    covered_slots: int
    slots_to_cover: int
    matched: int
    deleted: int
    scan_calls: int


@dataclass(slots=True)
class EngineOutcome:
    """Raw figures of a run; the invalidator turns them into an ``InvalidationResult``."""

    deleted: int = 0
    exact_deleted: int = 0
    matched: int = 0
    scanned: int = 0
    per_pattern: list[int] = field(default_factory=list)
    sample: list[bytes] = field(default_factory=list)
    uncovered: SlotSet = field(default_factory=SlotSet)
    nodes: dict[NodeAddr, NodeCounters] = field(default_factory=dict)
    errors: list[tuple[str, ErrorKind]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    timed_out: bool = False

    @property
    def complete(self) -> bool:
        """Every slot covered and every exact key handled."""
        return len(self.uncovered) == 0


class Engine:
    """Runs plans against one topology; one engine may serve many concurrent runs."""

    def __init__(self, topology: Topology, options: InvalidatorOptions) -> None:
        self._topology = topology
        self._options = options
        self._limiter = KeyRateLimiter(options.keys_per_second)
        self._node_limiters: dict[NodeAddr, KeyRateLimiter] = {}
        self._governor = (LatencyGovernor(options.adaptive_latency_ms)
                          if options.adaptive_latency_ms else None)
        self._scripts = ScriptCache()
        self._view_read_at = -1e9

    def node_limiter(self, node: NodeAddr) -> KeyRateLimiter:
        """The ``node_keys_per_second`` budget of ``node`` for the server-side scan+delete path."""
        lim = self._node_limiters.get(node)
        if lim is None:
            lim = self._node_limiters[node] = KeyRateLimiter(self._options.node_keys_per_second)
        return lim

    async def ensure_view(self) -> ClusterView:
        """A current view (read now if none or old); ClusterConnectionError when nothing answers."""
        view = self._topology.view
        now = anyio.current_time()
        if view is None or now - self._view_read_at > _VIEW_TTL_S:
            view = await self._topology.refresh()
            self._view_read_at = now
        return view

    async def run(
        self, plan: Plan, *, dry_run: bool, watch: ProgressWatch | None = None
    ) -> EngineOutcome:
        """Execute ``plan``; never raises for an incomplete run (see ``EngineOutcome.complete``)."""
        out = EngineOutcome(per_pattern=[0] * len(plan.patterns))
        run = _Run(self, plan, out, dry_run, watch or ProgressWatch())
        await self.ensure_view()
        with anyio.move_on_after(self._options.timeout_s) as scope:
            try:
                async with anyio.create_task_group() as tg:
                    if plan.keys or plan.literal_origins:
                        tg.start_soon(run.exact_keys)
                    if plan.passes:
                        tg.start_soon(run.scan_passes)
            except anyio.get_cancelled_exc_class():
                if not scope.cancel_called:  # cancelled by the caller, not by our deadline
                    log.warning(
                        "run cancelled: %d keys deleted, %d matched, %d of %d slots covered",
                        out.deleted, out.matched, run.watch.covered, run.watch.slots_to_cover)
                raise
            except BaseExceptionGroup as group:
                # Task groups wrap what their tasks raise; callers must get the typed error.
                raise _leading_error(group) from group
        if scope.cancelled_caught:
            out.timed_out = True
            out.messages.append(f"deadline of {self._options.timeout_s:g} s passed")
        out.uncovered = run.uncovered()
        return out


class ProgressWatch:
    """Counters a progress display may read while the run goes on."""

    def __init__(self) -> None:
        self.slots_to_cover = 0
        self.covered = 0
        self.matched = 0
        self.deleted = 0
        self.scan_calls = 0

    def snapshot(self) -> Progress:
        """The current reading."""
        return Progress(self.covered, self.slots_to_cover, self.matched, self.deleted,
                        self.scan_calls)


class _Run:
    """State of one run: what is pending, what was found, what went wrong."""

    def __init__(
        self, engine: Engine, plan: Plan, out: EngineOutcome, dry_run: bool, watch: ProgressWatch
    ) -> None:
        self.engine = engine
        self.topology = engine._topology
        self.options = engine._options
        self.plan = plan
        self.out = out
        self.dry_run = dry_run
        self.watch = watch
        self.backoff = Backoff(self.options.backoff_base_s, self.options.backoff_cap_s)
        self.coverage = Coverage([p.slots for p in plan.passes])
        self.exact_failed = SlotSet()
        watch.slots_to_cover = len(plan.slots_to_cover)
        self.unlinker = Unlinker(
            self.topology, self.options, out.nodes, engine._limiter, out.errors,
            command="EXISTS" if dry_run else "UNLINK", scripts=engine._scripts,
        )
        self._seen_sample: set[bytes] = set()

    def uncovered(self) -> SlotSet:
        """Slots of passes not covered, plus slots of exact keys that could not be handled."""
        left = self.exact_failed.copy()
        left.update(self.coverage.uncovered())
        return left

    # -- exact keys ---------------------------------------------------------------------------

    async def exact_keys(self) -> None:
        keys = self.plan.keys
        for start in range(0, len(keys), _EXACT_CHUNK):
            chunk = keys[start : start + _EXACT_CHUNK]
            n = await self._exact(group_by_slot(chunk, self.options.unlink_batch))
            if n and self.dry_run and n == len(chunk):
                self._add_sample(chunk)
        # A pattern without metacharacters names one key; it is sent on its own so that its
        # per-pattern figure is exact.
        for key, origin in self.plan.literal_origins.items():
            n = await self._exact(group_by_slot([key], 1))
            self.out.per_pattern[origin] += n
            if n and self.dry_run:
                self._add_sample([key])

    async def _exact(self, batches: list[tuple[int, list[bytes]]]) -> int:
        try:
            n = await self.unlinker.unlink(batches)
        except ClusterPermissionError:
            raise
        except (RedisError, OSError, TimeoutError, ConnectionError) as exc:
            for slot, _ in batches:
                self.exact_failed.add(slot)
            self.out.messages.append(f"exact keys: {_short(exc)}")
            return 0
        self.out.matched += n
        self.watch.matched += n
        if not self.dry_run:
            self.out.deleted += n
            self.out.exact_deleted += n
            self.watch.deleted += n
        return n

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

    # -- scan passes --------------------------------------------------------------------------

    async def scan_passes(self) -> None:
        attempt = 0
        unreachable = 0  # consecutive rounds in which no node could describe the cluster
        while not self.coverage.done:
            view = self.topology.view
            assert view is not None
            jobs = self.coverage.jobs(view)
            if jobs:
                async with anyio.create_task_group() as tg:
                    for node, i, need in jobs:
                        tg.start_soon(self._job, node, i, need)
            if self.coverage.done:
                return
            attempt += 1
            left = self.coverage.left
            log.info("%d slots not covered yet (round %d); re-reading topology", left, attempt)
            await anyio.sleep(self.backoff.delay(min(attempt, 8)))
            try:
                await self.topology.refresh()
                unreachable = 0
            except ClusterConnectionError as exc:
                # A failover keeps some node answering; nobody answering, round after round, is
                # a cluster that is down: end the run now rather than at its deadline.
                unreachable += 1
                if unreachable > self.options.retries:
                    self.out.messages.append(f"cluster unreachable: {_short(exc)}")
                    return

    async def _job(self, node: NodeAddr, index: int, need: SlotSet) -> None:
        scan_pass = self.plan.passes[index]
        counters = self.unlinker.counters(node)
        started = anyio.current_time()
        try:
            before = await self._ownership(node)
            if not len(need.intersection(before.stable)):
                return  # the node no longer serves these slots: next round finds the new owner
            slot = scan_pass.single_slot
            listed = False
            if slot is not None and not (self.topology.view and self.topology.view.standalone):
                listed = await self._list_slot(node, scan_pass, index, slot)
            if not listed:
                await self._scan_node(node, scan_pass, index)
            after = await self._ownership(node)
        except ClusterPermissionError:
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            self.out.errors.append((node.name, classify(exc)))
            counters.errors.append(_short(exc))
            log.warning("scan of %s ended early: %s", node, _short(exc))
            return
        finally:
            counters.busy_s += anyio.current_time() - started
        self.watch.covered += self.coverage.record(index, need, before, after)

    async def _ownership(self, node: NodeAddr) -> NodeOwnership:
        owned: NodeOwnership = await self._call(node, lambda: self.topology.ownership(node))
        return owned

    async def _call(self, node: NodeAddr, fn: Any, attempts: int = 3) -> Any:
        """One node command with a timeout and a few quick retries for transient errors."""
        governor = self.engine._governor
        for attempt in range(1, attempts + 1):
            try:
                if governor is not None:
                    await governor.pace(node)
                sent = anyio.current_time()
                with anyio.fail_after(self.options.command_timeout_s):
                    value = await fn()
                if governor is not None:
                    governor.observe(node, anyio.current_time() - sent)
                return value
            except (RedisError, OSError, TimeoutError) as exc:
                if classify(exc) == "permission":
                    raise ClusterPermissionError(
                        f"{node.name} refused a command: {_short(exc)}", node.name
                    ) from None
                if not is_transient(exc) or attempt == attempts:
                    raise
                self.out.errors.append((node.name, classify(exc)))
                await anyio.sleep(self.backoff.delay(attempt))
        raise AssertionError("unreachable")

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

    async def _scan_node(self, node: NodeAddr, scan_pass: ScanPass, index: int) -> None:
        client = self.topology.client(node)
        counters = self.unlinker.counters(node)
        size = int(await self._call(node, client.dbsize))
        source = await self._scan_source(node) if self.options.scan_on_replicas else node
        if (source == node and not self.dry_run and scan_pass.server_exact
                and await self.unlinker.scan_unlink_ready(node)):
            await self._scan_unlink_node(node, scan_pass, index)
        else:
            await self._scan_then_delete(node, scan_pass, index, source)
        counters.scanned += size
        self.out.scanned += size

    async def _scan_unlink_node(self, node: NodeAddr, scan_pass: ScanPass, index: int) -> None:
        """Scan and delete in one server-side step per SCAN call (the fast path)."""
        cursor = 0
        count = self.options.server_scan_count
        match = scan_pass.match
        counters = self.unlinker.counters(node)
        while True:
            cursor, matched, deleted, left = await self._call(
                node, lambda c=cursor: self.unlinker.scan_unlink(node, c, match, count)
            )
            self.watch.scan_calls += 1
            counters.matched += matched
            self.out.matched += matched
            self.out.per_pattern[scan_pass.origins[0]] += matched
            self.out.deleted += deleted
            self.watch.matched += matched
            self.watch.deleted += deleted
            if left:
                await self._delete(group_by_slot(left, self.options.unlink_batch))
            await self.engine._limiter.acquire(matched)
            # Deleted server-side, so the unlinker's per-node budget never saw these keys.
            await self.engine.node_limiter(node).acquire(matched)
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
                log.info("replica %s of %s not usable for SCAN: %s", replica, node, _short(exc))
        log.info("no replica of %s caught up; scanning the primary", node)
        return node

    async def _scan_then_delete(
        self, node: NodeAddr, scan_pass: ScanPass, index: int, source: NodeAddr | None = None
    ) -> None:
        """SCAN ``source`` (``node`` or its replica), delete on the owners through a stream."""
        source = source or node
        client = self.topology.client(source)
        counters = self.unlinker.counters(node)
        send, recv = anyio.create_memory_object_stream[list[bytes]](self.options.stream_depth)
        failure: list[BaseException] = []
        script = not self.dry_run and await self.unlinker.uses_script(node)
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
        if failure:
            raise failure[0]

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
        n = await self.unlinker.unlink(batches)
        self.out.deleted += n
        self.watch.deleted += n


def _leading_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to raise for a (nested) group: a ClusterInvalError if any, else the first."""
    ours = group.subgroup(lambda e: isinstance(e, ClusterInvalError))
    exc: BaseException = ours if ours is not None else group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) < 240 else text[:237] + "..."
