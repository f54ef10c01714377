"""Tags on a real cluster: members in every slot, writers racing an invalidation, a large index
read without any slow command, the sync and compatible APIs, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import anyio
import pytest
import redis
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator, SyncClusterInvalidator
from clusterinval._core.slots import SLOT_COUNT, key_slot
from clusterinval._core.tags import set_key, takes_key
from clusterinval._io.redis_tags import INDEX_SCRIPT_SHAS
from clusterinval.compat import RedisService
from clusterinval.testing.fill import fill_keys

pytestmark = pytest.mark.anyio


def _one_per_slot(prefix: str) -> list[bytes]:
    """One key in each of the 16384 slots (hash tags found in one sweep, not slot by slot)."""
    found: dict[int, bytes] = {}
    i = 0
    while len(found) < SLOT_COUNT:
        key = f"{{{prefix}{i}}}:v".encode()
        found.setdefault(key_slot(key), key)
        i += 1
    return [found[slot] for slot in range(SLOT_COUNT)]


def _index(client: redis.RedisCluster, tag: str) -> set[bytes]:
    return set(client.smembers(set_key(tag.encode())))


async def test_members_in_every_slot(cluster_url: str, client: redis.RedisCluster) -> None:
    tagged = _one_per_slot("m")
    other = _one_per_slot("o")[::97]
    fill_keys(cluster_url, tagged + other)
    registry = CollectorRegistry()
    async with ClusterInvalidator.from_url(cluster_url, registry=registry) as inv:
        assert await inv.tag(tagged, tags=["every-slot"]) == SLOT_COUNT
        assert await inv.tag(other[:10], tags=["every-slot-other"]) == 10
        dry = await inv.invalidate(tags=["every-slot"], operation_name="tagged", dry_run=True)
        assert dry.matched == SLOT_COUNT and dry.deleted == 0
        result = await inv.invalidate(tags=["every-slot", "never-used"], operation_name="tagged")
    assert result.complete and result.deleted == SLOT_COUNT
    assert result.per_tag == (("every-slot", SLOT_COUNT), ("never-used", 0))
    assert result.to_dict()["per_tag"] == {"every-slot": SLOT_COUNT, "never-used": 0}
    assert sum(client.exists(k) for k in tagged[:200]) == 0
    assert client.exists(*other) == len(other)
    assert not client.exists(set_key(b"every-slot"), takes_key(b"every-slot"))
    assert _index(client, "every-slot-other") == set(other[:10])
    value = registry.get_sample_value
    assert value("clusterinval_tag_members_removed_total", {"operation": "tagged"}) == SLOT_COUNT
    assert value("clusterinval_tag_invalidations_total", {"operation": "tagged"}) == 2
    assert value("clusterinval_tag_set_size_count", {"operation": "tagged"}) == 2


async def test_writer_sets_values_ttls_and_index(cluster_url: str,
                                                 client: redis.RedisCluster) -> None:
    async with ClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry()) as inv:
        async with inv.tagged_writer(tags=["user:42", "project:7"]) as w:
            await w.set("user:42:feed", "v1", ex=300)
            await w.set_many({"user:42:a": b"x", "user:42:b": 3}, px=60_000)
        assert client.get("user:42:feed") == b"v1" and client.get("user:42:b") == b"3"
        assert 290_000 < client.pttl(set_key(b"user:42")) <= 301_000
        async with inv.tagged_writer(tags=["user:42"]) as w:
            await w.set("user:42:forever", "v")
        assert client.pttl(set_key(b"user:42")) == -1  # a member never expires: nor does its index
        result = await inv.invalidate(tags=["project:7"], operation_name="project")
    assert result.deleted == 3 and client.exists("user:42:forever") == 1
    # The other tag still lists the deleted keys: harmless, and gc trims them.
    assert len(_index(client, "user:42")) == 4


async def test_writers_racing_an_invalidation_leave_no_live_key_unindexed(
        cluster_url: str, client: redis.RedisCluster) -> None:
    before = [f"race:before:{i}" for i in range(500)]
    after = [f"race:after:{i}" for i in range(50)]
    written: list[str] = []
    async with (ClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry()) as inv,
                inv.tagged_writer(tags=["race"]) as w):
        await w.set_many(dict.fromkeys(before, "v"))

        async def writer() -> None:
            for i in range(400):
                key = f"race:during:{i}"
                await w.set(key, "v")
                written.append(key)

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            result = await inv.invalidate(tags=["race"], operation_name="race")
        await w.set_many(dict.fromkeys(after, "v"))
    assert result.complete
    assert client.exists(*before) == 0  # indexed before the take: gone
    assert client.exists(*after) == len(after)  # written after the run: kept
    index = _index(client, "race")
    alive = [k for k in written if client.exists(k)]
    assert all(k.encode() in index for k in alive + after), "a live tagged key is not indexed"


async def test_concurrent_tag_calls_share_batches(cluster_url: str,
                                                  client: redis.RedisCluster) -> None:
    # 300 callers at once, one entity each (10 entries), on one invalidator: every call
    # reports exactly its own entries, every entry goes, nothing else does, and the batches leave
    # no index bookkeeping behind once the invalidator closes.
    entities = {e: [f"ent:{e}:{j}".encode() for j in range(10)] for e in range(300)}
    other = [f"ent-other:{i}".encode() for i in range(200)]
    fill_keys(cluster_url, [k for keys in entities.values() for k in keys] + other)
    registry = CollectorRegistry()
    results: dict[int, int] = {}
    async with ClusterInvalidator.from_url(cluster_url, registry=registry) as inv:
        for e, keys in entities.items():
            await inv.tag(keys, tags=[f"ent:{e}"])

        async def one(e: int) -> None:
            result = await inv.invalidate(tags=[f"ent:{e}"], operation_name="storm")
            assert result.complete
            results[e] = result.deleted

        async with anyio.create_task_group() as tg:
            for e in entities:
                tg.start_soon(one, e)
    assert results == dict.fromkeys(entities, 10)
    assert client.exists(*[k for keys in entities.values() for k in keys]) == 0
    assert client.exists(*other) == len(other)
    nodes = [redis.Redis(host=p.host, port=p.port) for p in client.get_primaries()]
    try:
        left = [k for n in nodes for k in n.scan_iter(match=b"clusterinval:tag:{ent:*")]
    finally:
        for node in nodes:
            node.close()
    assert left == []
    value = registry.get_sample_value
    assert value("clusterinval_tag_members_removed_total", {"operation": "storm"}) == 3000


# 1,000,000 members is a soak run (-m soak).
@pytest.mark.parametrize("n", [100_000, pytest.param(1_000_000, marks=pytest.mark.soak)])
async def test_a_large_index_is_read_without_a_slow_command(cluster_url: str,
                                                            client: redis.RedisCluster,
                                                            n: int) -> None:
    # Every command is logged with its server time; the index's own commands (the take, each
    # SSCAN step, the drop) must stay short whatever the index size. The members' deletes are
    # the exact-key path, whose call sizes the benchmark's longest-command figure follows (on a
    # loaded 2-core host the scheduler may preempt any call, and SLOWLOG counts that time).
    keys = [f"big:{i}".encode() for i in range(n)]
    fill_keys(cluster_url, keys)
    async with ClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry()) as inv:
        assert await inv.tag(keys, tags=["big"]) == n
        nodes = [redis.Redis(host=p.host, port=p.port) for p in client.get_primaries()]
        try:
            for node in nodes:
                node.config_set("slowlog-max-len", 100_000)
                node.config_set("slowlog-log-slower-than", 0)
                node.slowlog_reset()
            result = await inv.invalidate(tags=["big"], operation_name="big")
            logged = [entry for node in nodes for entry in node.slowlog_get(100_000)]
        finally:
            for node in nodes:
                node.config_set("slowlog-log-slower-than", 10_000)
                node.config_set("slowlog-max-len", 128)
                node.slowlog_reset()
                node.close()
    assert result.complete and result.deleted == n
    index = [e for e in logged
             if e["command"].startswith(b"SSCAN")
             or (e["command"].startswith(b"EVALSHA")
                 and e["command"].split()[1] in INDEX_SCRIPT_SHAS)]
    steps = sum(e["command"].startswith(b"SSCAN") for e in index)
    assert steps >= n // 1000  # read in steps, not in one command
    slow = [e for e in index if e["duration"] > 10_000]
    assert slow == [], f"index commands over 10 ms: {slow[:3]}"
    assert not client.exists(set_key(b"big"))


def test_sync_twin_and_facade(cluster_url: str, client: redis.RedisCluster) -> None:
    client.set("s:1", 1)
    client.set("s:2", 1)
    with SyncClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry()) as inv:
        assert inv.tag(["s:1", "s:2"], tags=["sync"]) == 2
        result = inv.invalidate(tags=["sync"], operation_name="sync")
        assert result.deleted == 2 and result.per_tag == (("sync", 2),)
        assert inv.gc_tags().sets >= 0
    client.set("f:1", 1)

    async def facade() -> None:
        async with ClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry()) as inv:
            await inv.tag(["f:1"], tags=["facade"])
        async with RedisService(cluster_url) as svc:
            await svc.invalidate_cache_by_patterns(operation_name="facade", tags=["facade"])
            assert svc.last_result is not None and svc.last_result.per_tag == (("facade", 1),)

    anyio.run(facade)
    assert client.exists("f:1") == 0


def test_cli_tag_and_gc(cluster_url: str, client: redis.RedisCluster) -> None:
    client.set("c:1", 1)
    client.set("c:2", 1)
    client.sadd(set_key(b"cli"), "c:1", "c:2", "c:gone")
    cli = [sys.executable, "-m", "clusterinval.cli.main"]
    gc = subprocess.run([*cli, "tags", "gc", "--url", cluster_url, "--tag", "cli", "--json"],
                        capture_output=True, text=True, timeout=60)
    assert gc.returncode == 0, gc.stderr
    assert json.loads(gc.stdout) == {"sets": 1, "members": 3, "removed": 1}
    run = subprocess.run([*cli, "invalidate", "--url", cluster_url, "--tag", "cli", "--json",
                          "-o", "cli"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["deleted"] == 2 and out["per_tag"] == {"cli": 2} and out["complete"]
    assert client.exists("c:1", "c:2") == 0
