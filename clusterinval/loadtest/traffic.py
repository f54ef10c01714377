"""Ordinary cache traffic (GET/SET at a target rate) with each operation's latency recorded.

Shared by the load generator and the benchmark's "GET p99 while S2 runs" measurement. Every loop
is bounded twice: by a deadline and by an operation count, so it stops by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from redis.asyncio import RedisCluster
from redis.exceptions import RedisError

__all__ = ["TrafficTally", "run_traffic"]

# A worker that falls this far behind its schedule skips ahead instead of bursting to catch up.
_MAX_LAG_S = 0.25
_MAX_ERROR_TEXTS = 20


@dataclass(slots=True)
class TrafficTally:
    """What one traffic phase did: per-operation latencies (seconds) and failures."""

    latencies: list[float] = field(default_factory=list)
    gets: int = 0
    sets: int = 0
    hits: int = 0
    errors: int = 0
    error_texts: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ops(self) -> int:
        """Operations attempted."""
        return self.gets + self.sets


# pick(n) -> (is_set, key): the n-th operation of the phase.
Picker = Callable[[int], tuple[bool, str]]
OnOp = Callable[[bool, float, bool], None]


async def run_traffic(
    client: RedisCluster,
    pick: Picker,
    *,
    rate: float,
    duration_s: float,
    workers: int = 8,
    value: bytes = b"x" * 64,
    on_op: OnOp | None = None,
    tally: TrafficTally | None = None,
) -> TrafficTally:
    """Issue about ``rate`` ops/s for ``duration_s`` from ``workers`` tasks; latencies per op."""
    if rate <= 0 or duration_s <= 0 or workers < 1:
        raise ValueError("rate, duration_s and workers must be positive")
    out = tally or TrafficTally()
    start = anyio.current_time()
    until = start + duration_s
    per_worker_cap = int(rate * duration_s / workers) + 1
    interval = workers / rate
    # Bounded twice: the loop ends at the deadline, and the cancel scope ends a stuck command.
    with anyio.move_on_after(duration_s + 5.0):
        async with anyio.create_task_group() as tg:
            for w in range(workers):
                tg.start_soon(_worker, client, pick, w, workers, start + w * interval / workers,
                              interval, until, per_worker_cap, value, out, on_op)
    out.elapsed_s += anyio.current_time() - start
    return out


async def _worker(
    client: RedisCluster,
    pick: Picker,
    w: int,
    workers: int,
    first: float,
    interval: float,
    until: float,
    cap: int,
    value: bytes,
    out: TrafficTally,
    on_op: OnOp | None,
) -> None:
    due = first
    for i in range(cap):
        now = anyio.current_time()
        if now >= until:
            return
        if due > now:
            await anyio.sleep(due - now)  # pacing to the target rate
        elif now - due > _MAX_LAG_S:
            due = now
        due += interval
        is_set, key = pick(i * workers + w)
        t0 = time.perf_counter()
        ok = True
        try:
            if is_set:
                await client.set(key, value)
            else:
                hit = await client.get(key)
                if hit is not None:
                    out.hits += 1
        except (RedisError, OSError) as exc:
            ok = False
            out.errors += 1
            if len(out.error_texts) < _MAX_ERROR_TEXTS:
                out.error_texts.append(f"{type(exc).__name__}: {exc}")
        latency = time.perf_counter() - t0
        if is_set:
            out.sets += 1
        else:
            out.gets += 1
        if ok:
            out.latencies.append(latency)
        if on_op is not None:
            on_op(is_set, latency, ok)
