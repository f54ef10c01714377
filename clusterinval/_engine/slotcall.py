"""One command on the keys of one slot, sent to the slot's owner: redirects followed, transient
errors retried with back-off, refusals raised as ClusterPermissionError."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from redis.exceptions import AskError, MovedError, RedisError

from clusterinval._core.values import ErrorKind, NodeAddr
from clusterinval._engine.retry import RetryPolicy, classify, is_transient, refusal
from clusterinval._engine.topology import Topology
from clusterinval._io.protocol import NodeIO
from clusterinval.errors import ClusterConnectionError

__all__ = ["SlotCaller"]

T = TypeVar("T")


class SlotCaller:
    """Runs one-slot commands on whichever primary serves the slot now."""

    def __init__(self, topology: Topology, policy: RetryPolicy, timeout_s: float,
                 on_error: Callable[[NodeAddr, ErrorKind], None] | None = None) -> None:
        self._topology = topology
        self._policy = policy
        self._timeout_s = timeout_s
        self._on_error = on_error

    async def call(self, slot: int, fn: Callable[[NodeIO], Awaitable[T]], what: str) -> T:
        """``fn(owner)`` on the owner of ``slot``; the last error once the attempts run out."""
        topology = self._topology
        attempts = max(self._policy.attempts, 1)
        for attempt in range(1, attempts + 1):
            view = topology.view or await topology.refresh()
            owner = view.owner(slot)
            try:
                if owner is None:
                    raise ClusterConnectionError(f"no primary serves slot {slot}")
                with anyio.fail_after(self._timeout_s):
                    return await fn(topology.node(owner))
            except (RedisError, OSError, TimeoutError, ClusterConnectionError) as exc:
                node = owner or NodeAddr("?", 0)
                refused = refusal(node, exc, what)
                if refused is not None:
                    raise refused from None
                transient = isinstance(exc, ClusterConnectionError) or is_transient(exc)
                if not transient or attempt == attempts:
                    raise
                if self._on_error is not None and owner is not None:
                    self._on_error(owner, classify(exc))
                await anyio.sleep(self._policy.delay(attempt))
                if isinstance(exc, MovedError) or not isinstance(exc, AskError):
                    # A slot moved or a node went away: read the owners again. (ASK: the slot
                    # is migrating; its owner is unchanged, a later try finds it settled.)
                    await _refresh(topology)
        raise AssertionError("unreachable")


async def _refresh(topology: Topology) -> None:
    # Nothing answering now is no reason to stop: the next try meets that error itself.
    with contextlib.suppress(ClusterConnectionError):
        await topology.refresh()
