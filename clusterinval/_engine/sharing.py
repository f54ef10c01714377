"""Shared passes: concurrent calls that must read the whole keyspace share one reading of it.

A call with full-keyspace patterns joins the pass that is forming. The pass starts once its
gathering window has passed and the previous pass has finished, so calls arriving while one pass
runs are merged into the next: N callers cost about one walk, not N.

No task outlives its caller. The pass is driven by one of its callers, in that caller's task; if
the driver leaves (its deadline, its cancellation), the slots its run covered stay covered and
another caller takes over the rest. A caller's deadline and cancellation are its own: leaving
never cancels the others, and a pass whose callers have all left stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from clusterinval._core.merging import MergedPlan, Shares, merge_plans
from clusterinval._core.planning import Plan
from clusterinval._core.slots import SLOT_COUNT, SlotSet
from clusterinval._core.tally import RunTally
from clusterinval._engine.run import Engine

__all__ = ["ShareOutcome", "SharedPasses"]

log = logging.getLogger("clusterinval.engine")


@dataclass(frozen=True, slots=True)
class ShareOutcome:
    """What the metrics may attribute to one caller of a shared pass."""

    credit: int  # keys whose deletion counts for this caller in the metrics (each key once)
    scan_work: bool  # whether the pass's reads count for this caller (one caller per pass)
    callers: int  # calls the pass served


@dataclass(eq=False)
class _Member:
    plan: Plan
    tally: RunTally
    deadline: float
    left: bool = False
    timed_out: bool = False


@dataclass(eq=False)
class _Pass:
    start_at: float
    members: list[_Member] = field(default_factory=list)
    started: bool = False
    done: bool = False
    driver: _Member | None = None
    changed: anyio.Event = field(default_factory=anyio.Event)
    finished: anyio.Event = field(default_factory=anyio.Event)
    remaining: SlotSet = field(default_factory=SlotSet.full)
    merged: MergedPlan | None = None
    shares: Shares | None = None
    runs: list[RunTally] = field(default_factory=list)  # the drivers' runs, the current one last

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    def uncovered_now(self) -> SlotSet:
        """Slots not covered yet, live while a run is under way."""
        current = self.runs[-1] if self.runs and self.driver is not None else None
        if current is not None and current.live_uncovered is not None:
            return current.live_uncovered()
        return self.remaining.copy()


class SharedPasses:
    """Merges concurrent full-keyspace calls on one engine into shared passes."""

    def __init__(self, engine: Engine, window_s: float,
                 on_pass: Callable[[int], None] | None = None) -> None:
        self._engine = engine
        self._window_s = window_s
        self._on_pass = on_pass
        self._forming: _Pass | None = None
        self._running: _Pass | None = None

    async def serve(self, plan: Plan, tally: RunTally, timeout_s: float) -> ShareOutcome:
        """Serve ``plan``'s full-keyspace passes in a shared pass, counting into ``tally``."""
        now = anyio.current_time()
        p = self._forming
        if p is None:
            p = self._forming = _Pass(start_at=now + self._window_s)
        member = _Member(plan, tally, now + timeout_s)
        p.members.append(member)
        try:
            if await self._until_started(p, member):
                await self._follow(p, member)
        finally:
            self._leave(p, member)
        if not p.started or member not in p.members:
            return ShareOutcome(credit=0, scan_work=False, callers=0)
        if p.shares is None:
            return ShareOutcome(credit=tally.deleted, scan_work=True, callers=1)
        position = p.members.index(member)
        return ShareOutcome(credit=p.shares.credit[position], scan_work=position == 0,
                            callers=len(p.members))

    async def _until_started(self, p: _Pass, member: _Member) -> bool:
        """Wait for the window and the previous pass; start ``p`` if nobody did. False: deadline."""
        with anyio.move_on_after(member.deadline - anyio.current_time()):
            await anyio.sleep_until(p.start_at)
            while not p.started:
                running = self._running
                if running is None:
                    self._start(p)
                    return True
                await running.finished.wait()
            return True
        member.timed_out = True
        return False

    def _start(self, p: _Pass) -> None:
        p.started = True
        if self._forming is p:
            self._forming = None
        self._running = p
        p.members = [m for m in p.members if not m.left]
        if len(p.members) > 1:
            p.merged = merge_plans([m.plan for m in p.members])
            p.shares = Shares(p.merged, [m.tally for m in p.members])
        if self._on_pass is not None:
            self._on_pass(len(p.members))
        log.debug("shared pass of %d calls starts", len(p.members))

    async def _follow(self, p: _Pass, member: _Member) -> None:
        """Drive the pass or wait for it, until it is done or ``member``'s deadline passes."""
        while not p.done:
            if p.driver is None:
                await self._drive(p, member)
                if member.timed_out:
                    return
                continue
            with anyio.move_on_after(member.deadline - anyio.current_time()):
                await p.changed.wait()
                continue
            member.timed_out = True
            return

    async def _drive(self, p: _Pass, member: _Member) -> None:
        """Run what is left of the pass in ``member``'s task, under ``member``'s deadline."""
        p.driver = member
        budget = max(member.deadline - anyio.current_time(), 0.0)
        if p.merged is None:  # alone: the caller's own plan, straight into its own tally
            run, plan, shares = member.tally, member.plan, None
        else:
            run = RunTally(len(p.merged.plan.patterns))
            plan, shares = p.merged.restricted(p.remaining), p.shares
            # What no run has proven covered stays uncovered, even if this one ends before it
            # gets to say.
            run.uncovered = p.remaining.copy()
        p.runs.append(run)
        try:
            await self._engine.run(plan, run, dry_run=False, shares=shares, timeout_s=budget)
            if run.timed_out:
                member.timed_out = True
            else:
                p.done = True
        finally:
            p.remaining = run.uncovered.copy()
            p.driver = None
            if p.done:
                self._finish(p)
            p.notify()

    def _leave(self, p: _Pass, member: _Member) -> None:
        """``member`` leaves: give it its coverage and figures; stop a pass nobody waits for."""
        member.left = True
        if p.merged is not None and member in p.members:
            _settle_share(p, member)
        elif not p.started or member not in p.members:
            member.tally.uncovered = SlotSet.from_ranges(
                (lo, hi) for scan in member.plan.passes for lo, hi in scan.slots.ranges())
            member.tally.slots_to_cover = len(member.tally.uncovered)
        if member.timed_out and not any("deadline" in m for m in member.tally.messages):
            member.tally.timed_out = True
            member.tally.messages.append("deadline passed before the shared pass finished")
        if p.started and not p.done and all(m.left for m in p.members) and p.driver is None:
            p.done = True  # everyone left: nobody wants the rest of this pass
            self._finish(p)
            p.notify()

    def _finish(self, p: _Pass) -> None:
        if self._running is p:
            self._running = None
        p.finished.set()


def _settle_share(p: _Pass, member: _Member) -> None:
    """Fill a caller's share tally: its coverage now, and the reads that served it."""
    tally = member.tally
    tally.uncovered = p.remaining.copy() if p.done else p.uncovered_now()
    tally.slots_to_cover = SLOT_COUNT
    tally.covered = SLOT_COUNT - len(tally.uncovered)
    for run in p.runs:
        tally.messages.extend(m for m in run.messages if m not in tally.messages)
        tally.errors.extend(run.errors)
        for addr, counts in run.nodes.items():
            tally.node(addr).add_work(counts)  # its keys were credited as replies came
    if not p.done:
        tally.timed_out = True
