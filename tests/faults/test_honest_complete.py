"""A run that says complete left nothing behind: slots that leave a node and come back mid-pass.

Each test drives a real cluster deterministically: a rate limit stretches the pass on one primary
(A); the test moves a slot S holding matching keys to another primary (B) once A's pass is under
way, and back to A once the pass is past it, so A never read S while it owned it. Both readings of
A's ownership (before and after its pass) still say "A owns S". The run must not count S as
covered on that evidence: it reads S again on its owner, or reports it uncovered.
"""

from __future__ import annotations

import anyio
import pytest
import redis
from faultkit import ClusterFactory, migrate_slots, until_deleted, wait_for
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator, InvalidationError, InvalidationResult
from clusterinval._core.slots import key_slot
from clusterinval.testing.fill import fill_keys, scan_all_keys
from clusterinval.testing.local import LocalCluster

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# The slot that goes away and comes back, and how many matching keys it holds.
_S = 3000
_S_KEYS = 50
# Matching keys spread over A's other slots: what the rate limit makes A's pass take time over.
_FILLER = 3000


def _tags_by_slot(slots: set[int]) -> dict[int, str]:
    """A hash tag landing in each slot of ``slots``."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < len(slots):
        tag = f"t{i}"
        slot = key_slot(tag.encode())
        if slot in slots and slot not in found:
            found[slot] = tag
        i += 1
    return found


def _layout(suffix: str) -> tuple[list[bytes], list[bytes], list[bytes], bytes]:
    """Filler keys on slots 0..5460 but S (one per slot, cycling), S's keys, kept keys, marker.

    The marker is a filler key in a slot well past S: once it is gone, A's slot walk is past S.
    """
    a_slots = set(range(0, 5461)) - {_S}
    tags = _tags_by_slot(a_slots | {_S})
    ordered = sorted(a_slots)
    filler = [f"bf:{{{tags[ordered[i * len(ordered) // _FILLER]]}}}:{i}{suffix}".encode()
              for i in range(_FILLER)]
    s_keys = [f"bf:{{{tags[_S]}}}:s{i}{suffix}".encode() for i in range(_S_KEYS)]
    kept = [f"keep:{{{tags[_S]}}}:{i}".encode() for i in range(20)]
    # Enough other keys that deleting the matches never shrinks a node's hash table (a SCAN
    # across a shrink goes over buckets again, which would hide what these tests look for).
    kept += [f"kb:{i}".encode() for i in range(30_000)]
    marker = next(k for k in filler if key_slot(k) > _S + 300)
    return filler, s_keys, kept, marker


def _exists(url: str, key: bytes) -> bool:
    with redis.RedisCluster.from_url(url) as rc:
        return bool(rc.exists(key))


async def _back_and_forth(
    cluster: LocalCluster, pattern: str, suffix: str, *, server_scripts: bool, walk: bool
) -> tuple[InvalidationResult, set[bytes]]:
    filler, s_keys, kept, marker = _layout(suffix)
    fill_keys(cluster.url, [*filler, *s_keys, *kept])
    a, b = (n.port for n in cluster.primaries()[:2])
    ports = [n.port for n in cluster.nodes]
    assert all(key_slot(k) == _S for k in s_keys)
    results: list[InvalidationResult] = []
    async with ClusterInvalidator.from_url(
        cluster.url, registry=CollectorRegistry(), keys_per_second=3000, timeout_s=60,
        server_scripts=server_scripts, scan_count=50, server_scan_count=50,
        # The client-side path reads no further ahead of its deletions than this.
        buffer_keys=50, unlink_batch=10, stream_depth=1, deleters_per_node=1,
    ) as inv:
        watch = inv.progress_watch()

        async def invalidate() -> None:
            try:
                results.append(await inv.invalidate(patterns=[pattern], progress=watch))
            except InvalidationError as exc:
                results.append(exc.result)

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                tg.start_soon(invalidate)
                await until_deleted(watch, 300)  # A's pass is under way, ownership read
                await anyio.to_thread.run_sync(lambda: migrate_slots(a, b, [_S], ports))
                if walk:
                    # The walk goes up A's slots in order: once the marker is gone, it is past S.
                    await anyio.to_thread.run_sync(lambda: wait_for(
                        lambda: not _exists(cluster.url, marker), 60, "the walk to pass S"))
                else:
                    # A SCAN visits keys in no slot order: most of A's matches gone is the point
                    # where most of its keyspace has been read.
                    await until_deleted(watch, int(_FILLER * 0.9))
                assert results == [], "the run ended before the slot came back"
                await anyio.to_thread.run_sync(lambda: migrate_slots(b, a, [_S], ports))
    left = scan_all_keys(cluster.url)
    assert set(kept) <= left, "a key that matches no pattern was deleted"
    return results[0], left & {*filler, *s_keys}


@pytest.mark.parametrize(
    ("pattern", "server_scripts", "walk"),
    [("bf:*", True, True), ("bf:*:v", True, False), ("bf:*", False, False)],
    ids=["slot-walk", "server-scan-step", "plain-pipeline"],
)
async def test_slot_that_leaves_and_returns_is_not_counted_as_covered(
    make_cluster: ClusterFactory, pattern: str, server_scripts: bool, walk: bool
) -> None:
    cluster = make_cluster(replicas=0)
    suffix = ":v" if pattern.endswith(":v") else ""
    result, survivors = await _back_and_forth(
        cluster, pattern, suffix, server_scripts=server_scripts, walk=walk)
    if result.complete:
        assert not survivors, (
            f"reported complete with {len(survivors)} matching keys left, e.g. "
            f"{sorted(survivors)[:3]}")
    else:
        left_slots = {key_slot(k) for k in survivors}
        uncovered = {s for lo, hi in result.uncovered_slots for s in range(lo, hi + 1)}
        assert left_slots <= uncovered
    # Within a minute's deadline the slot is read again on its owner: complete, nothing left.
    assert result.complete and not survivors
    assert result.deleted == _FILLER + _S_KEYS
