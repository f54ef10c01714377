"""A keys-per-second budget shared by the tasks of a run (token bucket)."""

from __future__ import annotations

import anyio

__all__ = ["KeyRateLimiter"]


class KeyRateLimiter:
    """Lets at most ``rate`` keys per second through, with bursts up to one second's worth."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._tokens = float(rate or 0.0)
        self._stamp = anyio.current_time() if rate else 0.0
        self._lock = anyio.Lock()

    async def acquire(self, n: int) -> None:
        """Wait until ``n`` keys may be sent (immediately when unlimited)."""
        rate = self.rate
        if not rate or n <= 0:
            return
        async with self._lock:
            now = anyio.current_time()
            self._tokens = min(rate, self._tokens + (now - self._stamp) * rate)
            self._stamp = now
            self._tokens -= n
            deficit = -self._tokens
        if deficit > 0:
            # Pacing, not synchronisation: the debt is paid by waiting it out.
            await anyio.sleep(deficit / rate)
