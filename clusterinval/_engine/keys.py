"""What happens to keys a read found: the library's own glob decides, matches are counted, and
(unless it is a dry run) deleted on their owners, grouped by slot."""

from __future__ import annotations

from clusterinval._core.batching import SlotBatcher, group_by_slot
from clusterinval._core.planning import ScanPass
from clusterinval._core.values import NodeAddr
from clusterinval._engine.context import RunContext

__all__ = ["KeySink"]


class KeySink:
    """Takes the keys one pass read on one node."""

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx
        self._exact_names: frozenset[bytes] | None = None

    async def consume(self, node: NodeAddr, scan_pass: ScanPass, index: int, keys: list[bytes],
                      batcher: SlotBatcher | None) -> None:
        """Count ``keys``' matches on ``node`` and delete them (through ``batcher`` if given)."""
        ctx = self._ctx
        matched = self._filter(scan_pass, keys)
        if matched and ctx.dry_run:
            matched = self._first_count(index, matched)
        if not matched:
            return
        ctx.tally.node(node).matched += len(matched)
        if ctx.shares is not None:
            ctx.shares.found(node, matched)
        if ctx.dry_run:
            ctx.sample(matched)
            return
        ready = batcher.add(matched) if batcher is not None else group_by_slot(
            matched, ctx.options.unlink_batch)
        if ready:
            await ctx.delete(ready)

    def _first_count(self, index: int, keys: list[bytes]) -> list[bytes]:
        """The keys a dry run counts in pass ``index``: those no exact key or earlier pass names.

        Nothing is deleted in a dry run, so a key matching patterns of two passes (or also named
        as an exact key) is found twice; it is counted where it is first asked for.
        """
        plan = self._ctx.plan
        earlier = [g for p in plan.passes[:index] for g in p.globs]
        if self._exact_names is None:
            self._exact_names = frozenset((*plan.keys, *plan.literal_origins))
        exact = self._exact_names
        if not earlier and not exact:
            return keys
        return [k for k in keys if k not in exact and not any(g.match(k) for g in earlier)]

    def _filter(self, scan_pass: ScanPass, keys: list[bytes]) -> list[bytes]:
        per_pattern = self._ctx.tally.per_pattern
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
