"""ClusterInvalidator: the public async API — validation, the engine run, metrics, logs, results."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import replace
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from clusterinval import tracing
from clusterinval._core.costing import shapes
from clusterinval._core.merging import combine, split_plan
from clusterinval._core.planning import Plan, as_list, make_plan, unique_keys
from clusterinval._core.pressure import PatternPressure, shape_of
from clusterinval._core.slots import SlotSet
from clusterinval._core.tags import tag_slot, validate_tags
from clusterinval._core.tally import ProgressWatch, RunTally
from clusterinval._core.values import NodeAddr
from clusterinval._engine.explain import explain_plan
from clusterinval._engine.retry import leading_error
from clusterinval._engine.run import Engine
from clusterinval._engine.sharing import SharedPasses, ShareOutcome
from clusterinval._engine.slotcall import SlotCaller
from clusterinval._engine.tagbatch import TagBatches
from clusterinval._engine.tagindex import TagIndex
from clusterinval._engine.tagtake import TagOutcome, TagTaker
from clusterinval._engine.topology import Topology
from clusterinval._io.protocol import ClusterIO
from clusterinval._io.redis_io import CONNECTION_OPTIONS, RedisClusterIO
from clusterinval.errors import (
    ClusterConnectionError,
    ClusterInvalError,
    ClusterPermissionError,
    InvalidationError,
    InvalidInputError,
)
from clusterinval.events import publish_event
from clusterinval.metrics import Metrics, Outcome
from clusterinval.options import InvalidatorOptions
from clusterinval.result import Explanation, InvalidationResult, NodeResult, TagGcResult
from clusterinval.tagging import TaggedWriter

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from clusterinval.rules import RuleSet

__all__ = ["ClusterInvalidator"]

log = logging.getLogger("clusterinval")


class ClusterInvalidator:
    """Invalidates exact keys and glob patterns on a Redis Cluster (or a standalone server)."""

    def __init__(
        self,
        client: RedisCluster | Redis | None = None,
        *,
        options: InvalidatorOptions | None = None,
        registry: CollectorRegistry | None = None,
        metrics: Metrics | None = None,
        rules: RuleSet | None = None,
        **overrides: Any,
    ) -> None:
        self._options = (options or InvalidatorOptions()).with_overrides(**overrides)
        self._client = client
        self._topology: Topology | None = None
        self._engine: Engine | None = None
        self._sharing: SharedPasses | None = None
        self._tag_taker: TagTaker | None = None
        self._tag_batches: TagBatches | None = None
        self._tag_index: TagIndex | None = None
        self._metrics = metrics or Metrics(
            registry, max_operations=self._options.max_operation_names
        )
        self._rules = rules
        self._open_lock = anyio.Lock()
        self._pressure = PatternPressure()
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        registry: CollectorRegistry | None = None,
        metrics: Metrics | None = None,
        rules: RuleSet | None = None,
        **options: Any,
    ) -> ClusterInvalidator:
        """An invalidator for the cluster (or standalone server) at ``url``.

        Keyword options are library options (see ``InvalidatorOptions``) or connection settings
        such as ``password``, ``username``, ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``.
        """
        if not isinstance(url, str) or not url:
            raise InvalidInputError("url must be a redis:// or rediss:// URL")
        conn = {k: options.pop(k) for k in list(options) if k in CONNECTION_OPTIONS}
        inv = cls(None, registry=registry, metrics=metrics, rules=rules, **options)
        io, seeds = RedisClusterIO.from_url(url, **conn)
        inv._attach(io, seeds)
        return inv

    @classmethod
    def _from_io(
        cls, io: ClusterIO, seeds: Sequence[NodeAddr], *,
        registry: CollectorRegistry | None = None, **options: Any,
    ) -> ClusterInvalidator:
        """An invalidator on any implementation of the node seam (the in-memory cluster)."""
        inv = cls(None, registry=registry, **options)
        inv._attach(io, seeds)
        return inv

    def _attach(self, io: ClusterIO, seeds: Sequence[NodeAddr]) -> None:
        # A topology read waits as long as one command may take on the wire.
        timeout = (io.socket_timeout if isinstance(io, RedisClusterIO)
                   else self._options.command_timeout_s)
        self._topology = Topology(io, seeds, timeout_s=timeout)
        self._engine = Engine(self._topology, self._options)
        if self._options.shared_passes:
            self._sharing = SharedPasses(self._engine, self._options.gather_window_s,
                                         on_pass=self._metrics.shared_pass)
        caller = SlotCaller(self._topology, self._engine.policy, self._options.command_timeout_s)
        self._tag_taker = TagTaker(self._engine, caller)
        if self._options.shared_passes:
            self._tag_batches = TagBatches(self._engine, self._tag_taker)
        self._tag_index = TagIndex(self._topology, caller, self._options.command_timeout_s)

    @property
    def options(self) -> InvalidatorOptions:
        """The options in force."""
        return self._options

    @property
    def metrics(self) -> Metrics:
        """The metrics this invalidator records into."""
        return self._metrics

    async def __aenter__(self) -> ClusterInvalidator:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Connect and read the cluster's topology; ClusterConnectionError when unreachable."""
        engine = await self._ensure_engine()
        await engine.ensure_view()

    async def aclose(self) -> None:
        """Close the connections this invalidator opened (a caller's client stays open)."""
        self._closed = True
        if self._tag_batches is not None:
            await self._tag_batches.flush()
        if self._topology is not None:
            await self._topology.aclose()

    async def _ensure_engine(self) -> Engine:
        if self._closed:
            raise ClusterInvalError("this ClusterInvalidator is closed")
        if self._engine is not None:
            return self._engine
        async with self._open_lock:
            if self._engine is None:
                assert self._client is not None
                try:
                    io, seeds = await RedisClusterIO.from_client(self._client)
                except (RedisError, OSError) as exc:
                    raise ClusterConnectionError(
                        f"could not reach the cluster through the given client: {exc}"
                    ) from None
                self._attach(io, seeds)
                assert self._engine is not None
        return self._engine

    async def invalidate(
        self,
        keys: Iterable[str | bytes] | None = None,
        patterns: Iterable[str | bytes] | None = None,
        operation_name: str = "cache",
        dry_run: bool = False,
        *,
        allow_match_all: bool = False,
        progress: ProgressWatch | None = None,
        tags: Iterable[str | bytes] | None = None,
    ) -> InvalidationResult:
        """Delete ``keys``, the keys matching ``patterns`` and the keys indexed under ``tags``;
        InvalidationError when incomplete.

        With ``dry_run`` nothing is deleted: ``matched`` and ``sample`` tell what would go.
        """
        label = self._metrics.operation_label(operation_name)  # validates the name
        operation = operation_name
        try:
            if type(dry_run) is not bool:
                raise InvalidInputError(f"dry_run must be True or False, got {dry_run!r}")
            tag_names = validate_tags(tags)
            plan = make_plan(
                keys, patterns, allow_match_all=allow_match_all,
                max_keys=self._options.max_keys_per_call, allow_empty=bool(tag_names),
            )
        except InvalidInputError:
            self._metrics.error(label, "input")
            raise
        engine = self._engine
        if engine is None or self._closed:
            engine = await self._ensure_engine()
        started = time.perf_counter()
        self._metrics.run_started(label)
        outcome_label: Outcome = "failed"
        result: InvalidationResult | None = None
        parts = _Parts(plan, tag_names)
        with tracing.invalidation_span(
            operation, keys=len(plan.keys) + len(plan.literal_origins),
            patterns=len(plan.patterns), dry_run=dry_run,
        ) as span:
            try:
                if tag_names or plan.passes:
                    await self._execute(engine, parts, dry_run, progress)
                else:  # exact keys only, the common call: straight to the engine
                    await engine.run(plan, parts.own, dry_run=dry_run, watch=progress)
                raw = parts.tally()
                result = self._result(operation, parts, raw, dry_run,
                                      time.perf_counter() - started)
                outcome_label = "complete" if result.complete else "partial"
                for _node, kind in raw.errors:
                    self._metrics.error(label, kind)
            except (ClusterPermissionError, ClusterConnectionError) as exc:
                refused = isinstance(exc, ClusterPermissionError)
                self._metrics.error(label, "permission" if refused else "connection")
                span.record_error(exc)
                # What the run did before it stopped travels with the error.
                raw = parts.tally()
                exc.result = self._result(operation, parts, raw, dry_run,
                                          time.perf_counter() - started, failed=True)
                log.warning("invalidation %s %s after deleting %d keys: %s", operation,
                            "refused" if refused else "failed", raw.deleted, exc)
                raise
            except anyio.get_cancelled_exc_class():
                log.warning("invalidation %s cancelled after %.3f s", operation,
                            time.perf_counter() - started)
                raise
            finally:
                # Whatever ended the run, every deletion a node confirmed is counted.
                final = result or self._result(operation, parts, parts.tally(), dry_run,
                                               time.perf_counter() - started, failed=True)
                self._metrics.run_finished(label, parts.for_metrics(final), outcome_label)
                if parts.tags is not None and not dry_run:
                    self._metrics.tags_finished(label, parts.tags.sizes,
                                                sum(parts.tags.removed))
            span.record(result)
        self._log(result)
        if plan.passes and (parts.outcome is None or parts.outcome.scan_work):
            self._watch_pressure(plan, result)  # a shared reading counts once
        if self._options.publish_events and not dry_run:
            keys, patterns = parts.event_content()
            await publish_event(self._topology_or_fail(), result, keys, patterns)
        if not result.complete:
            raise InvalidationError(_incomplete_message(result), result)
        return result

    async def _execute(self, engine: Engine, parts: _Parts, dry_run: bool,
                       progress: ProgressWatch | None) -> None:
        """Run the call: its keys and patterns, and beside them its tags."""
        if not parts.tag_names:
            await self._run_plan(engine, parts, dry_run, progress)
            return
        taker = self._tag_taker
        assert taker is not None

        async def run_tags() -> None:
            batches = self._tag_batches
            if batches is None or dry_run:
                parts.tags = await taker.run(parts.tag_names, len(parts.plan.patterns),
                                             dry_run=dry_run)
            else:
                parts.tags = await batches.run(parts.tag_names, len(parts.plan.patterns))

        plan = parts.plan
        if not (plan.keys or plan.literal_origins or plan.passes):
            await run_tags()  # tags alone: nothing to run beside them
            return
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_tags)
                if parts.plan.keys or parts.plan.literal_origins or parts.plan.passes:
                    await self._run_plan(engine, parts, dry_run, progress)
        except BaseExceptionGroup as group:
            raise leading_error(group) from group

    async def _run_plan(self, engine: Engine, parts: _Parts, dry_run: bool,
                        progress: ProgressWatch | None) -> None:
        """Keys and patterns: alone, or the full-keyspace part in a shared pass."""
        sharing = self._sharing
        if sharing is None or dry_run or progress is not None or not parts.plan.passes:
            await engine.run(parts.plan, parts.own, dry_run=dry_run, watch=progress)
            return
        own, shared = split_plan(parts.plan)
        if shared is None:
            await engine.run(parts.plan, parts.own, dry_run=False)
            return
        parts.share = RunTally(len(parts.plan.patterns))
        try:
            async with anyio.create_task_group() as tg:
                if own.keys or own.literal_origins or own.passes:
                    tg.start_soon(partial(engine.run, own, parts.own, dry_run=False))
                parts.outcome = await sharing.serve(shared, parts.share, self._options.timeout_s)
        except BaseExceptionGroup as group:
            raise leading_error(group) from group

    def _watch_pressure(self, plan: Plan, result: InvalidationResult) -> None:
        """Warn once per pattern shape that reads the whole keyspace faster than sustainable."""
        if all(p.single_slot is not None for p in plan.passes):
            return  # exact keys and one-slot patterns: nothing reads the whole keyspace
        now = time.monotonic()
        for shape in shapes(plan):
            if shape.cost in ("prefix-walk", "full-scan"):
                warning = self._pressure.observe(shape_of(plan.patterns[shape.index]), now,
                                                 result.duration_s)
                if warning is not None:
                    log.warning("%s", warning)

    def _topology_or_fail(self) -> Topology:
        if self._topology is None:
            raise ClusterInvalError("this ClusterInvalidator is not open")
        return self._topology

    async def invalidate_rule(
        self, name: str, *, rules: RuleSet | None = None, dry_run: bool = False, **params: Any
    ) -> InvalidationResult:
        """Run the named rule (see ``clusterinval.rules``) with ``params`` filled in."""
        from clusterinval.rules import render_rule

        keys, patterns, operation = render_rule(name, rules or self._rules, **params)
        return await self.invalidate(keys, patterns, operation, dry_run)

    async def explain(
        self,
        keys: Iterable[str | bytes] | None = None,
        patterns: Iterable[str | bytes] | None = None,
        *,
        allow_match_all: bool = False,
    ) -> Explanation:
        """What invalidating ``keys`` and ``patterns`` would cost, pattern by pattern.

        Reads only (DBSIZE of each primary, the keys of a hash-tagged slot); deletes nothing.
        """
        plan = make_plan(keys, patterns, allow_match_all=allow_match_all,
                         max_keys=self._options.max_keys_per_call)
        engine = await self._ensure_engine()
        return await explain_plan(engine, plan, self._options.command_timeout_s)

    async def tag(self, keys: Iterable[str | bytes], tags: Iterable[str | bytes]) -> int:
        """Index existing ``keys`` under ``tags``; how many (key, tag) entries were new.

        Keys that do not exist now are not indexed. Each tag's index lives as long as its
        longest-lived member.
        """
        tag_names = validate_tags(tags)
        if not tag_names:
            raise InvalidInputError("tag() needs at least one tag")
        max_keys = self._options.max_keys_per_call
        raw = as_list("keys", keys, max_keys)
        if len(raw) > max_keys:
            raise InvalidInputError(f"more than max_keys_per_call={max_keys} keys in one call")
        members = list(unique_keys(raw))
        await self._ensure_engine()
        assert self._tag_index is not None
        return await self._tag_index.tag(members, tag_names) if members else 0

    @contextlib.asynccontextmanager
    async def tagged_writer(self, tags: Iterable[str | bytes]) -> AsyncIterator[TaggedWriter]:
        """A writer whose ``set`` stores entries and indexes them under ``tags``."""
        tag_names = validate_tags(tags)
        if not tag_names:
            raise InvalidInputError("tagged_writer() needs at least one tag")
        await self._ensure_engine()
        assert self._tag_index is not None
        yield TaggedWriter(self._tag_index, tag_names)

    async def gc_tags(self, tags: Iterable[str | bytes] | None = None) -> TagGcResult:
        """Drop index members whose keys no longer exist (every tag when ``tags`` is None)."""
        tag_names = None if tags is None else validate_tags(tags)
        await self._ensure_engine()
        assert self._tag_index is not None
        return await self._tag_index.gc(tag_names)

    def progress_watch(self) -> ProgressWatch:
        """A live counter object to pass as ``progress=`` and read with ``.snapshot()``."""
        return ProgressWatch()

    # -- results ------------------------------------------------------------------------------

    def _result(
        self, operation: str, parts: _Parts, raw: RunTally, dry_run: bool, duration: float,
        *, failed: bool = False,
    ) -> InvalidationResult:
        plan = parts.plan
        # One pass over the nodes builds their figures and the totals (a small call's result is
        # a good part of its cost).
        deleted = matched = scanned = 0
        node_results: list[NodeResult] = []
        for node, c in (sorted(raw.nodes.items()) if len(raw.nodes) > 1 else raw.nodes.items()):
            deleted += c.deleted
            matched += c.matched
            scanned += c.scanned
            node_results.append(NodeResult(
                node.name, c.deleted, c.matched, c.scanned, c.scan_calls, c.unlink_calls,
                round(c.busy_s, 6), "; ".join(c.errors[-3:]) if c.errors else None))
        return InvalidationResult(
            operation=operation,
            deleted=deleted,
            matched=matched,
            scanned=scanned,
            complete=raw.complete and not failed,
            duration_s=duration,
            dry_run=dry_run,
            nodes=tuple(node_results),
            uncovered_slots=tuple(raw.uncovered.ranges()) if raw.uncovered else (),
            sample=tuple(raw.sample),
            errors=tuple(raw.messages),
            keys_requested=len(plan.keys) + len(plan.literal_origins),
            patterns_requested=len(plan.patterns),
            exact_deleted=raw.exact_deleted,
            per_pattern=tuple(
                (p.decode("utf-8", "backslashreplace"), n)
                for p, n in zip(plan.patterns, raw.per_pattern, strict=True)
            ) if plan.patterns else (),
            per_tag=parts.per_tag() if parts.tag_names else (),
            tags_requested=len(parts.tag_names),
        )

    @staticmethod
    def _log(result: InvalidationResult) -> None:
        verb = "would invalidate" if result.dry_run else "invalidated"
        count = result.matched if result.dry_run else result.deleted
        level = logging.INFO if result.complete else logging.WARNING
        log.log(
            level,
            "%s %s %d keys (matched %d, scanned %d) in %.3f s%s",
            result.operation, verb, count, result.matched, result.scanned, result.duration_s,
            "" if result.complete else f"; {result.uncovered_slot_count} slots NOT covered",
        )


# Tagged keys an invalidation event lists one by one (a larger set makes it say "everything").
_EVENT_TAGGED_KEYS = 100_000


class _Parts:
    """One call's tallies: its own run and, when it joined a shared pass, its share of it."""

    def __init__(self, plan: Plan, tag_names: tuple[bytes, ...] = ()) -> None:
        self.plan = plan
        self.tag_names = tag_names
        self.own = RunTally(len(plan.patterns))
        self.share: RunTally | None = None
        self.outcome: ShareOutcome | None = None
        self.tags: TagOutcome | None = None

    def tally(self) -> RunTally:
        """What the call did, all parts together."""
        out = self.own if self.share is None else combine(self.own, self.share)
        if self.tags is not None:
            out = combine(out, self.tags.tally)
        elif self.tag_names:
            # The tags never reported: their indexes' slots are not covered.
            out = combine(out, RunTally(len(self.plan.patterns)))
            out.uncovered.update(SlotSet(tag_slot(t) for t in self.tag_names))
        return out

    def event_content(self) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        """The keys and patterns an invalidation event names for this call.

        Tagged keys are named one by one; past ``_EVENT_TAGGED_KEYS`` of them the event carries
        the pattern ``*`` instead, and subscribers drop their whole local cache.
        """
        plan = self.plan
        keys = plan.keys + tuple(plan.literal_origins)
        members = self.tags.members if self.tags is not None else []
        if len(members) > _EVENT_TAGGED_KEYS or (self.tag_names and self.tags is None):
            return keys, (*plan.patterns, b"*")
        return keys + tuple(members), plan.patterns

    def per_tag(self) -> tuple[tuple[str, int], ...]:
        """Keys removed (a dry run: found) through each tag."""
        removed = self.tags.removed if self.tags is not None else [0] * len(self.tag_names)
        return tuple((t.decode("utf-8", "backslashreplace"), n)
                     for t, n in zip(self.tag_names, removed, strict=True))

    def for_metrics(self, result: InvalidationResult) -> InvalidationResult:
        """``result`` as the metrics count it: a key a shared pass deleted for several calls
        counts once (for the first), and the pass's reads count for one of its calls."""
        if self.share is None:
            return result
        own = self.own
        credit = self.outcome.credit if self.outcome is not None else 0
        if self.tags is not None:  # what the tags removed counts as the call's own
            credit += self.tags.tally.deleted
        scan_work = self.outcome is not None and self.outcome.scan_work
        nodes = result.nodes if scan_work else tuple(
            NodeResult(node=addr.name, deleted=c.deleted, matched=c.matched, scanned=c.scanned,
                       scan_calls=c.scan_calls, unlink_calls=c.unlink_calls,
                       duration_s=round(c.busy_s, 6))
            for addr, c in sorted(own.nodes.items()))
        return replace(
            result, deleted=own.deleted + credit, matched=own.matched + credit,
            scanned=result.scanned if scan_work else own.scanned, nodes=nodes)


def _incomplete_message(result: InvalidationResult) -> str:
    why = "; ".join(result.errors[-3:]) or "nodes failed or slots moved"
    return (
        f"invalidation {result.operation!r} incomplete: {result.uncovered_slot_count} of 16384 "
        f"slots not covered ({why}); deleted {result.deleted} keys before stopping"
    )

