"""The benchmark's plain RESP set-up client, against the session's real cluster."""

from __future__ import annotations

import anyio
import pytest
import redis

from clusterinval._core.slots import key_slot
from clusterinval.loadtest.plainresp import PlainRespError, PlainSetter
from clusterinval.testing.fill import cluster_primaries, slot_owners

pytestmark = pytest.mark.anyio

KEYS = [f"plain:{i}" for i in range(30)] + ["{t:1}:a", "{t:1}:b"]


def owners_of(url: str, keys: list[str]) -> dict[str, tuple[str, int]]:
    owners = slot_owners(url)
    found: dict[str, tuple[str, int]] = {}
    for key in keys:
        owner = owners[key_slot(key.encode())]
        assert owner is not None
        found[key] = owner
    return found


async def test_sets_and_counts_keys_on_their_owners(cluster_url: str,
                                                    client: redis.RedisCluster) -> None:
    with anyio.fail_after(10):
        async with PlainSetter(cluster_url, owners_of(cluster_url, KEYS)) as setter:
            assert await setter.each(b"EXISTS", KEYS) == 0
            assert await setter.each(b"SET", KEYS, b"v") == 0  # +OK replies add nothing
            assert await setter.each(b"EXISTS", KEYS) == len(KEYS)
            client.delete(KEYS[0], KEYS[-1])
            assert await setter.each(b"EXISTS", KEYS) == len(KEYS) - 2
    assert client.get(KEYS[1]) == b"v"
    assert len(client.mget_nonatomic(KEYS)) == len(KEYS)


async def test_a_key_sent_to_another_primary_is_an_error(cluster_url: str) -> None:
    owners = owners_of(cluster_url, KEYS[:1])
    elsewhere = next(p for p in cluster_primaries(cluster_url) if p != owners[KEYS[0]])
    with anyio.fail_after(10):
        async with PlainSetter(cluster_url, {KEYS[0]: elsewhere}) as setter:
            with pytest.raises(PlainRespError, match="MOVED"):
                await setter.each(b"SET", KEYS[:1], b"v")


def test_an_unknown_key_is_refused_before_anything_is_sent(cluster_url: str) -> None:
    setter = PlainSetter(cluster_url, {})
    with pytest.raises(KeyError):
        anyio.run(setter.each, b"SET", ["nobody:knows"], b"v")
