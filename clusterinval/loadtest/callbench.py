"""The call-level benchmarks: many concurrent callers (STORM) and small calls one at a time (SMALL).

S1-MP time one large invalidation; these time what an application does all day:

* **STORM**: ``calls`` per-entity patterns ``user:<i>:*`` (distinct entities of the keyspace,
  each owning ``STORM_KEYS_PER_ENTITY`` keys), invalidated by ``callers`` concurrent tasks
  through one held ``ClusterInvalidator``; beside it redis-py at the same concurrency, each call
  ``scan_iter(match=pattern, count=1000)`` over the cluster and ``unlink`` of what it found, on
  one held ``redis.asyncio.RedisCluster``. Calls per second, per-call p50/p99, connection errors,
  and the check: every target key gone, nothing else (DBSIZE arithmetic).
* **SMALL**: on held clients, sequential calls: 3 exact keys in 3 slots (on 3 primaries where
  there are 3) through ``invalidate(keys=...)`` and through redis-py's ``unlink(*keys)``, and a
  hash-tagged pattern ``{t:<i>}:*`` matching 2 keys through ``invalidate(patterns=...)``;
  interleaved, the keys re-created between calls outside the timed section by a plain RESP
  client (``plainresp``), so that neither measured client's code runs between the timed calls.

Each measurement runs in a fresh child process (``python -m clusterinval.loadtest.callbench
SPEC_JSON``, the same protocol as ``peers``); the parent fills the cluster and verifies.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import anyio

from clusterinval.loadtest.report import LatencySummary

__all__ = [
    "STORM_KEYS_PER_ENTITY",
    "SmallLayout",
    "StormLayout",
    "main",
    "small_layout",
    "storm_layout",
]

# Keys each storm entity owns (``user:<i>:<field>``), and the fields.
_FIELDS = ("profile", "settings", "feed", "perms", "session")
STORM_KEYS_PER_ENTITY = len(_FIELDS)
# Entities in the storm's keyspace per key of the fill: 1 in 100 (10,000 users in 1M keys).
_ENTITY_SHARE = 100
# SMALL: distinct key triples and tags the calls rotate over.
_SMALL_POOL = 100
# SMALL: calls of each kind not counted (connections opened, scripts loaded, caches warm).
_SMALL_WARMUP = 20
# redis-py's storm calls: SCAN COUNT and keys per UNLINK (as the S1-S4 redis-py tool).
_SCAN_COUNT = 1000
_UNLINK_BATCH = 500


@dataclass(frozen=True, slots=True)
class StormLayout:
    """The storm's keyspace and its targets."""

    size: int
    entities: int
    targets: tuple[int, ...]  # entity ids whose keys the calls delete, one call each

    @property
    def patterns(self) -> list[str]:
        """One pattern per call."""
        return [f"user:{i}:*" for i in self.targets]

    def entity_keys(self, i: int) -> list[str]:
        """The keys entity ``i`` owns."""
        return [f"user:{i}:{f}" for f in _FIELDS]

    def target_keys(self) -> list[str]:
        """Every key the calls must delete."""
        return [k for i in self.targets for k in self.entity_keys(i)]

    def keys(self) -> Iterator[str]:
        """Every key of the fill (``size`` of them)."""
        for i in range(self.entities):
            yield from self.entity_keys(i)
        for j in range(self.size - self.entities * STORM_KEYS_PER_ENTITY):
            yield f"cache:item:{j}"

    @property
    def expected_deleted(self) -> int:
        """Keys the calls delete together."""
        return len(self.targets) * STORM_KEYS_PER_ENTITY


def storm_layout(size: int, calls: int) -> StormLayout:
    """The storm for a keyspace of ``size`` keys: ``calls`` distinct entities spread over all."""
    entities = max(calls, size // _ENTITY_SHARE)
    if entities * STORM_KEYS_PER_ENTITY > size:
        raise ValueError(f"{calls} storm calls need at least "
                         f"{calls * STORM_KEYS_PER_ENTITY} keys, got {size}")
    targets = tuple(n * entities // calls for n in range(calls))
    return StormLayout(size, entities, targets)


@dataclass(frozen=True, slots=True)
class SmallLayout:
    """The small calls' keyspace: filler plus rotating exact-key triples and tagged pairs."""

    size: int
    triples: tuple[tuple[str, str, str], ...]
    tags: tuple[int, ...]

    @staticmethod
    def tag_keys(tag: int) -> list[str]:
        """The two keys of one hash tag."""
        return [f"{{t:{tag}}}:a", f"{{t:{tag}}}:b"]

    def call_keys(self) -> list[str]:
        """The keys the timed calls delete (and the set-up re-creates)."""
        return [k for t in self.triples for k in t] + [k for t in self.tags
                                                        for k in self.tag_keys(t)]

    def key_owners(self, owners: list[tuple[str, int] | None]) -> dict[str, tuple[str, int]]:
        """The primary of each of the calls' keys, from the slot owners ``owners``."""
        from clusterinval._core.slots import key_slot

        found: dict[str, tuple[str, int]] = {}
        for key in self.call_keys():
            owner = owners[key_slot(key.encode())]
            if owner is None:
                raise RuntimeError(f"SMALL: no primary serves the slot of {key!r}")
            found[key] = owner
        return found

    def keys(self) -> Iterator[str]:
        """Every key of the fill (``size`` of them)."""
        own = self.call_keys()
        yield from own
        for j in range(self.size - len(own)):
            yield f"cache:item:{j}"


def small_layout(size: int, owners: list[tuple[str, int] | None]) -> SmallLayout:
    """Triples of keys in 3 different slots, on 3 different primaries when there are 3."""
    from clusterinval._core.slots import key_slot

    distinct_owners = len({o for o in owners if o is not None}) >= 3
    waiting: dict[object, list[str]] = {}  # keys by owner (or by slot), oldest first
    triples: list[tuple[str, str, str]] = []
    n = 0
    while len(triples) < _SMALL_POOL:
        key = f"small:{n}"
        n += 1
        slot = key_slot(key.encode())
        waiting.setdefault(owners[slot] if distinct_owners else slot, []).append(key)
        ready = [ks for ks in waiting.values() if ks]
        if len(ready) >= 3:
            a, b, c = (ks.pop(0) for ks in ready[:3])
            triples.append((a, b, c))
    return SmallLayout(size, tuple(triples), tuple(range(_SMALL_POOL)))


# -- child side: the measurements -----------------------------------------------------------------


def _summary(latencies: list[float]) -> dict[str, Any]:
    return LatencySummary.of(latencies).to_dict()


async def _callers(spec: dict[str, Any], caller: Callable[[], Coroutine[Any, Any, None]],
                   ready: Callable[[], None]) -> float:
    """Run ``spec["callers"]`` concurrent callers once the parent is told ready; wall seconds."""
    ready()
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(int(spec["callers"])):
            tg.start_soon(caller)
    return time.perf_counter() - t0


async def _storm_clusterinval(spec: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from clusterinval._invalidator import ClusterInvalidator
    from clusterinval.errors import ClusterConnectionError, InvalidationError

    registry = CollectorRegistry()
    inv = ClusterInvalidator.from_url(spec["url"], registry=registry)
    await inv.open()
    patterns: list[str] = spec["patterns"]
    latencies: list[float] = []
    deleted = 0
    failed: list[str] = []
    raised_connection = 0
    queue = iter(patterns)

    async def caller() -> None:
        nonlocal deleted, raised_connection
        for pattern in queue:  # the callers share one iterator: each call is made once
            t0 = time.perf_counter()
            try:
                result = await inv.invalidate(patterns=[pattern], operation_name="storm")
                deleted += result.deleted
            except InvalidationError as exc:
                deleted += exc.result.deleted
                failed.append(str(exc)[:200])
            except ClusterConnectionError as exc:
                raised_connection += 1
                failed.append(str(exc)[:200])
            latencies.append(time.perf_counter() - t0)

    try:
        wall = await _callers(spec, caller, ready)
    finally:
        await inv.aclose()
    errors = {kind: int(registry.get_sample_value(
        "clusterinval_errors_total", {"operation": "storm", "error": kind}) or 0)
        for kind in ("connection", "timeout")}
    return {"wall_s": wall, "calls": len(latencies), "deleted": deleted,
            "latency": _summary(latencies), "failed": len(failed), "failures": failed[:5],
            "connection_errors": errors["connection"] + raised_connection,
            "timeout_errors": errors["timeout"]}


async def _storm_redis_py(spec: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    from redis.asyncio import RedisCluster
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    rc = RedisCluster.from_url(spec["url"])
    await rc.initialize()
    patterns: list[str] = spec["patterns"]
    latencies: list[float] = []
    deleted = 0
    failed: list[str] = []
    connection_errors = 0
    queue = iter(patterns)

    async def one(pattern: str) -> int:
        n = 0
        batch: list[bytes] = []
        async for k in rc.scan_iter(match=pattern, count=_SCAN_COUNT):
            batch.append(k)
            if len(batch) >= _UNLINK_BATCH:
                n += int(await rc.unlink(*batch))
                batch = []
        if batch:
            n += int(await rc.unlink(*batch))
        return n

    async def caller() -> None:
        nonlocal deleted, connection_errors
        for pattern in queue:
            t0 = time.perf_counter()
            try:
                n = await one(pattern)  # not ``deleted += await``: callers run concurrently
                deleted += n
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                connection_errors += 1
                failed.append(f"{type(exc).__name__}: {exc}"[:200])
            except RedisError as exc:
                failed.append(f"{type(exc).__name__}: {exc}"[:200])
            latencies.append(time.perf_counter() - t0)

    try:
        wall = await _callers(spec, caller, ready)
    finally:
        await rc.aclose()
    return {"wall_s": wall, "calls": len(latencies), "deleted": deleted,
            "latency": _summary(latencies), "failed": len(failed), "failures": failed[:5],
            "connection_errors": connection_errors, "timeout_errors": 0}


async def _small(spec: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    import redis
    from prometheus_client import CollectorRegistry
    from redis.asyncio import RedisCluster

    from clusterinval._invalidator import ClusterInvalidator
    from clusterinval.loadtest.plainresp import PlainSetter

    url = spec["url"]
    inv = ClusterInvalidator.from_url(url, registry=CollectorRegistry())
    await inv.open()
    rc = RedisCluster.from_url(url)  # the peer: redis-py, one held client
    await rc.initialize()
    # Re-creates and checks the keys outside the timed sections, with code of neither client
    # (which would time that client warm and the other cold).
    setter = PlainSetter(url, {k: (h, p) for k, (h, p) in spec["owners"].items()})
    triples: list[list[str]] = spec["triples"]
    tags: list[int] = spec["tags"]
    calls = int(spec["calls"])
    timed: dict[str, list[float]] = {"exact": [], "redis_py_unlink": [], "tagged": []}
    mismatches: list[str] = []
    survivors = 0
    # redis-py (4.3 and later) splits a multi-key UNLINK of a cluster client by slot: one UNLINK
    # per slot, sent as one pipeline to the owners.
    unlink_mode = f"redis-py {redis.__version__}: unlink(*keys), one UNLINK per slot, pipelined"

    async def redis_py_unlink(keys: list[str]) -> int:
        return int(await rc.unlink(*keys))

    async def timed_call(kind: str, keys: list[str], call: Callable[[], Any], warm: bool
                         ) -> None:
        nonlocal survivors
        await setter.each(b"SET", keys, b"v")
        t0 = time.perf_counter()
        n = await call()
        dt = time.perf_counter() - t0
        if not warm:
            timed[kind].append(dt)
        if n != len(keys):
            mismatches.append(f"{kind}: deleted {n} of {keys}")
        survivors += await setter.each(b"EXISTS", keys)

    try:
        ready()
        for i in range(_SMALL_WARMUP + calls):
            warm = i < _SMALL_WARMUP
            triple = triples[i % len(triples)]
            tag = tags[i % len(tags)]
            tag_keys = SmallLayout.tag_keys(tag)

            async def exact(keys: list[str] = triple) -> int:
                return (await inv.invalidate(keys=keys, operation_name="small")).deleted

            async def tagged(t: int = tag) -> int:
                return (await inv.invalidate(patterns=[f"{{t:{t}}}:*"],
                                             operation_name="small")).deleted

            async def peer(keys: list[str] = triple) -> int:
                return await redis_py_unlink(keys)

            await timed_call("exact", triple, exact, warm)
            await timed_call("redis_py_unlink", triple, peer, warm)
            await timed_call("tagged", tag_keys, tagged, warm)
        # Everything deleted is put back: the parent's DBSIZE check then sees the whole fill.
        for triple in triples:
            await setter.each(b"SET", triple, b"v")
        for tag in tags:
            await setter.each(b"SET", SmallLayout.tag_keys(tag), b"v")
    finally:
        await inv.aclose()
        await rc.aclose()
        await setter.aclose()
    return {"calls": calls, "latency": {k: _summary(v) for k, v in timed.items()},
            "mismatches": len(mismatches), "mismatch_sample": mismatches[:5],
            "survivors": survivors, "redis_py_unlink_mode": unlink_mode,
            "setter": "plain RESP sockets: no code of either client runs between timed calls"}


async def _run(spec: dict[str, Any], ready: Callable[[], None]) -> dict[str, Any]:
    kind, tool = spec["kind"], spec.get("tool")
    if kind == "storm" and tool == "clusterinval":
        return await _storm_clusterinval(spec, ready)
    if kind == "storm" and tool == "redis-py":
        return await _storm_redis_py(spec, ready)
    if kind == "small":
        return await _small(spec, ready)
    raise ValueError(f"unknown call benchmark {kind!r} / {tool!r}")


def main(argv: list[str] | None = None) -> int:
    """Child-process entry: run the spec given as JSON, print READY then one JSON result line."""
    spec = json.loads((argv or sys.argv[1:])[0])

    def ready() -> None:
        print("READY", flush=True)
        sys.stdin.readline()  # the parent's GO

    try:
        result = anyio.run(_run, spec, ready)
    except Exception as exc:  # reported to the parent, which marks the run failed
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}), flush=True)
        return 1
    print(json.dumps(result, default=_nan_free), flush=True)
    return 0


def _nan_free(value: object) -> object:
    return None if isinstance(value, float) and math.isnan(value) else str(value)


if __name__ == "__main__":
    sys.exit(main())
