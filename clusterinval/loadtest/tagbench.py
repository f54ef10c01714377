"""The tag benchmark: what a tag invalidation costs, beside the keyspace it lives in.

``python -m clusterinval.loadtest.tagbench --sizes 1000000 4000000`` starts a 3-primary cluster
(or uses ``--url``), and for each size in turn (the keyspace grows between them):

* **one tag**: ``invalidate(tags=[...])`` of one entity's 10 entries, sequential on a held
  invalidator, beside redis-py's ``unlink(*keys)`` of 3 keys in 3 slots on a held client (p50,
  p99, ratio); the entries are written again between calls, outside the timed section;
* **tag storm**: ``--storm`` concurrent tag invalidations, one per entity, through one
  invalidator: calls per second, p50/p99, and the check that every entry is gone and no other;
* **tagged write**: ``TaggedWriter.set`` beside a plain redis-py ``set`` (p50, ratio).

Speed is printed, never asserted; correctness of every run is checked (a failed check exits 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import anyio
import redis
from prometheus_client import CollectorRegistry
from redis.asyncio import RedisCluster

from clusterinval._core.slots import key_slot
from clusterinval._invalidator import ClusterInvalidator
from clusterinval.testing.fill import count_keys, fill_keys

__all__ = ["main"]

_ENTITY_KEYS = 10
_ROUNDS = 300
_WARMUP = 30


def _entity(e: int) -> dict[str, str]:
    return {f"ent:{e}:{j}": "v" for j in range(_ENTITY_KEYS)}


def _three_slots() -> list[str]:
    keys: list[str] = []
    slots: set[int] = set()
    i = 0
    while len(keys) < 3:
        key = f"plain:{i}"
        if key_slot(key.encode()) // 5462 not in slots:  # one key per primary's third
            slots.add(key_slot(key.encode()) // 5462)
            keys.append(key)
        i += 1
    return keys


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3


async def _one_size(url: str, size: int, entities: int, storm: int) -> dict[str, Any]:
    out: dict[str, Any] = {"size": size}
    have = count_keys(url)
    if have < size:
        fill_keys(url, (f"fill:{i}" for i in range(have, size)))
    rc = RedisCluster.from_url(url)
    async with ClusterInvalidator.from_url(url, registry=CollectorRegistry()) as inv:
        for e in range(entities):
            async with inv.tagged_writer(tags=[f"ent:{e}"]) as w:
                await w.set_many(_entity(e))
        # One tag at a time, beside redis-py's 3-key unlink.
        plain = _three_slots()
        tag_ms: list[float] = []
        unlink_ms: list[float] = []
        for r in range(_ROUNDS + _WARMUP):
            e = r % entities
            await rc.mset_nonatomic(dict.fromkeys(plain, "v"))
            t0 = time.perf_counter()
            await rc.unlink(*plain)
            t1 = time.perf_counter()
            result = await inv.invalidate(tags=[f"ent:{e}"], operation_name="tag")
            t2 = time.perf_counter()
            if result.deleted != _ENTITY_KEYS:
                raise SystemExit(f"tag ent:{e} removed {result.deleted}, not {_ENTITY_KEYS}")
            async with inv.tagged_writer(tags=[f"ent:{e}"]) as w:
                await w.set_many(_entity(e))
            if r >= _WARMUP:
                unlink_ms.append(t1 - t0)
                tag_ms.append(t2 - t1)
        out["one_tag_p50_ms"] = round(_p(tag_ms, 0.5), 3)
        out["one_tag_p99_ms"] = round(_p(tag_ms, 0.99), 3)
        out["redis_py_unlink3_p50_ms"] = round(_p(unlink_ms, 0.5), 3)
        out["one_tag_vs_unlink3"] = round(statistics.median(tag_ms)
                                          / statistics.median(unlink_ms), 2)
        # Tagged writes beside plain SETs.
        write_ms: list[float] = []
        set_ms: list[float] = []
        async with inv.tagged_writer(tags=["writes"]) as w:
            for r in range(_ROUNDS + _WARMUP):
                t0 = time.perf_counter()
                await rc.set(f"plainw:{r}", "v")
                t1 = time.perf_counter()
                await w.set(f"tagw:{r}", "v")
                t2 = time.perf_counter()
                if r >= _WARMUP:
                    set_ms.append(t1 - t0)
                    write_ms.append(t2 - t1)
        out["tagged_set_p50_ms"] = round(_p(write_ms, 0.5), 3)
        out["redis_py_set_p50_ms"] = round(_p(set_ms, 0.5), 3)
        out["tagged_set_vs_set"] = round(statistics.median(write_ms)
                                         / statistics.median(set_ms), 2)
        await inv.invalidate(tags=["writes"], operation_name="tag")
        await rc.unlink(*[f"plainw:{r}" for r in range(_ROUNDS + _WARMUP)])
    # The storm, on an invalidator of its own (the first one closed: no index copy is pending).
    before = count_keys(url)
    async with ClusterInvalidator.from_url(url, registry=CollectorRegistry()) as inv:
        latencies: list[float] = []
        deleted = 0

        async def one(e: int) -> None:
            nonlocal deleted
            t0 = time.perf_counter()
            result = await inv.invalidate(tags=[f"ent:{e}"], operation_name="tag")
            latencies.append(time.perf_counter() - t0)
            deleted += result.deleted

        n = min(storm, entities)
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for e in range(n):
                tg.start_soon(one, e)
        wall = time.perf_counter() - started
    # Closed: every finished index copy is dropped (a batch drops them with the next one).
    expected = n * _ENTITY_KEYS
    left = 0
    for e in range(n):
        left += await rc.exists(*_entity(e))
    out["storm_calls"] = n
    out["storm_calls_per_s"] = round(n / wall, 1)
    out["storm_p50_ms"] = round(_p(latencies, 0.5), 2)
    out["storm_p99_ms"] = round(_p(latencies, 0.99), 2)
    # Every entry gone, and besides them only each tag's index set: nothing else lost.
    out["storm_ok"] = (deleted == expected and left == 0
                       and before - count_keys(url) == expected + n)
    # Leave the entities in place for the next size.
    async with ClusterInvalidator.from_url(url, registry=CollectorRegistry()) as inv:
        for e in range(n):
            async with inv.tagged_writer(tags=[f"ent:{e}"]) as w:
                await w.set_many(_entity(e))
    await rc.aclose()
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the tag benchmark and print one JSON object per size."""
    parser = argparse.ArgumentParser(prog="python -m clusterinval.loadtest.tagbench")
    parser.add_argument("--url", help="an existing cluster (default: start a local one)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--storm", type=int, default=1000)
    args = parser.parse_args(argv)
    ok = True

    def run(url: str) -> None:
        nonlocal ok
        with redis.RedisCluster.from_url(url) as client:
            client.flushall()
        for size in sorted(args.sizes):
            found = anyio.run(_one_size, url, size, args.entities, args.storm)
            print(json.dumps(found), flush=True)
            ok = ok and bool(found["storm_ok"])

    if args.url:
        run(args.url)
    else:
        from clusterinval.testing.local import LocalCluster

        with LocalCluster(primaries=3, replicas=0) as cluster:
            run(cluster.url)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
