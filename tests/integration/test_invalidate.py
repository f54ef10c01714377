"""ClusterInvalidator against a real 3+3 Redis Cluster: what goes, what stays, what is counted."""

from __future__ import annotations

import random
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry
from redis.asyncio import RedisCluster

from clusterinval import (
    ClusterInvalidator,
    InvalidationResult,
    InvalidKeyError,
    InvalidOperationNameError,
    InvalidPatternError,
)
from clusterinval._core.glob import compile_pattern
from clusterinval._core.slots import SLOT_COUNT, key_slot
from clusterinval.testing.fill import cluster_primaries, count_keys, fill_keys, scan_all_keys

pytestmark = pytest.mark.anyio

# Both deletion paths must give identical results: the server-side batch script and plain
# pipelined per-slot UNLINK.
MODES = [pytest.param({}, id="script"), pytest.param({"server_scripts": False}, id="pipeline")]


async def run(url: str, mode: dict[str, Any] | None = None, **kwargs: Any) -> InvalidationResult:
    async with ClusterInvalidator.from_url(
        url, registry=CollectorRegistry(), **(mode or {})
    ) as inv:
        return await inv.invalidate(**kwargs)


def slot_tags() -> list[str]:
    """For every slot, a hash tag that lands in it."""
    tags: dict[int, str] = {}
    i = 0
    while len(tags) < SLOT_COUNT:
        tags.setdefault(key_slot(str(i).encode()), str(i))
        i += 1
    return [tags[s] for s in range(SLOT_COUNT)]


def check(before: set[bytes], after: set[bytes], patterns: list[bytes], keys: list[bytes]) -> int:
    """Every key that should go is gone, every other key is intact; returns how many went."""
    globs = [compile_pattern(p) for p in patterns]
    expected_gone = {k for k in before if k in set(keys) or any(g.match(k) for g in globs)}
    assert not (after & expected_gone), sorted(after & expected_gone)[:5]
    assert after == before - expected_gone
    return len(expected_gone)


class TestGuideExamples:
    """The seed guide's invalidations, through the core API."""

    async def test_user_session(self, cluster_url: str) -> None:
        keys = [b"user:session:u1", b"user:u1:a", b"user:u1:b:c", b"user:u2:a", b"user:session:u2"]
        fill_keys(cluster_url, keys)
        r = await run(cluster_url, keys=["user:session:u1"], patterns=["user:u1:*"],
                      operation_name="user_session")
        assert (r.deleted, r.matched, r.complete) == (3, 3, True)
        assert scan_all_keys(cluster_url) == {b"user:u2:a", b"user:session:u2"}

    async def test_project_two_patterns(self, cluster_url: str) -> None:
        keys = [b"project:7", b"project:7:members", b"project:7:x:y", b"project:70:z",
                b"projects:list:1", b"projects:list:2", b"projects:other"]
        fill_keys(cluster_url, keys)
        r = await run(cluster_url, keys=["project:7"],
                      patterns=["project:7:*", "projects:list:*"], operation_name="project")
        assert r.deleted == 5 and r.complete
        assert dict(r.per_pattern) == {"project:7:*": 2, "projects:list:*": 2}
        assert r.exact_deleted == 1
        assert scan_all_keys(cluster_url) == {b"project:70:z", b"projects:other"}

    async def test_pattern_only_models(self, cluster_url: str) -> None:
        keys = [f"models:list:{i}".encode() for i in range(50)] + [
            f"models:search:{i}".encode() for i in range(30)] + [b"models:detail:1"]
        fill_keys(cluster_url, keys)
        r = await run(cluster_url, patterns=["models:list:*", "models:search:*"],
                      operation_name="models_bulk")
        assert r.deleted == 80
        assert scan_all_keys(cluster_url) == {b"models:detail:1"}

    async def test_catalog(self, cluster_url: str) -> None:
        keys = [b"catalog:model:abc", b"catalog:model:def"] + [
            f"catalog:models:page:{i}".encode() for i in range(15)]
        fill_keys(cluster_url, keys)
        r = await run(cluster_url, keys=["catalog:model:abc"], patterns=["catalog:models:*"],
                      operation_name="catalog")
        assert (r.deleted, r.exact_deleted) == (16, 1)
        assert scan_all_keys(cluster_url) == {b"catalog:model:def"}


class TestScale:
    @pytest.mark.parametrize("mode", MODES)
    async def test_100k_keys_10_percent_match(self, cluster_url: str, mode: dict[str, Any]) -> None:
        # One non-matching key pinned to each slot by a hash tag, the rest spread by hashing.
        keep = [f"keep:{{{tag}}}".encode() for tag in slot_tags()]
        keys = keep + [(f"catalog:models:{i}" if i < 10_000 else f"keep:{i}").encode()
                       for i in range(100_000 - len(keep))]
        fill_keys(cluster_url, keys)
        assert len({key_slot(k) for k in keys}) == SLOT_COUNT
        matching = sum(k.startswith(b"catalog:models:") for k in keys)
        assert matching == 10_000
        r = await run(cluster_url, mode, patterns=["catalog:models:*"], operation_name="scale")
        assert r.complete and r.uncovered_slots == ()
        assert r.deleted == matching and r.matched == matching
        assert r.scanned >= 100_000
        assert sum(n.deleted for n in r.nodes) == 10_000 and len(r.nodes) == 3
        assert count_keys(cluster_url) == 90_000
        assert scan_all_keys(cluster_url, "catalog:models:*") == set()

    @pytest.mark.parametrize("mode", MODES)
    async def test_exact_keys_over_all_slots(self, cluster_url: str, mode: dict[str, Any]) -> None:
        keys = [f"exact:{i}".encode() for i in range(40_000)]
        fill_keys(cluster_url, [*keys, b"other:1"])
        missing = [f"missing:{i}".encode() for i in range(100)]
        r = await run(cluster_url, mode, keys=keys + missing + keys[:100], operation_name="exact")
        assert r.deleted == 40_000  # missing keys count 0; a repeated key is sent once
        assert r.scanned == 0 and r.complete
        assert scan_all_keys(cluster_url) == {b"other:1"}


class TestKeyShapes:
    @pytest.mark.parametrize("mode", MODES)
    async def test_hash_tags_binary_and_metachars(
        self, cluster_url: str, mode: dict[str, Any]
    ) -> None:
        rng = random.Random(7)
        tagged = [f"{{tenant:42}}:item:{i}".encode() for i in range(300)]
        other_tenant = [f"{{tenant:43}}:item:{i}".encode() for i in range(50)]
        binary = [b"bin:\x00\xff\xfe" + bytes([rng.randrange(256)]) + str(i).encode()
                  for i in range(100)]
        meta = [b"meta:*star", b"meta:?q", b"meta:[x]", b"meta:\\back", b"meta:plain"]
        before = set(tagged + other_tenant + binary + meta)
        fill_keys(cluster_url, before)

        r = await run(cluster_url, mode, patterns=["{tenant:42}:*"], operation_name="tenant")
        assert r.deleted == 300 and r.complete
        assert r.scanned < 400  # only the tag's slot was listed, not the whole cluster
        after = scan_all_keys(cluster_url)
        check(before, after, [b"{tenant:42}:*"], [])

        r = await run(cluster_url, mode, patterns=[b"bin:\x00\xff*"], operation_name="bin")
        assert r.deleted == 100
        r = await run(cluster_url, mode, patterns=[b"meta:\\**"], operation_name="meta")
        assert r.deleted == 1  # only the key that really starts with a literal '*'
        r = await run(cluster_url, mode, keys=[b"meta:[x]", "meta:\\back"], operation_name="meta")
        assert r.deleted == 2
        assert scan_all_keys(cluster_url) == set(other_tenant) | {b"meta:?q", b"meta:plain"}

    async def test_literal_pattern_is_an_exact_key(self, cluster_url: str) -> None:
        fill_keys(cluster_url, [b"plain:key", b"plain:key2"])
        r = await run(cluster_url, patterns=["plain:key"], operation_name="lit")
        assert r.deleted == 1 and r.scanned == 0 and dict(r.per_pattern) == {"plain:key": 1}

    async def test_overlapping_patterns_count_each_key_once(self, cluster_url: str) -> None:
        keys = [f"user:{u}:s:{i}".encode() for u in range(5) for i in range(40)]
        fill_keys(cluster_url, keys)
        r = await run(cluster_url, patterns=["user:*", "user:1:*", "user:?:s:1*"],
                      operation_name="overlap")
        assert r.deleted == r.matched == 200
        assert count_keys(cluster_url) == 0

    async def test_many_patterns_random(self, cluster_url: str) -> None:
        rng = random.Random(3)
        alphabet = "ab:{}x1"
        keys = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))).encode()
                for _ in range(3000)}
        fill_keys(cluster_url, keys)
        patterns = [b"a*", b"?b*", b"x[ab]*", b"{a}*", b"*:1", b"[^a]:*"]
        before = scan_all_keys(cluster_url)
        r = await run(cluster_url, patterns=patterns, operation_name="random")
        gone = check(before, scan_all_keys(cluster_url), patterns, [])
        assert r.deleted == gone


class TestDryRun:
    async def test_counts_and_samples_without_deleting(self, cluster_url: str) -> None:
        keys = [f"dry:{i}".encode() for i in range(500)] + [b"exact:1", b"keep"]
        fill_keys(cluster_url, keys)
        r = await run(cluster_url, keys=["exact:1", "exact:missing"], patterns=["dry:*"],
                      operation_name="dry", dry_run=True)
        assert r.dry_run and r.deleted == 0 and r.matched == 501
        assert 0 < len(r.sample) <= 20 and all(k.startswith((b"dry:", b"exact:")) for k in r.sample)
        assert count_keys(cluster_url) == 502


class TestClientsAndModes:
    async def test_existing_cluster_client(self, cluster_url: str) -> None:
        fill_keys(cluster_url, [b"c:1", b"c:2", b"d:1"])
        client = RedisCluster.from_url(cluster_url)
        try:
            async with ClusterInvalidator(client, registry=CollectorRegistry()) as inv:
                r = await inv.invalidate(patterns=["c:*"], operation_name="client")
            assert r.deleted == 2
            assert await client.get("d:1") == b"v"  # the caller's client is still usable
        finally:
            await client.aclose()

    async def test_standalone_redis(self, standalone_url: str) -> None:
        fill_keys(standalone_url, [f"s:{i}".encode() for i in range(2000)] + [b"t:1"])
        r = await run(standalone_url, keys=["t:1"], patterns=["s:*"], operation_name="standalone")
        assert r.deleted == 2001 and r.complete and len(r.nodes) == 1
        assert redis.Redis.from_url(standalone_url).dbsize() == 0

    async def test_standalone_client_and_tagged_pattern(self, standalone_url: str) -> None:
        fill_keys(standalone_url, [b"{t}:1", b"{t}:2", b"{u}:1"])
        client = redis.asyncio.Redis.from_url(standalone_url)
        try:
            async with ClusterInvalidator(client, registry=CollectorRegistry()) as inv:
                r = await inv.invalidate(patterns=["{t}:*"], operation_name="st")
            assert r.deleted == 2
        finally:
            await client.aclose()


class TestBadInput:
    """Each refused before anything is deleted."""

    @pytest.mark.parametrize(
        ("kwargs", "error", "words"),
        [
            ({}, ValueError, "nothing to invalidate"),
            ({"keys": [1]}, InvalidKeyError, "str or bytes"),
            ({"keys": [""]}, InvalidKeyError, "empty key"),
            ({"keys": "user:1"}, ValueError, "wrap it"),
            ({"patterns": [""]}, InvalidPatternError, "empty"),
            ({"patterns": ["user:[abc"]}, InvalidPatternError, "["),
            ({"patterns": ["user:\\"]}, InvalidPatternError, "backslash"),
            ({"patterns": ["*"]}, InvalidPatternError, "allow_match_all"),
            ({"patterns": ["**"]}, InvalidPatternError, "allow_match_all"),
            ({"patterns": ["a:*"], "operation_name": "user 1"}, InvalidOperationNameError,
             "identifier"),
            ({"patterns": ["a:*"], "operation_name": "x" * 65}, InvalidOperationNameError, "64"),
        ],
    )
    async def test_refused(self, cluster_url: str, kwargs: dict[str, Any], error: type,
                           words: str) -> None:
        fill_keys(cluster_url, [b"a:1", b"user:1"])
        with pytest.raises(error) as info:
            await run(cluster_url, **kwargs)
        assert words in str(info.value)
        assert count_keys(cluster_url) == 2

    async def test_match_all_when_allowed(self, cluster_url: str) -> None:
        fill_keys(cluster_url, [f"k{i}".encode() for i in range(1000)])
        r = await run(cluster_url, patterns=["*"], allow_match_all=True, operation_name="all")
        assert r.deleted == 1000 and count_keys(cluster_url) == 0

    async def test_unknown_option(self) -> None:
        with pytest.raises(ValueError, match="unknown option"):
            ClusterInvalidator.from_url("redis://127.0.0.1:1", scan_cuont=5)

    async def test_unreachable_url(self) -> None:
        from clusterinval import ClusterConnectionError
        from clusterinval.testing._ports import pick_ports

        port = pick_ports(1, cluster_bus=False)[0]
        inv = ClusterInvalidator.from_url(f"redis://127.0.0.1:{port}",
                                          registry=CollectorRegistry(), connect_timeout_s=1)
        with pytest.raises(ClusterConnectionError, match="no node of the cluster answered"):
            await inv.invalidate(keys=["a"], operation_name="down")
        await inv.aclose()


class TestServerPaths:
    """Where the server-side slot walk cannot serve a slot, the node is scanned instead."""

    async def test_slot_too_big_to_walk_falls_back_to_scan(self, cluster_url: str) -> None:
        hot = [f"h{{hot}}:{i}".encode() for i in range(2500)]  # one slot, over the walk's cap
        spread = [f"h:{i}".encode() for i in range(3000)]
        keep = [f"x:{i}".encode() for i in range(3000)] + [b"{hot}x"]
        fill_keys(cluster_url, hot + spread + keep)
        r = await run(cluster_url, patterns=["h*"], operation_name="walk")
        assert r.complete and r.deleted == 5500
        assert scan_all_keys(cluster_url) == set(keep)

    async def test_walk_deletes_only_the_prefix(self, cluster_url: str) -> None:
        keys = [f"{p}:{i}".encode() for p in ("ab", "abc", "a", "b") for i in range(2000)]
        fill_keys(cluster_url, keys)
        r = await run(cluster_url, patterns=["ab*"], operation_name="walk")
        assert r.deleted == 4000 and r.per_pattern == (("ab*", 4000),)
        assert scan_all_keys(cluster_url) == {k for k in keys if not k.startswith(b"ab")}

    async def test_walk_serves_several_prefixes_in_one_pass(self, cluster_url: str) -> None:
        keys = ([b"project:7"] + [f"project:7:d:{i}".encode() for i in range(1500)]
                + [f"projects:list:{i}".encode() for i in range(1200)]
                + [f"project:70:{i}".encode() for i in range(800)])
        fill_keys(cluster_url, keys)
        r = await run(cluster_url, keys=["project:7"], patterns=["project:7:*", "projects:list:*"],
                      operation_name="project")
        assert r.deleted == 2701 and dict(r.per_pattern) == {"project:7:*": 1500,
                                                            "projects:list:*": 1200}
        assert scan_all_keys(cluster_url) == {f"project:70:{i}".encode() for i in range(800)}

    async def test_walk_resumes_across_many_segments(
        self, cluster_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Small budget and segments of two calls: each node's walk is cut into many separately
        # timed units, each resuming where the last stopped; nothing may be skipped or repeated.
        monkeypatch.setattr("clusterinval._engine.slotwalk._WALK_SEGMENT", 2)
        monkeypatch.setattr("clusterinval._engine.slotwalk.WALK_BUDGET", 100)
        doomed = [f"seg:{i}".encode() for i in range(6000)]
        keep = [f"segx{i}".encode() for i in range(2000)]
        fill_keys(cluster_url, doomed + keep)
        r = await run(cluster_url, patterns=["seg:*"], operation_name="walk")
        assert r.complete and r.deleted == r.matched == 6000
        assert r.scanned == 8000  # every key read exactly once
        assert scan_all_keys(cluster_url) == set(keep)

    @pytest.mark.parametrize("patterns", [["sf:*"], ["sf:a*", "sf:b*"], ["sf:[ab]*"]],
                             ids=["walk", "walk-two", "scan-step"])
    async def test_script_cache_flushed_between_runs(
        self, cluster_url: str, patterns: list[str]
    ) -> None:
        # A restarted node or a promoted replica has an empty script cache: the engine must load
        # the scripts again instead of failing (walk, SCAN step and exact-key batches alike).
        keys = [f"sf:{p}{i}".encode() for p in "ab" for i in range(1500)]
        exact = [f"sfe:{i}".encode() for i in range(3000)]
        async with ClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry()) as inv:
            fill_keys(cluster_url, keys + exact)
            first = await inv.invalidate(keys=exact[:1000], patterns=patterns,
                                         operation_name="flush")
            assert first.complete and first.deleted == 4000
            for host, port in cluster_primaries(cluster_url):
                with redis.Redis(host=host, port=port) as conn:
                    conn.script_flush()
            fill_keys(cluster_url, keys)
            second = await inv.invalidate(keys=exact[1000:], patterns=patterns,
                                          operation_name="flush")
        assert second.complete and second.deleted == 5000
        assert scan_all_keys(cluster_url) == set()
