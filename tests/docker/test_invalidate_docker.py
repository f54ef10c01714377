"""The integration suite's core cases against the cluster in containers."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator, InvalidationResult
from clusterinval._core.slots import SLOT_COUNT, key_slot
from clusterinval.testing.fill import count_keys, fill_keys, scan_all_keys

pytestmark = [pytest.mark.docker, pytest.mark.anyio]

N = 10_000


async def invalidate(url: str, **kwargs: object) -> InvalidationResult:
    async with ClusterInvalidator.from_url(url, registry=CollectorRegistry()) as inv:
        return await inv.invalidate(**kwargs)  # type: ignore[arg-type]


def keyspace() -> tuple[list[bytes], list[bytes], list[bytes]]:
    """~10k keys: a third match the pattern, two are named exactly, the rest must stay."""
    matching = [f"catalog:models:{i}".encode() for i in range(0, N, 3)]
    others = [f"catalog:model:{i}".encode() for i in range(N - len(matching))]
    exact = [others[0], others[1]]
    return matching, others, exact


async def test_exact_keys_and_pattern_over_10k_keys(docker_cluster_url: str) -> None:
    url = docker_cluster_url
    matching, others, exact = keyspace()
    fill_keys(url, matching + others)
    assert count_keys(url) == N
    assert len({key_slot(k) for k in matching + others}) > SLOT_COUNT // 4  # spread over nodes

    r = await invalidate(
        url,
        keys=[k.decode() for k in exact] + ["catalog:model:missing"],
        patterns=["catalog:models:*"],
        operation_name="docker_core",
    )

    assert r.complete and r.uncovered_slots == ()
    assert r.deleted == len(matching) + len(exact)
    assert len(r.nodes) == 3 and sum(n.deleted for n in r.nodes) == r.deleted
    assert r.scanned >= N - len(exact)
    assert scan_all_keys(url, "catalog:models:*") == set()  # every match gone
    assert scan_all_keys(url) == set(others) - set(exact)  # every other key intact


async def test_dry_run_deletes_nothing(docker_cluster_url: str) -> None:
    url = docker_cluster_url
    matching, others, _ = keyspace()
    fill_keys(url, matching + others)
    r = await invalidate(url, patterns=["catalog:models:*"], operation_name="dry", dry_run=True)
    assert r.dry_run and r.complete
    assert r.deleted == 0 and r.matched == len(matching)
    assert r.sample and all(k.startswith(b"catalog:models:") for k in r.sample)
    assert count_keys(url) == N


async def test_hash_tagged_pattern_touches_one_slot(docker_cluster_url: str) -> None:
    url = docker_cluster_url
    tagged = [f"{{tenant:42}}:item:{i}".encode() for i in range(500)]
    other = [f"{{tenant:43}}:item:{i}".encode() for i in range(200)]
    fill_keys(url, tagged + other)
    r = await invalidate(url, patterns=["{tenant:42}:*"], operation_name="tenant")
    assert r.complete and r.deleted == 500
    assert r.scanned < 700  # only the tag's slot was listed
    assert scan_all_keys(url) == set(other)
