"""What a result says is what happened: deadlines, partial runs, the empty key, dry-run counts."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
import redis
from prometheus_client import CollectorRegistry

from clusterinval import (
    ClusterInvalidator,
    InvalidationError,
    InvalidationResult,
    SyncClusterInvalidator,
)
from clusterinval._core.slots import key_slot
from clusterinval.testing.fill import fill_keys, scan_all_keys

pytestmark = pytest.mark.anyio


def _uncovered(result: InvalidationResult) -> set[int]:
    return {s for lo, hi in result.uncovered_slots for s in range(lo, hi + 1)}


def _deleted_metric(registry: CollectorRegistry, operation: str) -> float:
    value = registry.get_sample_value("clusterinval_keys_deleted_total",
                                      {"operation": operation})
    return value or 0.0


def _check_cut_short(result: InvalidationResult, keys: list[bytes], url: str) -> set[bytes]:
    """The run stopped early, and its result accounts for every key exactly."""
    left = scan_all_keys(url) & set(keys)
    assert left, "the run was meant to be cut short, but every key went"
    assert not result.complete
    assert result.deleted == len(keys) - len(left)
    assert result.exact_deleted == result.deleted
    assert {key_slot(k) for k in left} <= _uncovered(result)
    return left


class TestDeadlineOnExactKeys:
    @pytest.mark.parametrize(
        ("n", "options"),
        [
            (20_000, {"keys_per_second": 10_000, "timeout_s": 0.5}),
            (20_000, {"timeout_s": 1e-9}),
            (2_000, {"keys_per_second": 1e-9, "timeout_s": 0.3}),
            # Unthrottled, large enough that the deadline falls inside a chunk of keys.
            (300_000, {"timeout_s": 0.15}),
        ],
        ids=["rate-limited", "instant-deadline", "no-budget", "mid-chunk"],
    )
    async def test_cut_short_is_incomplete_and_counted(
        self, cluster_url: str, n: int, options: dict[str, float]
    ) -> None:
        keys = [f"ed:{i}".encode() for i in range(n)]
        fill_keys(cluster_url, keys)
        registry = CollectorRegistry()
        async with ClusterInvalidator.from_url(cluster_url, registry=registry,
                                               **options) as inv:
            with pytest.raises(InvalidationError) as err:
                await inv.invalidate(keys=keys, operation_name="deadline")
        result = err.value.result
        _check_cut_short(result, keys, cluster_url)
        assert any("deadline" in e for e in result.errors)
        assert _deleted_metric(registry, "deadline") == result.deleted

    def test_sync_api_too(self, cluster_url: str) -> None:
        keys = [f"ed:{i}".encode() for i in range(20_000)]
        fill_keys(cluster_url, keys)
        with (
            SyncClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry(),
                                            keys_per_second=10_000, timeout_s=0.5) as inv,
            pytest.raises(InvalidationError) as err,
        ):
            inv.invalidate(keys=keys)
        _check_cut_short(err.value.result, keys, cluster_url)


@pytest.fixture
def paused_writes(local_cluster: object, cluster_url: str) -> Iterator[tuple[int, int]]:
    """Two primaries' ports; the second refuses writes for 20 s (un-paused at teardown)."""
    from clusterinval.testing.fill import cluster_primaries

    (_, a), (_, b) = cluster_primaries(cluster_url)[:2]
    yield a, b
    with redis.Redis(port=b) as c:
        c.execute_command("CLIENT", "UNPAUSE")


def _key_on(url: str, port: int, prefix: str) -> bytes:
    from clusterinval.testing.fill import slot_owners

    owners = slot_owners(url)
    i = 0
    while True:
        key = f"{prefix}:{i}".encode()
        owner = owners[key_slot(key)]
        if owner is not None and owner[1] == port:
            return key
        i += 1


class TestPartialResults:
    async def test_a_node_that_stops_answering_does_not_hide_what_others_did(
        self, cluster_url: str, paused_writes: tuple[int, int]
    ) -> None:
        a, b = paused_writes
        on_a, on_b = _key_on(cluster_url, a, "pa"), _key_on(cluster_url, b, "pb")
        fill_keys(cluster_url, [on_a, on_b])
        with redis.Redis(port=b) as c:
            c.execute_command("CLIENT", "PAUSE", 20_000, "WRITE")
        registry = CollectorRegistry()
        async with ClusterInvalidator.from_url(
            cluster_url, registry=registry, command_timeout_s=0.3, retries=1, timeout_s=5,
        ) as inv:
            with pytest.raises(InvalidationError, match="deleted 1 keys") as err:
                await inv.invalidate(keys=[on_a, on_b], operation_name="paused")
        result = err.value.result
        assert result.deleted == 1 and result.exact_deleted == 1
        assert _uncovered(result) == {key_slot(on_b)}
        assert _deleted_metric(registry, "paused") == 1
        with redis.RedisCluster.from_url(cluster_url) as rc:
            assert rc.exists(on_a) == 0


class TestEmptyKey:
    """Redis reports the empty key for the pattern "*" alone (SCAN and KEYS skip matching then),
    and for no other pattern: stringmatchlen never matches an empty string."""

    async def _run(self, url: str, pattern: str, **options: object) -> InvalidationResult:
        async with ClusterInvalidator.from_url(url, registry=CollectorRegistry(),
                                               **options) as inv:
            return await inv.invalidate(patterns=[pattern], allow_match_all=True)

    @pytest.mark.parametrize("server_scripts", [True, False], ids=["scripts", "plain"])
    @pytest.mark.parametrize(("pattern", "empty_goes"),
                             [("*", True), ("**", False), ("***", False), ("?*", False)])
    async def test_like_redis(self, cluster_url: str, pattern: str, empty_goes: bool,
                              server_scripts: bool) -> None:
        fill_keys(cluster_url, [b"", b"a", b"bb:1"])
        with redis.Redis(port=_owner_port(cluster_url, b"")) as node:
            assert (b"" in node.keys(pattern)) == empty_goes  # what Redis itself says
        result = await self._run(cluster_url, pattern, server_scripts=server_scripts)
        left = scan_all_keys(cluster_url)
        assert left == (set() if empty_goes else {b""})
        assert result.deleted == (3 if empty_goes else 2)


def _owner_port(url: str, key: bytes) -> int:
    from clusterinval.testing.fill import slot_owners

    owner = slot_owners(url)[key_slot(key)]
    assert owner is not None
    return owner[1]


class TestDryRunCounts:
    async def test_a_key_matching_two_passes_is_counted_once(self, cluster_url: str) -> None:
        keys = [b"dd:1:x", b"dd:2:y", b"q:3:x", b"q:4:z"]
        fill_keys(cluster_url, keys)
        async with ClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry()) as inv:
            dry = await inv.invalidate(keys=[b"q:3:x"], patterns=["dd:*", "*:x"], dry_run=True)
            # The same call for real: the dry run's figure is what it removes.
            real = await inv.invalidate(keys=[b"q:3:x"], patterns=["dd:*", "*:x"])
        assert dry.matched == 3
        assert real.deleted == 3
        assert scan_all_keys(cluster_url) == {b"q:4:z"}


@pytest.mark.parametrize(
    ("pattern", "server_scripts"),
    [("dl:*", True), ("d?:*", True), ("dl:*", False)],
    ids=["slot-walk", "server-scan-step", "plain-pipeline"],
)
async def test_deadline_on_a_pattern_reports_slots_not_done(
    cluster_url: str, pattern: str, server_scripts: bool
) -> None:
    keys = [f"dl:{i}".encode() for i in range(30_000)]
    fill_keys(cluster_url, keys)
    async with ClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry(),
                                           keys_per_second=10_000, timeout_s=0.5,
                                           server_scripts=server_scripts) as inv:
        with pytest.raises(InvalidationError) as err, anyio.fail_after(30):
            await inv.invalidate(patterns=[pattern])
    result = err.value.result
    left = scan_all_keys(cluster_url) & set(keys)
    assert left and not result.complete
    assert result.deleted == len(keys) - len(left)
    assert {key_slot(k) for k in left} <= _uncovered(result)
