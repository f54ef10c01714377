"""What a test controls about every node call: the call log, hooks, injected faults and replies."""

from __future__ import annotations

import copy
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from clusterinval._core.values import NodeAddr

__all__ = [
    "OPERATIONS",
    "CallControls",
    "CallHook",
    "Injection",
    "Operation",
    "fresh",
    "is_error",
]

# Every node operation, by the name used in the call log, ``inject`` and ``on_call`` hooks.
Operation = Literal[
    "cluster_view", "ownership", "dbsize", "scan", "keys_in_slot", "replication",
    "key_commands", "asking", "script_ready", "batch_calls", "scan_step", "slot_walk",
]  # fmt: skip
OPERATIONS: Final[tuple[Operation, ...]] = (
    "cluster_view", "ownership", "dbsize", "scan", "keys_in_slot", "replication",
    "key_commands", "asking", "script_ready", "batch_calls", "scan_step", "slot_walk",
)  # fmt: skip
# Operations that run several commands in one call (a pipeline, or a walk of several calls).
_PIPELINED: Final = frozenset({"key_commands", "batch_calls"})
_REPLY_OPERATIONS: Final = ("key_commands", "asking", "batch_calls")

# Told (node, operation) before every node operation; may change the cluster, or raise to fail
# the call with that exception.
CallHook = Callable[[NodeAddr, str], None]


@dataclass
class Injection:
    """One injected fault or reply: what to raise or answer, how many more times, from where."""

    value: Any
    times: int
    after: int | None


_Table = dict[tuple[NodeAddr, str], deque[Injection]]


def is_error(value: Any) -> bool:
    """True when ``value`` is an exception instance or class (raised, not answered)."""
    return isinstance(value, BaseException) or (
        isinstance(value, type) and issubclass(value, BaseException)
    )


def fresh(value: Any) -> BaseException:
    """A new exception each time an injected one is raised (tracebacks do not pile up)."""
    if isinstance(value, type):
        return cast(BaseException, value(f"injected {value.__name__}"))
    return copy.copy(cast(BaseException, value))


class CallControls:
    """The call log, the ``on_call`` hooks and the queues of injected faults, per node operation."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[NodeAddr, str]] = Counter()
        self._hooks: list[CallHook] = []
        self._injections: _Table = {}
        self._reply_injections: _Table = {}

    def inject(
        self, node: NodeAddr, operation: str, error_or_reply: Any, times: int, after: int | None
    ) -> None:
        """Queue a fault or a reply for the next ``times`` calls of ``operation`` on ``node``."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; one of {', '.join(OPERATIONS)}")
        if after is not None and operation not in _PIPELINED:
            raise ValueError(f"after= applies to pipelined operations, not {operation!r}")
        self._injections.setdefault((node, operation), deque()).append(
            Injection(error_or_reply, times, after)
        )

    def inject_replies(
        self, node: NodeAddr, operation: str, error: BaseException, commands: int
    ) -> None:
        """Queue ``error`` as the reply of the next ``commands`` commands of a pipeline."""
        if operation not in _REPLY_OPERATIONS:
            raise ValueError(f"inject_replies() applies to pipelines, not {operation!r}")
        self._reply_injections.setdefault((node, operation), deque()).append(
            Injection(error, commands, None)
        )

    def on_call(self, callback: CallHook) -> Callable[[], None]:
        """Add a hook told of every node operation; returns its remover."""
        self._hooks.append(callback)

        def remove() -> None:
            if callback in self._hooks:
                self._hooks.remove(callback)

        return remove

    def log(self, addr: NodeAddr, operation: str) -> None:
        """Count the call, then tell every hook (which may change the cluster, or raise)."""
        self.calls[(addr, operation)] += 1
        for hook in list(self._hooks):
            hook(addr, operation)

    def take(self, addr: NodeAddr, operation: str) -> Injection | None:
        """The injection for this call of ``operation`` on ``addr``, used up by one; or None."""
        return self._take(self._injections, addr, operation)

    def reply_fault(self, addr: NodeAddr, operation: str) -> BaseException | None:
        """The injected error reply for the next command of a pipeline, or None."""
        found = self._take(self._reply_injections, addr, operation)
        return fresh(found.value) if found is not None else None

    @staticmethod
    def _take(table: _Table, addr: NodeAddr, operation: str) -> Injection | None:
        queue = table.get((addr, operation))
        if not queue:
            return None
        head = queue[0]
        head.times -= 1
        if head.times <= 0:
            queue.popleft()
        return head
