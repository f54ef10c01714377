"""Key budgets (token buckets) and adaptive pacing, shared by every run of one engine."""

from __future__ import annotations

import anyio

__all__ = ["KeyRateLimiter", "LatencyGovernor", "Limits"]


class KeyRateLimiter:
    """Lets at most ``rate`` keys per second through, with bursts up to ``burst_s`` worth."""

    def __init__(self, rate: float | None, burst_s: float = 0.1) -> None:
        self.rate = rate
        # A short burst: a rate limit is set to keep a live cluster responsive, and a full
        # second's worth let through at once is exactly the spike it should prevent.
        self._capacity = float(rate or 0.0) * burst_s
        self._tokens = self._capacity
        # Stamped on first use: an invalidator may be built before any event loop runs.
        self._stamp: float | None = None
        self._lock = anyio.Lock()

    async def acquire(self, n: int) -> None:
        """Wait until ``n`` keys may be sent (immediately when unlimited)."""
        rate = self.rate
        if not rate or n <= 0:
            return
        async with self._lock:
            now = anyio.current_time()
            since = 0.0 if self._stamp is None else now - self._stamp
            self._tokens = min(self._capacity, self._tokens + since * rate)
            self._stamp = now
            self._tokens -= n
            deficit = -self._tokens
        if deficit > 0:
            # Pacing, not synchronisation: the debt is paid by waiting it out.
            await anyio.sleep(deficit / rate)


class LatencyGovernor:
    """Adaptive pacing: waits longer before a node's next call while its latency is above target.

    Additive-increase / multiplicative-decrease on a per-node pause: a call slower than the target
    doubles the pause (from ``floor_s``, up to ``max_pause_s``); a call at or under the target
    halves it, and a pause under ``floor_s`` drops to zero, so a healthy node runs at full speed.
    """

    def __init__(self, target_ms: float, *, floor_s: float = 0.002, max_pause_s: float = 0.5
                 ) -> None:
        self.target_s = target_ms / 1000.0
        self.floor_s = floor_s
        self.max_pause_s = max_pause_s
        self._pause: dict[object, float] = {}
        self.slowed = 0  # calls that came back over the target (for tests and logs)

    def pause_of(self, node: object) -> float:
        """The pause in force for ``node``, in seconds."""
        return self._pause.get(node, 0.0)

    def observe(self, node: object, latency_s: float) -> None:
        """Feed the round-trip time of one call to ``node``."""
        pause = self._pause.get(node, 0.0)
        if latency_s > self.target_s:
            self.slowed += 1
            pause = min(self.max_pause_s, max(pause * 2.0, self.floor_s))
        else:
            pause = pause / 2.0
            if pause < self.floor_s:
                pause = 0.0
        self._pause[node] = pause

    async def pace(self, node: object) -> None:
        """Wait the pause in force for ``node`` (no wait while it keeps up)."""
        pause = self._pause.get(node, 0.0)
        if pause > 0:
            await anyio.sleep(pause)  # pacing, not synchronisation


class Limits:
    """The whole-run and per-node key budgets and the adaptive pacing, in one place."""

    def __init__(self, keys_per_second: float | None, node_keys_per_second: float | None,
                 adaptive_latency_ms: float | None) -> None:
        self.keys_per_second = keys_per_second
        self.node_keys_per_second = node_keys_per_second
        self.run = KeyRateLimiter(keys_per_second)
        self._nodes: dict[object, KeyRateLimiter] = {}
        self.governor = LatencyGovernor(adaptive_latency_ms) if adaptive_latency_ms else None

    def node(self, node: object) -> KeyRateLimiter:
        """The per-node budget of ``node``, shared by every run and path."""
        lim = self._nodes.get(node)
        if lim is None:
            lim = self._nodes[node] = KeyRateLimiter(self.node_keys_per_second)
        return lim

    async def acquire(self, node: object, n: int) -> None:
        """Wait until ``n`` keys may go to ``node`` under both budgets."""
        await self.run.acquire(n)
        await self.node(node).acquire(n)

    def node_rate(self, primaries: int) -> float | None:
        """Keys per second one node may delete (None: unlimited); primaries share the run's."""
        rate = self.keys_per_second
        if rate is not None and primaries:
            rate /= primaries
        node_rate = self.node_keys_per_second
        if node_rate is not None:
            rate = node_rate if rate is None else min(rate, node_rate)
        return rate

    @property
    def paced(self) -> bool:
        """True when calls must be paid for or paced one by one (a budget or adaptive mode)."""
        return (self.keys_per_second is not None or self.node_keys_per_second is not None
                or self.governor is not None)
