"""Which errors are worth retrying, and how long to wait between tries."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

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

__all__ = ["Backoff", "ErrorKind", "classify", "describe", "is_transient", "leading_error"]

ErrorKind = Literal[
    "connection", "timeout", "permission", "redirect", "tryagain", "clusterdown",
    "loading", "crossslot", "input", "other",
]


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
