"""The run: exact keys by slot, one job per primary and pass, deletion overlapping scanning,
coverage round after round.

Shape of a run (all tasks live in task groups owned by ``Engine.run``; the run's deadline is one
cancel scope around them):

* exact keys are grouped by slot and unlinked on their owners, no scan (``exact.py``);
* each scan pass is served, round after round, by one job per primary that owns slots the pass has
  not covered yet (``nodepass.py``); what a job proved covered is recorded (``_core/coverage.py``);
* slots left uncovered (node died, slot moved, migration under way) are retried on their current
  owner after a back-off and a topology refresh, until all are covered or the deadline passes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import anyio

from clusterinval._core.coverage import Coverage
from clusterinval._core.merging import Shares
from clusterinval._core.planning import Plan
from clusterinval._core.slots import SlotSet
from clusterinval._core.tally import ProgressWatch, RunTally
from clusterinval._core.values import ClusterView
from clusterinval._engine.context import RunContext
from clusterinval._engine.exact import ExactKeys
from clusterinval._engine.nodepass import NodePasses
from clusterinval._engine.ratelimit import Limits
from clusterinval._engine.retry import Backoff, RetryPolicy, describe, leading_error
from clusterinval._engine.smallcall import SmallCall
from clusterinval._engine.topology import Topology
from clusterinval._engine.unlinker import Unlinker
from clusterinval.errors import ClusterConnectionError
from clusterinval.options import InvalidatorOptions

__all__ = ["Engine"]

log = logging.getLogger("clusterinval.engine")

# A view older than this is re-read at the start of a run (MOVED replies refresh it sooner).
_VIEW_TTL_S = 5.0


class Engine:
    """Runs plans against one topology; one engine may serve many concurrent runs."""

    def __init__(self, topology: Topology, options: InvalidatorOptions) -> None:
        self.topology = topology
        self._options = options
        self.limits = Limits(options.keys_per_second, options.node_keys_per_second,
                              options.adaptive_latency_ms)
        self._policy = RetryPolicy(options.retries,
                                   Backoff(options.backoff_base_s, options.backoff_cap_s))
        self._view_read_at = -1e9

    @property
    def policy(self) -> RetryPolicy:
        """How this engine retries."""
        return self._policy

    @property
    def options(self) -> InvalidatorOptions:
        """The options its runs follow."""
        return self._options

    async def ensure_view(self) -> ClusterView:
        """A current view (read now if none or old); ClusterConnectionError when nothing answers."""
        view = self.topology.view
        now = anyio.current_time()
        if view is None or now - self._view_read_at > _VIEW_TTL_S:
            view = await self.topology.refresh()
            self._view_read_at = now
        return view

    async def run(self, plan: Plan, tally: RunTally, *, dry_run: bool,
                  watch: ProgressWatch | None = None, shares: Shares | None = None,
                  timeout_s: float | None = None) -> None:
        """Execute ``plan``, counting into ``tally`` (and ``shares``) as replies arrive.

        Never raises for an incomplete run (see ``RunTally.complete``); when it raises (refused,
        unreachable, cancelled), ``tally`` still holds every confirmed deletion. ``timeout_s``
        replaces the options' deadline.
        """
        options = self._options
        deadline_s = options.timeout_s if timeout_s is None else timeout_s
        # The deadline, on the event loop's clock (asyncio's is ``time.monotonic``; read
        # directly, without anyio's backend lookup, which costs a small call a measurable part).
        deadline_at = time.monotonic() + deadline_s
        if (watch is None and shares is None and not dry_run and not plan.passes
                and not plan.literal_origins):
            small = SmallCall.route(self.topology, self.limits, tally, plan.keys,
                                    options.unlink_batch)
            if small is not None:
                left = await self._run_small(small, tally, deadline_s, deadline_at)
                if left is None:
                    return
                plan = replace(plan, keys=left)  # for the general path, as if from the start
        unlinker = Unlinker(self.topology, self._policy, self.limits, tally,
                            options.command_timeout_s,
                            command="EXISTS" if dry_run else "UNLINK",
                            use_scripts=options.server_scripts)
        ctx = RunContext(self.topology, options, plan, tally, self._policy, self.limits,
                         unlinker, dry_run, watched=watch is not None, shares=shares)
        run = _Rounds(ctx)
        tally.live_uncovered = run.uncovered
        if watch is not None:
            watch.follow(tally)
        if plan.passes or self.topology.view is None:
            # Passes are planned from the view, so it must be recent. Exact keys are routed by
            # it and MOVED corrects it: no topology reading on their way.
            await self.ensure_view()
        with anyio.CancelScope(deadline=deadline_at) as scope:
            try:
                if not plan.passes:
                    # Exact keys only (the common small call): no task group to set up.
                    await run.exact.run()
                elif not (plan.keys or plan.literal_origins):
                    await run.scan_passes()  # patterns only: nothing to run beside them
                else:
                    async with anyio.create_task_group() as tg:
                        if plan.keys or plan.literal_origins:
                            tg.start_soon(run.exact.run)
                        tg.start_soon(run.scan_passes)
            except anyio.get_cancelled_exc_class():
                if not scope.cancel_called:  # cancelled by the caller, not by our deadline
                    _log_cancelled(tally)
                raise
            except BaseExceptionGroup as group:
                # Task groups wrap what their tasks raise; callers must get the typed error.
                raise leading_error(group) from group
            finally:
                tally.uncovered = run.uncovered()
                tally.live_uncovered = None
        if scope.cancelled_caught:
            _timed_out(tally, deadline_s)

    async def _run_small(self, small: SmallCall, tally: RunTally, deadline_s: float,
                         deadline_at: float) -> tuple[bytes, ...] | None:
        """The hot path; None when it finished the run, else the keys it left unconfirmed."""
        try:
            await small.send(min(deadline_s, self._options.command_timeout_s))
        except anyio.get_cancelled_exc_class():
            tally.uncovered = small.unconfirmed_slots()
            _log_cancelled(tally)
            raise
        left = small.unconfirmed()
        if not left:
            return None
        if time.monotonic() >= deadline_at:
            tally.uncovered = small.unconfirmed_slots()
            _timed_out(tally, deadline_s)
            return None
        return tuple(k for _slot, keys in left for k in keys)


def _log_cancelled(tally: RunTally) -> None:
    log.warning("run cancelled: %d keys deleted, %d matched, %d of %d slots covered",
                tally.deleted, tally.matched, tally.covered, tally.slots_to_cover)


def _timed_out(tally: RunTally, deadline_s: float) -> None:
    tally.timed_out = True
    tally.messages.append(f"deadline of {deadline_s:g} s passed")


class _Rounds:
    """One run's exact keys and its rounds of scan passes."""

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx
        self.exact = ExactKeys(ctx)
        self._coverage = Coverage([p.slots for p in ctx.plan.passes])
        # A call of exact keys only (the common small call) sets up no scanning machinery.
        self._passes = NodePasses(ctx, self._coverage) if ctx.plan.passes else None
        ctx.tally.slots_to_cover = len(ctx.plan.slots_to_cover) if ctx.plan.passes else 0

    def uncovered(self) -> SlotSet:
        """Slots of passes not covered, plus slots of exact keys no reply confirmed."""
        left = self.exact.unconfirmed()
        if self._passes is not None:
            left.update(self._coverage.uncovered())
        return left

    async def scan_passes(self) -> None:
        """Run rounds of jobs until every pass covered its slots, or no round can help."""
        ctx = self._ctx
        topology = ctx.topology
        passes = self._passes
        assert passes is not None, "a run without scan passes has none to serve"
        attempt = 0
        unreachable = 0  # consecutive rounds in which no node could describe the cluster
        while not self._coverage.done:
            view = topology.view
            assert view is not None
            jobs = self._coverage.jobs(view)
            if len(jobs) == 1:  # one node to serve (a hash-tagged pattern): no task group
                await passes.run(*jobs[0])
            elif jobs:
                async with anyio.create_task_group() as tg:
                    for node, index, need in jobs:
                        tg.start_soon(passes.run, node, index, need)
            if self._coverage.done:
                return
            if passes.fatal is not None:
                ctx.tally.messages.append(passes.fatal)
                return
            attempt += 1
            log.info("%d slots not covered yet (round %d); re-reading topology",
                     self._coverage.left, attempt)
            await anyio.sleep(ctx.policy.delay(min(attempt, 8)))
            try:
                await topology.refresh()
                unreachable = 0
            except ClusterConnectionError as exc:
                # A failover keeps some node answering; nobody answering, round after round, is
                # a cluster that is down: end the run now rather than at its deadline.
                unreachable += 1
                if unreachable > ctx.policy.attempts:
                    ctx.tally.messages.append(f"cluster unreachable: {describe(exc)}")
                    return
