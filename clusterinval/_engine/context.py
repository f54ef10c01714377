"""What every path of one run is handed: the cluster, the plan, the policies and the tally."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import anyio

from clusterinval._core.merging import Shares
from clusterinval._core.planning import Plan
from clusterinval._core.tally import RunTally
from clusterinval._core.values import NodeAddr, SlotBatch
from clusterinval._engine.ratelimit import Limits
from clusterinval._engine.retry import RetryPolicy, classify
from clusterinval._engine.topology import Topology
from clusterinval._engine.unlinker import Unlinker
from clusterinval.options import InvalidatorOptions

__all__ = ["RunContext"]

T = TypeVar("T")


@dataclass(eq=False)
class RunContext:
    """The shared state of one run, handed explicitly to each of its parts."""

    topology: Topology
    options: InvalidatorOptions
    plan: Plan
    tally: RunTally
    policy: RetryPolicy
    limits: Limits
    unlinker: Unlinker
    dry_run: bool
    watched: bool = False  # a progress display follows this run
    shares: Shares | None = None  # a shared pass: credits each caller with its own keys

    async def call(self, node: NodeAddr, fn: Callable[[], Awaitable[T]],
                   what: str = "a command") -> T:
        """One node command: paced (adaptive mode), timed out, retried when transient."""
        governor = self.limits.governor

        async def timed() -> T:
            if governor is None:
                return await fn()
            await governor.pace(node)
            sent = anyio.current_time()
            value = await fn()
            governor.observe(node, anyio.current_time() - sent)
            return value

        return await self.policy.call(
            node, timed, timeout_s=self.options.command_timeout_s, what=what,
            on_retry=lambda exc: self.tally.error(node, classify(exc)))

    def node_rate(self) -> float | None:
        """Keys per second this run may delete on one node (None: unlimited)."""
        view = self.topology.view
        return self.limits.node_rate(len(view.primaries) if view is not None else 0)

    def sample(self, keys: list[bytes]) -> None:
        """Offer ``keys`` to the result's sample."""
        self.tally.add_sample(keys, self.options.sample_size)

    def confirm_deleted(self, node: NodeAddr, batches: Sequence[SlotBatch], n: int) -> None:
        """Count keys a node confirmed removed (their matches were counted when found)."""
        self.tally.node(node).deleted += n
        if self.shares is not None:
            self.shares.confirmed(node, batches, n)

    async def delete(self, batches: Sequence[SlotBatch]) -> None:
        """Delete matched keys on their owners."""
        await self.unlinker.unlink(batches, self.confirm_deleted)
