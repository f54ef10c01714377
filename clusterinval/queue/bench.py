"""Queue benchmark (not a test): submit latency against a bare XADD, and a worker's drain time.

    python -m clusterinval.queue.bench --size 200000 [--url redis://...] [--requests 1000]

Without ``--url`` it starts a local 3-primary cluster (redis-server on PATH) and stops it after.
Prints the p50 of ``submit`` on a held queue, the p50 of one bare ``XADD`` on the same
connection kind, their ratio, and how long one worker takes to apply ``--requests`` per-entity
pattern requests (``user:<i>:*``) on a keyspace of ``--size`` keys.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import anyio
from prometheus_client import CollectorRegistry
from redis.asyncio import RedisCluster

from clusterinval._invalidator import ClusterInvalidator
from clusterinval.queue.client import InvalidationQueue
from clusterinval.queue.stream import QueueConnection, StreamNames, StreamStore
from clusterinval.queue.worker import QueueWorker, WorkerOptions

__all__ = ["main"]

_KEYS_PER_USER = 20


async def _p50_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


async def _measure(url: str, requests: int, rounds: int, batch: int) -> dict[str, float]:
    registry = CollectorRegistry()
    stream = "bench:{clusterinval-queue}"
    bare = RedisCluster.from_url(url)
    await bare.initialize()
    xadd: list[float] = []
    for i in range(rounds):
        started = time.perf_counter()
        await bare.xadd("bench:{clusterinval-queue}:bare", {b"i": str(i).encode()})
        xadd.append(time.perf_counter() - started)
    await bare.delete("bench:{clusterinval-queue}:bare")
    await bare.aclose()
    out: dict[str, float] = {"xadd_p50_ms": await _p50_ms(xadd)}
    async with InvalidationQueue.from_url(url, stream=stream, registry=registry) as q:
        await q.submit(keys=["bench:warm"], operation_name="bench")  # connect, load scripts
        submit: list[float] = []
        for i in range(rounds):
            started = time.perf_counter()
            await q.submit(keys=[f"user:{i}:0"], operation_name="bench")
            submit.append(time.perf_counter() - started)
        out["submit_p50_ms"] = await _p50_ms(submit)
        out["ratio"] = out["submit_p50_ms"] / out["xadd_p50_ms"]
        # Leave only the drain's requests in the stream.
        conn = QueueConnection(url)
        client = await conn.client()
        await client.delete(stream)
        for i in range(requests):
            await q.submit(patterns=[f"user:{i}:*"], operation_name="bench")
        inv = ClusterInvalidator.from_url(url, registry=registry)
        worker = QueueWorker(inv, StreamStore(conn, StreamNames.of(stream)),
                             WorkerOptions(batch_size=batch, concurrency=batch, consumer="bench"))
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            # The worker keeps counters, not events: a 10 ms poll bounds the timing error.
            while worker.stats.applied + worker.stats.duplicates < requests:  # noqa: ASYNC110
                await anyio.sleep(0.01)
            out["drain_s"] = time.perf_counter() - started
            worker.stop()
        out["applied"] = worker.stats.applied
        out["retried"] = worker.stats.retried
        await inv.aclose()
        await client.delete(stream, StreamNames.of(stream).dead)
        await conn.aclose()
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m clusterinval.queue.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=200_000, help="keys in the keyspace")
    parser.add_argument("--url", help="an existing cluster (default: start a local one)")
    parser.add_argument("--requests", type=int, default=1000, help="requests to drain")
    parser.add_argument("--rounds", type=int, default=500, help="submits and XADDs timed")
    parser.add_argument("--batch", type=int, default=250, help="worker batch size")
    args = parser.parse_args(argv)
    from clusterinval.testing.fill import fill_keys
    from clusterinval.testing.local import LocalCluster

    cluster = None
    url = args.url
    if url is None:
        cluster = LocalCluster(primaries=3, replicas=0).start(timeout=60)
        url = cluster.url
    try:
        users = max(args.requests, args.size // _KEYS_PER_USER)
        keys = (f"user:{u}:{j}" for u in range(users) for j in range(_KEYS_PER_USER))
        filled = fill_keys(url, keys)
        print(f"keyspace: {filled} keys ({users} users x {_KEYS_PER_USER}) at {url}")
        res = anyio.run(_measure, url, args.requests, args.rounds, args.batch)
        print(f"bare XADD p50:        {res['xadd_p50_ms']:.3f} ms")
        print(f"submit p50 (held):    {res['submit_p50_ms']:.3f} ms")
        print(f"ratio submit / XADD:  {res['ratio']:.2f}  (target <= 2)")
        print(f"drain {args.requests} per-entity pattern requests: {res['drain_s']:.2f} s "
              f"(applied {int(res['applied'])}, retried {int(res['retried'])}; target < 10 s)")
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
