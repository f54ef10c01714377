"""What every call to an in-memory node goes through: the log and hooks, faults, waits, yields."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import anyio
import anyio.lowlevel

from clusterinval._core.values import NodeAddr
from clusterinval._io.memory.controls import CallControls, Injection, fresh, is_error
from clusterinval._io.memory.errors import connection_closed, connection_refused
from clusterinval._io.memory.node_state import NodeState
from clusterinval._io.memory.topology import ClusterState
from clusterinval._io.protocol import OnReply

__all__ = ["enter", "pipeline"]

_T = TypeVar("_T")


async def enter(
    cluster: ClusterState, controls: CallControls, addr: NodeAddr, operation: str
) -> tuple[NodeState, Injection | None]:
    """Start a call: log, hooks, faults, a yield like real I/O; the node and any injection."""
    controls.log(addr, operation)
    state = cluster.nodes.get(addr)
    if state is None or state.killed:
        raise connection_refused(addr)
    if state.slow_s > 0:
        await anyio.sleep(state.slow_s)
    while state.frozen and not state.killed:
        if state.thaw is None:
            state.thaw = anyio.Event()
        await state.thaw.wait()
    if state.killed:
        raise connection_closed(addr)
    injection = controls.take(addr, operation)
    if injection is not None and injection.after is None and is_error(injection.value):
        raise fresh(injection.value)
    await anyio.lowlevel.checkpoint()
    if state.killed:
        raise connection_closed(addr)
    return state, injection


async def pipeline(
    cluster: ClusterState,
    controls: CallControls,
    addr: NodeAddr,
    operation: str,
    items: Sequence[_T],
    answer: Callable[[NodeState, _T], Any],
    *,
    window: int,
    on_reply: OnReply | None,
) -> list[Any]:
    """One call that answers each item in turn, as a pipeline does; faults may cut it short."""
    state, injected = await enter(cluster, controls, addr, operation)
    if injected is not None and not is_error(injected.value):
        return cast(list[Any], injected.value)
    replies: list[Any] = []
    for i, item in enumerate(items):
        if injected is not None and i == injected.after:
            raise fresh(injected.value)
        if state.killed:
            raise connection_closed(addr)
        fault = controls.reply_fault(addr, operation)
        reply = fault if fault is not None else answer(state, item)
        replies.append(reply)
        if on_reply is not None:
            on_reply(i, reply)
        if (i + 1) % max(1, window) == 0 and i + 1 < len(items):
            await anyio.lowlevel.checkpoint()
    if injected is not None and injected.after is not None:
        raise fresh(injected.value)
    return replies
