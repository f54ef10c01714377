"""The one retry policy of a run: which errors are worth another try, how many tries, how long
to wait between them, and which replies are refusals (never retried)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    ClusterCrossSlotError,
    ClusterDownError,
    MasterDownError,
    NoPermissionError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from clusterinval._core.values import ErrorKind, NodeAddr
from clusterinval.errors import ClusterPermissionError

__all__ = [
    "Backoff", "RetryPolicy", "classify", "describe", "is_transient", "leading_error", "refusal",
]

T = TypeVar("T")



def classify(exc: BaseException) -> ErrorKind:
    """The metrics/error kind of an exception raised while talking to a node."""
    if isinstance(exc, NoPermissionError | AuthenticationError):
        return "permission"
    if isinstance(exc, BusyLoadingError):
        return "loading"
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, RedisConnectionError | OSError):
        return "connection"
    if isinstance(exc, AskError):  # MovedError is a subclass
        return "redirect"
    if isinstance(exc, TryAgainError):
        return "tryagain"
    if isinstance(exc, ClusterDownError | MasterDownError | ReadOnlyError):
        return "clusterdown"
    if isinstance(exc, ClusterCrossSlotError):
        return "crossslot"
    if isinstance(exc, ResponseError):
        text = str(exc)
        if text.startswith(("NOPERM", "WRONGPASS", "NOAUTH")) or "no permissions" in text:
            return "permission"
        if text.startswith("LOADING"):
            return "loading"
        if text.startswith("CLUSTERDOWN"):
            return "clusterdown"
        if text.startswith("TRYAGAIN"):
            return "tryagain"
    return "other"


_TRANSIENT: frozenset[ErrorKind] = frozenset(
    {"connection", "timeout", "tryagain", "clusterdown", "loading", "redirect"}
)


def is_transient(exc: BaseException) -> bool:
    """True for errors that a later try may not meet (failover, migration, loading, network)."""
    if isinstance(exc, RedisError | OSError | TimeoutError):
        return classify(exc) in _TRANSIENT
    return False


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential back-off with full jitter."""

    base_s: float = 0.05
    cap_s: float = 2.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before try number ``attempt`` (1-based) is repeated."""
        ceiling = min(self.cap_s, self.base_s * (2 ** max(0, attempt - 1)))
        return (rng or random).uniform(0, ceiling)


def describe(exc: BaseException) -> str:
    """A one-line, bounded description of ``exc`` for messages and logs."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) < 240 else text[:237] + "..."


def leading_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to raise for a (nested) task-group error: one of ours if any, else the first."""
    from clusterinval.errors import ClusterInvalError

    ours = group.subgroup(lambda e: isinstance(e, ClusterInvalError))
    exc: BaseException = ours if ours is not None else group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def refusal(node: NodeAddr, exc: BaseException, what: str) -> ClusterPermissionError | None:
    """The typed error for a reply that refuses us (ACL, auth), or None for any other error."""
    if classify(exc) != "permission":
        return None
    return ClusterPermissionError(
        f"{node.name} refused {what}: {describe(exc)}; check the ACL user's key patterns and "
        "command permissions",
        node.name,
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a run retries: one node command, a delete batch, a round of scan passes.

    ``command_attempts`` tries of one node command (a SCAN, an ownership reading, a step) before
    its pass ends early; ``attempts`` tries of a delete batch, and rounds in a row in which no
    node answers, before the run gives up on them.
    """

    attempts: int
    backoff: Backoff
    command_attempts: int = 3

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try number ``attempt`` (1-based) is repeated."""
        return self.backoff.delay(attempt)

    async def call(
        self,
        node: NodeAddr,
        fn: Callable[[], Awaitable[T]],
        *,
        timeout_s: float,
        what: str,
        on_retry: Callable[[BaseException], None],
    ) -> T:
        """``fn()`` under ``timeout_s``, tried again after transient errors; refusals raised."""
        for attempt in range(1, self.command_attempts + 1):
            try:
                with anyio.fail_after(timeout_s):
                    return await fn()
            except (RedisError, OSError, TimeoutError) as exc:
                refused = refusal(node, exc, what)
                if refused is not None:
                    raise refused from None
                if not is_transient(exc) or attempt == self.command_attempts:
                    raise
                on_retry(exc)
                await anyio.sleep(self.delay(attempt))
        raise AssertionError("unreachable")
