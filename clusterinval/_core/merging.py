"""Shared passes: the patterns of concurrent calls served by one walk of the keyspace, each call
credited with exactly the keys its own patterns match. Pure logic, no I/O.

A call's plan splits in two: what is cheap and its own (exact keys, hash-tagged patterns) and the
full-keyspace prefix patterns, which join a shared pass. The shared pass runs one merged pass
whose patterns are the callers' patterns, each kept once; ``owners`` says which callers (and
which of their patterns) each merged pattern serves. As replies arrive, ``Shares`` credits every
caller whose pattern a key matches, so a key two callers asked for counts in both results, and
credits each key once (to its first owner) for the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from clusterinval._core.glob import Glob
from clusterinval._core.planning import Plan, ScanPass, shared_passes
from clusterinval._core.slots import SlotSet
from clusterinval._core.tally import RunTally
from clusterinval._core.values import NodeAddr, SlotBatch

__all__ = ["MergedPlan", "PatternIndex", "Shares", "combine", "merge_plans", "split_plan"]

Owner = tuple[int, int]  # (caller, index of the pattern in the caller's own list)


def split_plan(plan: Plan) -> tuple[Plan, Plan | None]:
    """``plan`` as (its own part: exact keys and one-slot passes, the part it may share).

    Only prefix patterns (``user:42:*``) are shared: one merged pass serves them all, so each
    key is found once and credited to every caller it matches. Other full-keyspace patterns keep
    their own passes (the whole plan is then the call's own).
    """
    full = tuple(p for p in plan.passes if p.single_slot is None)
    if not full or not all(g.prefix_only for p in full for g in p.globs):
        return plan, None
    own = Plan(keys=plan.keys, passes=tuple(p for p in plan.passes if p.single_slot is not None),
               patterns=plan.patterns, literal_origins=plan.literal_origins)
    return own, Plan(keys=(), passes=full, patterns=plan.patterns)


@dataclass(frozen=True, slots=True)
class MergedPlan:
    """One plan serving several callers' full-keyspace passes."""

    plan: Plan  # passes whose origins index ``owners`` (and ``plan.patterns``)
    owners: tuple[tuple[Owner, ...], ...]  # callers served by each merged pattern, in call order
    index: PatternIndex

    def restricted(self, slots: SlotSet) -> Plan:
        """The merged plan over ``slots`` only (what is left after a handed-over run)."""
        return Plan(keys=(), patterns=self.plan.patterns, passes=tuple(
            ScanPass(p.match, p.globs, p.slots.intersection(slots), p.origins)
            for p in self.plan.passes))


def merge_plans(plans: Sequence[Plan]) -> MergedPlan:
    """Merge the full-keyspace parts of several calls (in call order) into one plan."""
    by_pattern: dict[bytes, int] = {}
    globs: list[Glob] = []
    owners: list[list[Owner]] = []
    for caller, plan in enumerate(plans):
        for scan_pass in plan.passes:
            for glob, local in zip(scan_pass.globs, scan_pass.origins, strict=True):
                merged = by_pattern.get(glob.pattern)
                if merged is None:
                    merged = by_pattern[glob.pattern] = len(globs)
                    globs.append(glob)
                    owners.append([])
                owners[merged].append((caller, local))
    passes = shared_passes(list(enumerate(globs)))
    return MergedPlan(
        plan=Plan(keys=(), passes=tuple(passes), patterns=tuple(g.pattern for g in globs)),
        owners=tuple(tuple(o) for o in owners),
        index=PatternIndex(globs),
    )


class PatternIndex:
    """Which of many globs a key matches, at a cost that grows with the number of distinct
    literal-prefix lengths, not with the number of globs."""

    def __init__(self, globs: Sequence[Glob]) -> None:
        self._by_prefix: dict[int, dict[bytes, list[tuple[int, Glob]]]] = {}
        for i, g in enumerate(globs):
            prefix = g.literal_prefix
            self._by_prefix.setdefault(len(prefix), {}).setdefault(prefix, []).append((i, g))
        self._lengths = sorted(self._by_prefix.items())

    def matches(self, key: bytes) -> list[int]:
        """Indexes of the globs ``key`` matches, in ascending order."""
        out: list[int] = []
        size = len(key)
        for length, table in self._lengths:
            if length > size:
                break
            for i, g in table.get(key[:length], ()):
                if g.match(key):
                    out.append(i)
        if len(out) > 1:
            out.sort()
        return out


class Shares:
    """Credits each caller of a shared pass with the keys its patterns match, as replies arrive.

    ``tallies[c]`` is caller c's tally for its share (its own pattern indexes); ``credit[c]`` the
    keys whose deletion the metrics attribute to caller c (each key once, to its first owner).
    """

    def __init__(self, merged: MergedPlan, tallies: Sequence[RunTally]) -> None:
        self._owners = merged.owners
        self._index = merged.index
        self._tallies = tallies
        self.credit = [0] * len(tallies)

    def step(self, node: NodeAddr, origins: Sequence[int], per_first: Mapping[int, int],
             per_all: Mapping[int, int], left: Sequence[bytes]) -> None:
        """A server-side step: each key matched once per caller, deleted unless left behind.

        ``per_first`` and ``per_all`` count by index into ``origins``, only patterns that
        matched: the work is per match, not per merged pattern.
        """
        owners = self._owners
        for i, every in per_all.items():
            for caller, local in owners[origins[i]]:
                tally = self._tallies[caller]
                counts = tally.node(node)
                counts.matched += every
                counts.deleted += every
                tally.per_pattern[local] += every
        for i, first in per_first.items():
            self.credit[owners[origins[i]][0][0]] += first
        # The node could not delete these itself: they count once their deletion is confirmed.
        for key in left:
            for caller in self._callers(key):
                self._tallies[caller].node(node).deleted -= 1

    def found(self, node: NodeAddr, keys: Sequence[bytes]) -> None:
        """Keys a client-side read found matching: count them for each caller they match."""
        for key in keys:
            merged = self._index.matches(key)
            if not merged:
                continue
            self.credit[self._owners[merged[0]][0][0]] += 1
            firsts: dict[int, int] = {}  # caller -> its first pattern (by its own order) matched
            for m in merged:
                for caller, local in self._owners[m]:
                    if local < firsts.get(caller, local + 1):
                        firsts[caller] = local
            for caller, local in firsts.items():
                tally = self._tallies[caller]
                tally.node(node).matched += 1
                tally.per_pattern[local] += 1

    def confirmed(self, node: NodeAddr, batches: Sequence[SlotBatch], n: int) -> None:
        """A deletion the node confirmed: credited to callers only when every key is accounted for.

        When fewer keys were removed than sent (another client deleted some first), which ones
        went is unknown: no caller is credited, so no result claims a deletion it cannot prove.
        """
        if n != sum(len(keys) for _slot, keys in batches):
            return
        for _slot, keys in batches:
            for key in keys:
                for caller in self._callers(key):
                    self._tallies[caller].node(node).deleted += 1

    def _callers(self, key: bytes) -> set[int]:
        return {caller for m in self._index.matches(key) for caller, _ in self._owners[m]}


def combine(own: RunTally, share: RunTally) -> RunTally:
    """One call's tally: its own run plus its share of a shared pass."""
    out = RunTally(len(own.per_pattern))
    out.absorb(own)
    out.absorb(share)
    out.exact_deleted = own.exact_deleted
    return out
