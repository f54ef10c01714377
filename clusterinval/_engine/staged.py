"""Staged exchanges: every node is written first, then each node's replies are read, all in the
calling task. A call then takes one round trip to the slowest node, as with a task per node, but
without the tasks.

``stageable`` says whether a call's shares are small enough for it; ``exchange`` runs one, for
key deletions (the hot path and the unlinker) and for tag takes alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar, cast

import anyio

from clusterinval._core.values import NodeAddr, SlotBatch
from clusterinval._engine.ratelimit import Limits
from clusterinval._engine.topology import Topology
from clusterinval._io.protocol import StagedKeyCommands

__all__ = ["STAGED_BATCHES", "STAGED_KEYS", "InFlight", "exchange", "stageable"]

# A node's share goes in one staged write when it is at most this many slot batches: one
# pipelined UNLINK per slot is then as few round trips as the server-side batch step, and its
# replies need no script.
STAGED_BATCHES = 8
# Keys one staged write may carry; the windowed paths give a node as many in flight at once.
STAGED_KEYS = 1000


class InFlight(Protocol):
    """Commands sent to a node whose replies are still to be read."""

    async def abandon(self) -> None:
        """Stop without reading on (what is in flight is read briefly, so it is counted)."""
        ...


ShareT = TypeVar("ShareT")
InFlightT = TypeVar("InFlightT", bound=InFlight)


def stageable(topology: Topology, limits: Limits, by_node: dict[NodeAddr, list[SlotBatch]]
              ) -> bool:
    """Whether every node's share is small enough to go in one write, staged, now."""
    if not by_node or limits.paced:
        return False  # under a budget each share is paid for before it goes: per node
    if not topology.staged(next(iter(by_node))):
        return False
    for node, node_batches in by_node.items():
        if len(node_batches) > STAGED_BATCHES:
            return False
        # Sends go one node after another: each must find a connection ready, so that a node
        # slow to connect (or a full pool) cannot hold up the others' sends.
        if not cast(StagedKeyCommands, topology.node(node)).can_begin():
            return False
        keys = 0
        for batch in node_batches:
            keys += len(batch[1])
        if keys > STAGED_KEYS:
            return False
    return True


async def exchange(shares: Sequence[ShareT],
                   send: Callable[[ShareT], Awaitable[InFlightT | None]],
                   read: Callable[[ShareT, InFlightT], Awaitable[None]],
                   timeout_s: float) -> list[ShareT]:
    """Send every share, then read each one's replies, within ``timeout_s``; the shares left
    unsettled: not sent, cut short, or sent and not read in time.

    ``send`` returns the share's exchange, or None when its send failed (and was dealt with);
    ``read`` reads and deals with the replies. What is in flight when the time runs out (or the
    caller is cancelled) is read briefly, shielded, so that what the nodes did is counted.
    """
    sent: list[tuple[ShareT, InFlightT]] = []
    reached = 0  # shares whose send returned
    read_done = 0  # shares of ``sent`` read
    try:
        # asyncio's own timer, not an anyio cancel scope: on the hot path the scope's bookkeeping
        # costs as much as the client's whole share of a round trip. Both follow the same
        # cancellation counting, so a caller's cancel scope outside still wins.
        async with asyncio.timeout(timeout_s) as timer:
            for share in shares:
                pending = await send(share)
                reached += 1
                if pending is not None:
                    sent.append((share, pending))
            for share, pending in sent:
                await read(share, pending)
                read_done += 1
    except TimeoutError:
        if not timer.expired():
            raise  # not our timer's
    finally:
        if read_done < len(sent):  # the common ending has nothing left: no scope to set up
            with anyio.CancelScope(shield=True):
                for _share, pending in sent[read_done:]:
                    await pending.abandon()
    return [share for share, _pending in sent[read_done:]] + list(shares[reached:])
