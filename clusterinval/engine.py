"""The run: exact keys by slot, one scan task per primary, deletion overlapping scanning, coverage.

Shape of a run (all tasks live in task groups owned by ``Engine.run``; the run's deadline is one
cancel scope around them):

* exact keys are grouped by slot and unlinked on their owners, no scan;
* each scan pass is served, round after round, by one job per primary that owns slots the pass has
  not covered yet. A job asks the node what it owns, serves the pass on it to the end (how: see
  ``passes.py``), and asks again. Slots the node owned, not in migration, before and after its
  pass are covered (``coverage.py``);
* slots left uncovered (node died, slot moved, migration under way) are retried on their current
  owner after a back-off and a topology refresh, until all are covered or the deadline passes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import anyio
from redis.exceptions import RedisError

from clusterinval.batching import group_by_slot
from clusterinval.coverage import Coverage
from clusterinval.errors import ClusterConnectionError, ClusterPermissionError
from clusterinval.figures import EngineOutcome, ProgressWatch
from clusterinval.options import InvalidatorOptions
from clusterinval.passes import NodePasses
from clusterinval.planner import Plan
from clusterinval.ratelimit import KeyRateLimiter, LatencyGovernor
from clusterinval.retry import Backoff, classify, describe, is_transient, leading_error
from clusterinval.scripts import ServerScripts
from clusterinval.slots import SlotSet, key_slot
from clusterinval.topology import ClusterView, NodeAddr, NodeOwnership, Topology
from clusterinval.tracing import node_pass_span
from clusterinval.unlinker import Unlinker

__all__ = ["Engine"]

log = logging.getLogger("clusterinval.engine")

# A hash-tagged pattern's slot is listed with GETKEYSINSLOT when it holds at most this many keys
# (one bounded command); a larger slot is served by a SCAN of its owner instead.
_SLOT_LIST_LIMIT = 5000
# A view older than this is re-read at the start of a run (MOVED replies refresh it sooner).
_VIEW_TTL_S = 5.0
# How long a pass waits for a replica to catch up with its primary before scanning the primary.
_REPLICA_CATCH_UP_S = 1.0
# Exact keys are grouped by slot this many at a time. Large chunks group best (keys of a slot go
# in one UNLINK); the batches only reference the caller's keys, so memory grows little.
_EXACT_CHUNK = 200_000


class Engine:
    """Runs plans against one topology; one engine may serve many concurrent runs."""

    def __init__(self, topology: Topology, options: InvalidatorOptions) -> None:
        self._topology = topology
        self._options = options
        self._limiter = KeyRateLimiter(options.keys_per_second)
        self._node_limiters: dict[NodeAddr, KeyRateLimiter] = {}
        self._governor = (LatencyGovernor(options.adaptive_latency_ms)
                          if options.adaptive_latency_ms else None)
        self._scripts = ServerScripts(topology, options)
        self._view_read_at = -1e9

    def node_limiter(self, node: NodeAddr) -> KeyRateLimiter:
        """The ``node_keys_per_second`` budget of ``node``, shared by every run and path."""
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
        self, plan: Plan, out: EngineOutcome, *, dry_run: bool,
        watch: ProgressWatch | None = None,
    ) -> None:
        """Execute ``plan``, counting into ``out`` as replies arrive.

        Never raises for an incomplete run (see ``EngineOutcome.complete``); when it raises
        (refused, unreachable, cancelled), ``out`` still holds every confirmed deletion.
        """
        run = _Run(self, plan, out, dry_run, watch or ProgressWatch())
        # Until the run says otherwise, nothing it was asked for counts as done.
        out.uncovered = run.uncovered()
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
                raise leading_error(group) from group
            finally:
                out.uncovered = run.uncovered()
        if scope.cancelled_caught:
            out.timed_out = True
            out.messages.append(f"deadline of {self._options.timeout_s:g} s passed")


class _Run(NodePasses):
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
        # Exact keys not yet confirmed by a reply, per slot; keys not yet sent are those from
        # ``_exact_next`` on (and literal-pattern keys from ``_literal_next`` on).
        self._exact_pending: Counter[int] = Counter()
        self._exact_next = 0
        self._literal_next = 0
        self.fatal: str | None = None  # a non-transient error: no further round can help
        watch.slots_to_cover = len(plan.slots_to_cover)
        self.unlinker = Unlinker(
            self.topology, self.options, out.nodes, engine._limiter, engine.node_limiter,
            out.errors,
            command="EXISTS" if dry_run else "UNLINK", scripts=engine._scripts,
        )
        self._seen_sample: set[bytes] = set()
        self._exact_names: frozenset[bytes] | None = None

    def uncovered(self) -> SlotSet:
        """Slots of passes not covered, plus slots of exact keys no reply confirmed."""
        left = SlotSet(slot for slot, n in self._exact_pending.items() if n > 0)
        unsent = self.plan.keys[self._exact_next:]
        literals = list(self.plan.literal_origins)[self._literal_next:]
        for key in (*unsent, *literals):
            left.add(key_slot(key))
        left.update(self.coverage.uncovered())
        return left

    # -- exact keys ---------------------------------------------------------------------------

    async def exact_keys(self) -> None:
        keys = self.plan.keys
        for start in range(0, len(keys), _EXACT_CHUNK):
            chunk = keys[start : start + _EXACT_CHUNK]
            batches = group_by_slot(chunk, self.options.unlink_batch)
            self._claim(batches, next_key=start + len(chunk))
            await self._exact(batches, None)
        # A pattern without metacharacters names one key; it is sent on its own so that its
        # per-pattern figure is exact.
        for key, origin in self.plan.literal_origins.items():
            batches = group_by_slot([key], 1)
            self._claim(batches, next_literal=self._literal_next + 1)
            await self._exact(batches, origin)

    def _claim(self, batches: list[tuple[int, list[bytes]]], *, next_key: int | None = None,
               next_literal: int | None = None) -> None:
        """Move keys from "not sent" to "sent, not confirmed" (no await: never half done)."""
        pending = self._exact_pending
        for slot, keys in batches:
            pending[slot] += len(keys)
        if next_key is not None:
            self._exact_next = next_key
        if next_literal is not None:
            self._literal_next = next_literal

    async def _exact(self, batches: list[tuple[int, list[bytes]]], origin: int | None) -> None:
        out, watch, pending = self.out, self.watch, self._exact_pending

        def confirm(done: Sequence[tuple[int, list[bytes]]], n: int) -> None:
            sent = 0
            for slot, keys in done:
                pending[slot] -= len(keys)
                sent += len(keys)
            out.matched += n
            watch.matched += n
            if origin is not None:
                out.per_pattern[origin] += n
            if self.dry_run:
                if n and n == sent:
                    self._add_sample([k for _slot, keys in done for k in keys])
            else:
                out.deleted += n
                out.exact_deleted += n
                watch.deleted += n

        try:
            await self.unlinker.unlink(batches, confirm)
        except ClusterPermissionError:
            raise
        except (RedisError, OSError, TimeoutError, ConnectionError) as exc:
            # The keys no reply confirmed stay pending: their slots are reported uncovered.
            out.messages.append(f"exact keys: {describe(exc)}")

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
            if self.fatal is not None:
                self.out.messages.append(self.fatal)
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
                    self.out.messages.append(f"cluster unreachable: {describe(exc)}")
                    return

    async def _job(self, node: NodeAddr, index: int, need: SlotSet) -> None:
        scan_pass = self.plan.passes[index]
        counters = self.unlinker.counters(node)
        started = anyio.current_time()
        proven = SlotSet()
        try:
            with node_pass_span(node.name, match=scan_pass.match.decode("utf-8",
                                                                        "backslashreplace")):
                before = await self._ownership(node)
                if not len(need.intersection(before.stable)):
                    return  # the node no longer serves these slots: the next round finds the owner
                slot = scan_pass.single_slot
                # Slot-level commands exist only in cluster mode.
                cluster = not (self.topology.view and self.topology.view.standalone)
                listed = False
                if slot is not None and cluster:
                    listed = await self._list_slot(node, scan_pass, index, slot)
                scanned = True
                if not listed:
                    walk = need.intersection(before.owned) if cluster else None
                    proven, scanned = await self._scan_node(node, scan_pass, index, walk)
                after = await self._ownership(node) if scanned else before
        except ClusterPermissionError:
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            self.out.errors.append((node.name, classify(exc)))
            counters.errors.append(describe(exc))
            log.warning("scan of %s ended early: %s", node, describe(exc))
            if not is_transient(exc):
                # Another round would meet the same answer: end the run, incomplete.
                self.fatal = f"{node.name}: {describe(exc)}"
            return
        finally:
            counters.busy_s += anyio.current_time() - started
        covered = self.coverage.record_proven(index, need.intersection(proven))
        if scanned:
            covered += self.coverage.record(index, need, before, after)
        self.watch.covered += covered

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
                        f"{node.name} refused a command: {describe(exc)}", node.name
                    ) from None
                if not is_transient(exc) or attempt == attempts:
                    raise
                self.out.errors.append((node.name, classify(exc)))
                await anyio.sleep(self.backoff.delay(attempt))
        raise AssertionError("unreachable")
