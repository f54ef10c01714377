"""retry.classify / is_transient / Backoff: which errors are retried, how long between tries; and
the pacing of ratelimit (key budget, adaptive latency governor)."""

from __future__ import annotations

import random

import anyio
import pytest
from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    ClusterCrossSlotError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    NoPermissionError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from clusterinval._engine.ratelimit import KeyRateLimiter, LatencyGovernor
from clusterinval._engine.retry import Backoff, classify, is_transient
from clusterinval.errors import InvalidInputError
from clusterinval.options import InvalidatorOptions

TRANSIENT = [
    (RedisConnectionError("Connection reset by peer"), "connection"),
    (ConnectionResetError(104, "reset"), "connection"),
    (RedisTimeoutError("Timeout reading from socket"), "timeout"),
    (TimeoutError(), "timeout"),
    (TryAgainError("Multiple keys request during rehashing of slot"), "tryagain"),
    (ClusterDownError("The cluster is down"), "clusterdown"),
    (MasterDownError("Link with MASTER is down"), "clusterdown"),
    (ReadOnlyError("You can't write against a read only replica."), "clusterdown"),
    (BusyLoadingError("Redis is loading the dataset in memory"), "loading"),
    (MovedError("3999 127.0.0.1:6381"), "redirect"),
    (AskError("3999 127.0.0.1:6381"), "redirect"),
    # Raw replies as they come back inside a script's pcall or from a pipeline without parsing.
    (ResponseError("LOADING Redis is loading the dataset in memory"), "loading"),
    (ResponseError("CLUSTERDOWN The cluster is down"), "clusterdown"),
    (ResponseError("TRYAGAIN Multiple keys request during rehashing of slot"), "tryagain"),
]

PERMANENT = [
    (NoPermissionError("this user has no permissions to access one of the keys"), "permission"),
    (AuthenticationError("invalid username-password pair or user is disabled."), "permission"),
    (ResponseError("NOPERM this user has no permissions to run the 'unlink' command"),
     "permission"),
    (ResponseError("WRONGPASS invalid username-password pair"), "permission"),
    (ResponseError("NOAUTH Authentication required."), "permission"),
    (ClusterCrossSlotError("Keys in request don't hash to the same slot"), "crossslot"),
    (ResponseError("ERR unknown command 'UNLINK'"), "other"),
    (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), "other"),
    (ValueError("not a redis error"), "other"),
]


@pytest.mark.parametrize(("exc", "kind"), TRANSIENT, ids=lambda v: getattr(v, "__name__", None)
                         or str(v)[:20])
def test_transient_errors_are_retried(exc: BaseException, kind: str) -> None:
    assert classify(exc) == kind
    assert is_transient(exc)


@pytest.mark.parametrize(("exc", "kind"), PERMANENT, ids=lambda v: str(v)[:20])
def test_permanent_errors_are_not_retried(exc: BaseException, kind: str) -> None:
    assert classify(exc) == kind
    assert not is_transient(exc)


def test_backoff_is_capped() -> None:
    backoff = Backoff(base_s=0.1, cap_s=1.5)
    rng = random.Random(7)
    for attempt in range(1, 40):
        ceiling = min(1.5, 0.1 * 2 ** (attempt - 1))
        for _ in range(50):
            delay = backoff.delay(attempt, rng)
            assert 0.0 <= delay <= ceiling


def test_backoff_grows_exponentially_until_the_cap() -> None:
    backoff = Backoff(base_s=0.05, cap_s=2.0)
    rng = random.Random(1)
    means = [sum(backoff.delay(a, rng) for _ in range(4000)) / 4000 for a in (1, 2, 3, 4, 8, 12)]
    # Full jitter: the mean is half the ceiling (0.025, 0.05, 0.1, 0.2, then capped at 1.0).
    for mean, expected in zip(means, (0.025, 0.05, 0.1, 0.2, 1.0, 1.0), strict=True):
        assert mean == pytest.approx(expected, rel=0.1)


def test_backoff_is_jittered() -> None:
    backoff = Backoff(base_s=0.05, cap_s=2.0)
    rng = random.Random(3)
    delays = {round(backoff.delay(5, rng), 6) for _ in range(100)}
    assert len(delays) > 90, "delays of concurrent retries must spread, not synchronise"


def test_backoff_of_zero_base_never_waits() -> None:
    assert all(Backoff(0.0, 2.0).delay(a) == 0.0 for a in range(1, 10))


def test_backoff_attempt_below_one_uses_the_base() -> None:
    rng = random.Random(5)
    assert all(Backoff(0.2, 5.0).delay(0, rng) <= 0.2 for _ in range(100))


# -- pacing: the key budget and the adaptive latency governor ----------------------------------


def test_governor_backs_off_while_slow_and_recovers() -> None:
    gov = LatencyGovernor(10.0, floor_s=0.002, max_pause_s=0.1)
    gov.observe("a", 0.005)
    assert gov.pause_of("a") == 0.0, "a node under target runs at full speed"
    pauses = []
    for _ in range(10):
        gov.observe("a", 0.050)
        pauses.append(gov.pause_of("a"))
    assert pauses[:4] == [0.002, 0.004, 0.008, 0.016]
    assert max(pauses) == 0.1, "the pause is capped"
    assert gov.pause_of("b") == 0.0, "nodes are paced independently"
    for _ in range(10):
        gov.observe("a", 0.001)
    assert gov.pause_of("a") == 0.0, "the pause decays to nothing once latency is back"
    assert gov.slowed == 10


def test_adaptive_option_is_validated() -> None:
    assert InvalidatorOptions(adaptive_latency_ms=5).adaptive_latency_ms == 5
    with pytest.raises(InvalidInputError):
        InvalidatorOptions(adaptive_latency_ms=0)


@pytest.mark.anyio
async def test_key_budget_paces_after_the_burst() -> None:
    limiter = KeyRateLimiter(10_000)
    started = anyio.current_time()
    for _ in range(30):
        await limiter.acquire(100)
    elapsed = anyio.current_time() - started
    # 1,000 keys of burst (0.1 s worth), the other 2,000 at 10,000/s.
    assert 0.18 <= elapsed < 0.8


@pytest.mark.anyio
async def test_unlimited_budget_never_waits() -> None:
    limiter = KeyRateLimiter(None)
    with anyio.fail_after(0.5):
        for _ in range(1000):
            await limiter.acquire(10_000)
