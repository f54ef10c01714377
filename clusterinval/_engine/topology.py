"""The cluster as a run sees it: the latest view of who owns which slot, kept current.

A standalone (non-cluster) server is modelled as one primary that owns every slot, so the engine
has a single code path for both.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
from redis.exceptions import RedisError

from clusterinval._core.values import ClusterView, NodeAddr, NodeOwnership
from clusterinval._engine.retry import describe, refusal
from clusterinval._io.protocol import ClusterIO, NodeIO
from clusterinval.errors import ClusterConnectionError, InvalidInputError

__all__ = ["Topology"]


class Topology:
    """The nodes worth asking about the cluster, and the latest ``ClusterView``."""

    def __init__(self, io: ClusterIO, seeds: Sequence[NodeAddr], *, timeout_s: float = 5.0
                 ) -> None:
        if not seeds:
            raise InvalidInputError("at least one seed node is needed")
        self.io = io
        self._seeds = list(seeds)
        self._timeout_s = timeout_s
        self._view: ClusterView | None = None
        self._refresh_lock = anyio.Lock()
        self._generation = 0
        # Readings begun so far, and the number of the one the current view came from: a caller
        # that waited for the lock while a reading begun after its request finished takes that
        # view rather than reading again (many callers at once cost one or two readings).
        self._readings = 0
        self._view_reading = 0
        self._staged: bool | None = None

    def node(self, addr: NodeAddr) -> NodeIO:
        """The node at ``addr``."""
        return self.io.node(addr)

    def staged(self, addr: NodeAddr) -> bool:
        """Whether the nodes can send key commands now and read their replies later
        (``StagedKeyCommands``); the same for every node of one connection layer."""
        if self._staged is None:
            self._staged = hasattr(self.io.node(addr), "begin_key_commands")
        return self._staged

    async def aclose(self) -> None:
        """Close every connection."""
        await self.io.aclose()

    @property
    def view(self) -> ClusterView | None:
        """The latest view, or None before the first refresh."""
        return self._view

    @property
    def generation(self) -> int:
        """Increments on every successful refresh; lets callers avoid redundant refreshes."""
        return self._generation

    def known_nodes(self) -> list[NodeAddr]:
        """Every node worth asking about the cluster: primaries, replicas, then seeds."""
        seen: dict[NodeAddr, None] = {}
        if self._view is not None:
            for p in self._view.primaries:
                seen[p] = None
            for reps in self._view.replicas.values():
                for r in reps:
                    seen[r] = None
        for s in self._seeds:
            seen[s] = None
        return list(seen)

    async def refresh(self, *, if_generation: int | None = None) -> ClusterView:
        """Read slot ownership from the first node that answers.

        The view returned was read after this call began; with ``if_generation``, any view
        newer than that generation will do.
        """
        asked = self._readings
        async with self._refresh_lock:
            if if_generation is not None and if_generation != self._generation and self._view:
                return self._view  # another task refreshed while we waited
            if self._view is not None and self._view_reading > asked:
                return self._view  # read, by another task, after this call began
            self._readings += 1
            reading = self._readings
            errors: list[str] = []
            for node in self.known_nodes():
                try:
                    with anyio.fail_after(self._timeout_s):
                        view = await self.io.node(node).cluster_view()
                except (RedisError, OSError, TimeoutError) as exc:
                    refused = refusal(node, exc, "the connection or CLUSTER SLOTS")
                    if refused is not None:
                        raise refused from None
                    errors.append(f"{node.name}: {describe(exc)}")
                    continue
                if view is None:
                    continue  # a node that knows no slots (fresh, or not yet joined)
                self._view = view
                self._view_reading = reading
                self._generation += 1
                for p in view.primaries:
                    if p not in self._seeds:
                        self._seeds.append(p)
                return view
            raise ClusterConnectionError(
                "no node of the cluster answered: " + "; ".join(errors[:6]),
                tuple(n.name for n in self.known_nodes()),
            )

    async def ownership(self, node: NodeAddr) -> NodeOwnership:
        """What ``node`` itself says it serves, including slots in migration."""
        return await self.io.node(node).ownership()
