"""The approaches the benchmark compares, each run in a fresh child process that measures itself.

``python -m clusterinval.loadtest.peers SPEC_JSON`` connects, prints ``READY``, waits for a line on
stdin (the parent resets SLOWLOG meanwhile), runs one tool on
one scenario, and prints one JSON line: wall seconds, client CPU seconds (``time.process_time``,
all threads), peak RSS growth (the kernel's peak mark, reset just before the run; where that
is not allowed, sampled every 5 ms in a thread and from ``ru_maxrss``; relative to the RSS just
before the run) and the count of deleted keys the tool reported. Connecting and imports are
outside the measured span. A fresh process per run keeps one run's memory out of the next one's.

Tools:

* ``clusterinval`` (``server_scripts`` on, the default) and ``clusterinval-plain``
  (``server_scripts=False``: SCAN + slot-grouped pipelined UNLINK only);
* ``keys-del``: the common hand-written approach, made to work on a cluster at all: ``KEYS
  pattern`` on each primary in turn, then one ``DEL`` per slot (pipelined) on that primary (a
  single multi-key ``DEL``, as such services send, would fail with CROSSSLOT). Exact keys: one
  ``DEL`` per slot, pipelined per primary;
* ``redis-py``: ``RedisCluster.scan_iter(match, count=1000)`` (one primary after another), with
  ``unlink(*batch)`` every 500 keys (redis-py splits it into one UNLINK per slot); exact keys:
  ``unlink(*keys)``;
* ``valkey-glide``: ``GlideClusterClient.scan`` with a ``ClusterScanCursor`` (count=1000),
  ``unlink(batch)`` every 500 keys; exact keys: ``unlink(keys)``;
* ``floor``: ``clusterops.FLOOR_SCRIPT`` on every primary at once (a blocking reference).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import anyio

__all__ = ["TOOLS", "glide_available", "main", "run_tool"]

TOOLS = ("clusterinval", "clusterinval-plain", "keys-del", "redis-py", "valkey-glide", "floor")
_BATCH = 500
_SCAN_COUNT = 1000
_PAGE = os.sysconf("SC_PAGE_SIZE")


def glide_available() -> str | None:
    """None when valkey-glide can be imported, else why not."""
    try:
        import glide  # noqa: F401
    except ImportError as exc:
        return f"valkey-glide not installed ({exc.name}); pip install 'clusterinval[bench]'"
    return None


def _exact_keys(spec: dict[str, Any]) -> list[str]:
    keys = list(spec.get("extra_keys", []))
    prefix, n = spec.get("exact_prefix"), int(spec.get("exact_count", 0))
    keys.extend(f"{prefix}{i}" for i in range(n))
    return keys


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def _node_client(url: str, host: str, port: int, timeout: float = 300.0) -> Any:
    """An asyncio connection to one node with the URL's credentials and scheme."""
    from redis.asyncio import ConnectionPool, Redis

    base = ConnectionPool.from_url(url)
    kwargs = dict(base.connection_kwargs)
    kwargs.update(host=host, port=port, socket_timeout=timeout)
    kwargs.pop("db", None)
    return Redis.from_pool(ConnectionPool(connection_class=base.connection_class, **kwargs))


# -- the tools: each returns (prepare, run); prepare connects, run does the measured work ---------

Runner = Callable[[], Awaitable[int]]


async def _clusterinval(spec: dict[str, Any], plain: bool) -> tuple[Runner, Callable[[], Any]]:
    from prometheus_client import CollectorRegistry

    from clusterinval._invalidator import ClusterInvalidator

    options: dict[str, Any] = dict(spec.get("options", {}))
    if plain:
        options["server_scripts"] = False
    inv = ClusterInvalidator.from_url(spec["url"], registry=CollectorRegistry(), **options)
    await inv.open()
    keys = _exact_keys(spec)
    patterns = spec["patterns"]

    async def run() -> int:
        r = await inv.invalidate(keys=keys or None, patterns=patterns or None,
                                 operation_name="bench")
        return r.deleted

    return run, inv.aclose


async def _keys_del(spec: dict[str, Any]) -> tuple[Runner, Callable[[], Any]]:
    from clusterinval._core.batching import group_by_slot
    from clusterinval.testing.fill import cluster_primaries

    primaries = await anyio.to_thread.run_sync(cluster_primaries, spec["url"])
    conns = [_node_client(spec["url"], h, p) for h, p in primaries]
    for c in conns:
        await c.ping()
    keys = [k.encode() for k in _exact_keys(spec)]

    async def run() -> int:
        deleted = 0
        for conn in conns:  # one primary after another, as a hand-written loop does
            found: list[bytes] = []
            for pattern in spec["patterns"]:
                found.extend(await conn.keys(pattern))
            deleted += await _del_per_slot(conn, group_by_slot(found, 10**9))
        if keys:
            deleted += await _del_exact(conns, primaries, spec["url"], keys)
        return deleted

    async def close() -> None:
        for c in conns:
            await c.aclose()

    return run, close


async def _del_per_slot(conn: Any, batches: list[tuple[int, list[bytes]]]) -> int:
    if not batches:
        return 0
    async with conn.pipeline(transaction=False) as pipe:
        for _slot, ks in batches:
            pipe.delete(*ks)
        return sum(int(n) for n in await pipe.execute())


async def _del_exact(conns: list[Any], primaries: list[tuple[str, int]], url: str,
                     keys: list[bytes]) -> int:
    from clusterinval._core.batching import group_by_slot
    from clusterinval.testing.fill import slot_owners

    owners = await anyio.to_thread.run_sync(slot_owners, url)
    by_node: dict[tuple[str, int], list[tuple[int, list[bytes]]]] = {}
    for slot, ks in group_by_slot(keys, 10**9):
        owner = owners[slot]
        assert owner is not None
        by_node.setdefault(owner, []).append((slot, ks))
    total = 0
    for conn, node in zip(conns, primaries, strict=True):
        total += await _del_per_slot(conn, by_node.get(node, []))
    return total


async def _redis_py(spec: dict[str, Any]) -> tuple[Runner, Callable[[], Any]]:
    from redis.asyncio import RedisCluster

    rc = RedisCluster.from_url(spec["url"])
    await rc.initialize()
    keys = _exact_keys(spec)

    async def run() -> int:
        deleted = 0
        for pattern in spec["patterns"]:
            batch: list[bytes] = []
            async for k in rc.scan_iter(match=pattern, count=_SCAN_COUNT):
                batch.append(k)
                if len(batch) >= _BATCH:
                    deleted += int(await rc.unlink(*batch))
                    batch = []
            if batch:
                deleted += int(await rc.unlink(*batch))
        if keys:
            deleted += int(await rc.unlink(*keys))
        return deleted

    return run, rc.aclose


async def _glide(spec: dict[str, Any]) -> tuple[Runner, Callable[[], Any]]:
    from glide import (
        ClusterScanCursor,
        GlideClusterClient,
        GlideClusterClientConfiguration,
        NodeAddress,
    )

    host, port = _host_port(spec["url"])
    client = await GlideClusterClient.create(
        GlideClusterClientConfiguration([NodeAddress(host, port)], request_timeout=60_000)
    )
    keys: list[str | bytes] = list(_exact_keys(spec))

    async def run() -> int:
        deleted = 0
        for pattern in spec["patterns"]:
            # Called through Any: glide ships this class without annotations.
            cursor: Any = cast(Any, ClusterScanCursor)()
            batch: list[str | bytes] = []
            while not cursor.is_finished():
                cursor, found = await client.scan(cursor, match=pattern, count=_SCAN_COUNT)
                batch.extend(cast(list[bytes], found))
                while len(batch) >= _BATCH:
                    deleted += int(await client.unlink(batch[:_BATCH]))
                    batch = batch[_BATCH:]
            if batch:
                deleted += int(await client.unlink(batch))
        if keys:
            deleted += int(await client.unlink(keys))
        return deleted

    return run, client.close


async def _floor(spec: dict[str, Any]) -> tuple[Runner, Callable[[], Any]]:
    from clusterinval.loadtest.clusterops import FLOOR_SCRIPT
    from clusterinval.testing.fill import cluster_primaries, slot_owners

    primaries = await anyio.to_thread.run_sync(cluster_primaries, spec["url"])
    slot = spec.get("floor_slot")
    if slot is not None:
        owners = await anyio.to_thread.run_sync(slot_owners, spec["url"])
        owner = owners[int(slot)]
        targets = [(owner, int(slot), int(slot))] if owner else []
    else:
        targets = [(p, 0, 16383) for p in primaries]
    conns = {p: _node_client(spec["url"], *p) for p, _lo, _hi in targets}
    shas = {p: await c.script_load(FLOOR_SCRIPT) for p, c in conns.items()}
    prefixes = spec["floor_prefixes"]

    async def run() -> int:
        results: list[int] = []

        async def one(p: tuple[str, int], lo: int, hi: int) -> None:
            results.append(int(await conns[p].evalsha(shas[p], 0, lo, hi, *prefixes)))

        async with anyio.create_task_group() as tg:
            for p, lo, hi in targets:
                tg.start_soon(one, p, lo, hi)
        return sum(results)

    async def close() -> None:
        for c in conns.values():
            await c.aclose()

    return run, close


async def _prepare(spec: dict[str, Any]) -> tuple[Runner, Callable[[], Any]]:
    tool = spec["tool"]
    if tool in ("clusterinval", "clusterinval-plain"):
        return await _clusterinval(spec, plain=tool == "clusterinval-plain")
    if tool == "keys-del":
        return await _keys_del(spec)
    if tool == "redis-py":
        return await _redis_py(spec)
    if tool == "valkey-glide":
        return await _glide(spec)
    if tool == "floor":
        return await _floor(spec)
    raise ValueError(f"unknown tool {tool!r}; known: {', '.join(TOOLS)}")


# -- measurement ---------------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class _RssSampler:
    """Samples this process's RSS every few milliseconds in a thread; keeps the peak."""

    def __init__(self, every_s: float = 0.005) -> None:
        self.peak = _rss()
        self._every = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.peak = max(self.peak, _rss())


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    """The kernel's peak RSS mark (VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


async def run_tool(
    spec: dict[str, Any], ready: Callable[[], None] = lambda: None
) -> dict[str, Any]:
    """Run one tool on one scenario in this process and measure it."""
    run, close = await _prepare(spec)
    try:
        ready()
        # The kernel keeps the peak exactly and costs the run nothing; a sampling thread (the
        # fallback) competes with the tool for the GIL and the CPU while it is being timed.
        exact = _reset_peak_rss()
        rss0 = _rss()
        maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        cpu0, t0 = time.process_time(), time.perf_counter()
        if exact:
            deleted = await run()
        else:
            with _RssSampler() as sampler:
                deleted = await run()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if exact:
            peak = _peak_rss()
        else:
            maxrss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            peak = max(sampler.peak, maxrss1 if maxrss1 > maxrss0 else 0)
    finally:
        await close()
    return {"wall_s": wall, "cpu_s": cpu, "rss_growth_mb": max(0, peak - rss0) / 2**20,
            "deleted": deleted}


def main(argv: list[str] | None = None) -> int:
    """Child-process entry: run the spec given as JSON, print READY then one JSON result line."""
    spec = json.loads((argv or sys.argv[1:])[0])

    def ready() -> None:
        print("READY", flush=True)
        sys.stdin.readline()  # the parent's GO: it has reset SLOWLOG

    try:
        result = anyio.run(run_tool, spec, ready)
    except Exception as exc:  # reported to the parent, which marks the run failed
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
