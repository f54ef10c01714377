"""The seed-compatible RedisService on a real cluster: the guide's examples, logs, never-raise."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable

import anyio
import pytest
import redis

from clusterinval.compat import ENV_URL, RedisService, mask_credentials
from clusterinval.rules import BUILTIN_RULES, Rule
from clusterinval.testing.local import LocalRedis

pytestmark = pytest.mark.anyio

COMPAT = "clusterinval.compat"
# A run against a live cluster finishes in well under a second; this only bounds a hang.
DEADLINE_S = 30


def seed(rc: redis.RedisCluster, keys: Iterable[str]) -> list[str]:
    """Write ``keys`` (one value each) and return them as a list."""
    keys = list(keys)
    for key in keys:
        rc.set(key, b"v")
    return keys


def existing(rc: redis.RedisCluster, keys: Iterable[str]) -> set[str]:
    """The subset of ``keys`` still present."""
    return {k for k in keys if rc.exists(k)}


def dead_url() -> str:
    """A loopback URL on which nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}"


def compat_records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == COMPAT]


class TestGuideExamples:
    async def test_user_session_on_logout(
        self, cluster_url: str, client: redis.RedisCluster
    ) -> None:
        gone = seed(client, ["user:session:u1", "user:u1:a", "user:u1:b:c"])
        kept = seed(client, ["user:session:u2", "user:u2:a", "user:u10:a", "user:u1"])
        async with RedisService(cluster_url) as svc:
            await svc.invalidate_cache_by_patterns(
                specific_keys=["user:session:u1"],
                patterns=["user:u1:*"],
                operation_name="user_session",
            )
        assert existing(client, gone) == set()
        assert existing(client, kept) == set(kept)
        assert svc.last_result is not None and svc.last_result.deleted == 3

    async def test_project_update(self, cluster_url: str, client: redis.RedisCluster) -> None:
        gone = seed(client, ["project:p1", "project:p1:members", "projects:list:1",
                             "projects:list:2"])
        kept = seed(client, ["project:p2", "project:p10:x", "projects:count"])
        async with RedisService(cluster_url) as svc:
            await svc.invalidate_cache_by_patterns(
                specific_keys=["project:p1"],
                patterns=["project:p1:*", "projects:list:*"],
                operation_name="project",
            )
        assert existing(client, gone) == set()
        assert existing(client, kept) == set(kept)

    async def test_pattern_only(self, cluster_url: str, client: redis.RedisCluster) -> None:
        gone = seed(client, [f"models:list:{i}" for i in range(30)]
                    + [f"models:search:{i}" for i in range(30)])
        kept = seed(client, ["models:detail:1", "models:list"])
        async with RedisService(cluster_url) as svc:
            await svc.invalidate_cache_by_patterns(
                patterns=["models:list:*", "models:search:*"], operation_name="models_bulk"
            )
        assert existing(client, gone) == set()
        assert existing(client, kept) == set(kept)
        assert svc.last_result is not None and svc.last_result.deleted == 60

    async def test_catalog_after_publication(
        self, cluster_url: str, client: redis.RedisCluster
    ) -> None:
        gone = seed(client, ["catalog:model:e1", "catalog:models:list:1",
                             "catalog:models:search:x"])
        kept = seed(client, ["catalog:model:e2", "catalog:modelsx"])
        async with RedisService(cluster_url) as svc:
            await svc.invalidate_catalog_cache(endpoint_id="e1")
        assert existing(client, gone) == set()
        assert existing(client, kept) == set(kept)

    async def test_all_catalog(self, cluster_url: str, client: redis.RedisCluster) -> None:
        gone = seed(client, [f"catalog:models:page:{i}" for i in range(50)])
        kept = seed(client, ["catalog:model:e1", "catalog:model:e2"])
        async with RedisService(cluster_url) as svc:
            await svc.invalidate_catalog_cache()
        assert existing(client, gone) == set()
        assert existing(client, kept) == set(kept)

    async def test_grouped_endpoint_keys(
        self, cluster_url: str, client: redis.RedisCluster
    ) -> None:
        gone = seed(client, ["endpoint:e1", "endpoint:e1:status", "endpoint:e1:metrics",
                             "endpoint:e1:workers:1", "endpoint:e1:workers:2"])
        kept = seed(client, ["endpoint:e1:config", "endpoint:e2:workers:1"])
        endpoint = Rule("endpoint", keys=("endpoint:{endpoint_id}",),
                        patterns=("endpoint:{endpoint_id}:workers:*",),
                        operation_name="endpoint_update")
        async with RedisService(cluster_url, rules=BUILTIN_RULES.merged([endpoint])) as svc:
            await svc.invalidate_cache_by_patterns(
                specific_keys=["endpoint:e1", "endpoint:e1:status", "endpoint:e1:metrics"],
                patterns=["endpoint:e1:workers:*"],
                operation_name="endpoint_update",
            )
            await svc.invalidate_rule("endpoint", endpoint_id="e2")
        assert existing(client, gone) == set()
        assert existing(client, kept) == {"endpoint:e1:config"}

    async def test_custom_user_method(self, cluster_url: str, client: redis.RedisCluster) -> None:
        gone = seed(client, ["user:7", "user:7:profile", "user:7:sessions:a",
                             "user:7:projects:1"])
        kept = seed(client, ["user:7:settings", "user:70", "user:70:sessions:a"])
        async with RedisService(cluster_url) as svc:
            await svc.invalidate_user_cache("7")
        assert existing(client, gone) == set()
        assert existing(client, kept) == set(kept)

    async def test_custom_cluster_method(
        self, cluster_url: str, client: redis.RedisCluster
    ) -> None:
        lists = seed(client, ["clusters:list:1", "clusters:list:2"])
        one = seed(client, ["cluster:c1", "cluster:c1:status", "cluster:c1:metrics",
                            "cluster:c1:nodes:1"])
        kept = seed(client, ["cluster:c2", "cluster:c2:status"])
        async with RedisService(cluster_url) as svc:
            await svc.invalidate_cluster_cache()
            assert existing(client, lists) == set()
            assert existing(client, one) == set(one)
            await svc.invalidate_cluster_cache(cluster_id="c1")
        assert existing(client, one) == set()
        assert existing(client, kept) == set(kept)

    async def test_user_id_with_glob_characters_does_not_widen(
        self, cluster_url: str, client: redis.RedisCluster
    ) -> None:
        gone = seed(client, ["user:1*:sessions:a"])
        kept = seed(client, ["user:1:sessions:a", "user:10:sessions:a"])
        async with RedisService(cluster_url) as svc:
            await svc.invalidate_user_cache("1*")
        assert existing(client, gone) == set()
        assert existing(client, kept) == set(kept)

    async def test_custom_rule_becomes_a_method(
        self, cluster_url: str, client: redis.RedisCluster
    ) -> None:
        rules = BUILTIN_RULES.merged([Rule("tenant", patterns=("{{tenant:{tenant_id}}}:*",))])
        gone = seed(client, ["{tenant:t1}:a", "{tenant:t1}:b"])
        kept = seed(client, ["{tenant:t2}:a"])
        async with RedisService(cluster_url, rules=rules) as svc:
            await svc.invalidate_tenant_cache(tenant_id="t1")
            with pytest.raises(AttributeError):
                svc.invalidate_nothing_cache  # noqa: B018
        assert existing(client, gone) == set()
        assert existing(client, kept) == set(kept)

    async def test_url_from_environment(
        self, cluster_url: str, client: redis.RedisCluster, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(ENV_URL, cluster_url)
        gone = seed(client, ["catalog:models:1"])
        svc = RedisService()
        try:
            await svc.invalidate_catalog_cache()
        finally:
            await svc.aclose()
        assert existing(client, gone) == set()

    async def test_standalone_server(self, standalone_url: str) -> None:
        rc = redis.Redis.from_url(standalone_url)
        try:
            rc.set("catalog:model:e1", 1)
            rc.set("catalog:models:1", 1)
            async with RedisService(standalone_url) as svc:
                await svc.invalidate_catalog_cache(endpoint_id="e1")
            assert rc.dbsize() == 0
        finally:
            rc.close()


class TestLogging:
    async def test_levels_and_message_shapes(
        self, cluster_url: str, client: redis.RedisCluster, caplog: pytest.LogCaptureFixture
    ) -> None:
        seed(client, ["catalog:model:abc-123", "catalog:model:def-456"])
        seed(client, [f"catalog:models:list:{i}" for i in range(15)])
        caplog.set_level(logging.DEBUG, logger=COMPAT)
        async with RedisService(cluster_url) as svc:
            await svc.invalidate_cache_by_patterns(
                specific_keys=["catalog:model:abc-123", "catalog:model:def-456"],
                patterns=["catalog:models:*"],
                operation_name="catalog",
            )
        assert compat_records(caplog) == [
            (logging.DEBUG, "Invalidated 2 specific catalog cache keys: "
                            "['catalog:model:abc-123', 'catalog:model:def-456']"),
            (logging.DEBUG, "Invalidated 15 catalog cache entries matching pattern: "
                            "catalog:models:*"),
            (logging.INFO, "Successfully invalidated 17 catalog cache entries"),
        ]

    async def test_one_debug_line_per_pattern(
        self, cluster_url: str, client: redis.RedisCluster, caplog: pytest.LogCaptureFixture
    ) -> None:
        seed(client, ["project:p1:a", "project:p1:b", "projects:list:1"])
        caplog.set_level(logging.DEBUG, logger=COMPAT)
        async with RedisService(cluster_url) as svc:
            await svc.invalidate_cache_by_patterns(
                patterns=["project:p1:*", "projects:list:*"], operation_name="project"
            )
        assert compat_records(caplog) == [
            (logging.DEBUG, "Invalidated 2 project cache entries matching pattern: project:p1:*"),
            (logging.DEBUG, "Invalidated 1 project cache entries matching pattern: "
                            "projects:list:*"),
            (logging.INFO, "Successfully invalidated 3 project cache entries"),
        ]

    async def test_info_only_at_info_level(
        self, cluster_url: str, client: redis.RedisCluster, caplog: pytest.LogCaptureFixture
    ) -> None:
        seed(client, ["user:1", "user:1:profile"])
        caplog.set_level(logging.INFO, logger=COMPAT)
        async with RedisService(cluster_url) as svc:
            await svc.invalidate_user_cache("1")
        assert compat_records(caplog) == [
            (logging.INFO, "Successfully invalidated 2 user cache entries")
        ]


class TestNeverRaises:
    async def test_missing_url_warns_on_first_call(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        monkeypatch.delenv(ENV_URL, raising=False)
        svc = RedisService()  # must not raise: the seed constructs it with no arguments
        with anyio.fail_after(DEADLINE_S):
            await svc.invalidate_catalog_cache()
        [(level, message)] = compat_records(caplog)
        assert level == logging.WARNING
        assert message.startswith("Failed to invalidate catalog cache: ")
        assert ENV_URL in message

    async def test_unreachable_cluster(self, caplog: pytest.LogCaptureFixture) -> None:
        async with RedisService(dead_url()) as svc:
            with anyio.fail_after(DEADLINE_S):
                await svc.invalidate_user_cache("1")
                await svc.invalidate_cache_by_patterns(patterns=["a:*"], operation_name="x")
        records = compat_records(caplog)
        assert [r[0] for r in records] == [logging.WARNING, logging.WARNING]
        assert records[0][1].startswith("Failed to invalidate user cache: ")
        assert records[1][1].startswith("Failed to invalidate x cache: ")

    async def test_password_never_logged(self, caplog: pytest.LogCaptureFixture) -> None:
        url = dead_url().replace("redis://", "redis://admin:s3cr3t-pw@")
        async with RedisService(url, password="s3cr3t-pw") as svc:
            with anyio.fail_after(DEADLINE_S):
                await svc.invalidate_catalog_cache()
            assert "s3cr3t-pw" not in (svc.url or "")
        assert caplog.records
        assert all("s3cr3t-pw" not in r.getMessage() for r in caplog.records)

    async def test_server_stopped_after_first_call(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger=COMPAT)
        server = LocalRedis().start()
        try:
            # The engine retries a lost node until timeout_s; keep that short here.
            async with RedisService(server.url, timeout_s=3.0) as svc:
                await svc.invalidate_catalog_cache()
                assert compat_records(caplog)[-1][0] == logging.INFO
                server.stop()
                caplog.clear()
                with anyio.fail_after(DEADLINE_S):
                    await svc.invalidate_catalog_cache(endpoint_id="e1")
                [(level, message)] = compat_records(caplog)
                assert level == logging.WARNING
                assert message.startswith("Failed to invalidate catalog cache: ")
        finally:
            server.stop()

    async def test_bad_input_is_a_warning(
        self, cluster_url: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with RedisService(cluster_url) as svc:
            await svc.invalidate_cache_by_patterns(patterns=["a[b"], operation_name="x")
            await svc.invalidate_cache_by_patterns(patterns=["*"], operation_name="everything")
            await svc.invalidate_cache_by_patterns(patterns=["a:*"], operation_name="not ok!")
            await svc.invalidate_rule("user")
            await svc.invalidate_rule("no_such_rule")
            await svc.invalidate_cache_by_patterns()
        records = compat_records(caplog)
        assert [r[0] for r in records] == [logging.WARNING] * 6
        assert "'['" in records[0][1] or "[" in records[0][1]
        assert "user_id" in records[3][1]
        assert "no_such_rule" in records[4][1]

    async def test_keeps_working_after_a_failure(
        self, cluster_url: str, client: redis.RedisCluster, caplog: pytest.LogCaptureFixture
    ) -> None:
        gone = seed(client, ["user:9", "user:9:profile"])
        caplog.set_level(logging.INFO, logger=COMPAT)
        async with RedisService(cluster_url) as svc:
            await svc.invalidate_rule("user")
            await svc.invalidate_user_cache("9")
        assert existing(client, gone) == set()
        assert [r[0] for r in compat_records(caplog)] == [logging.WARNING, logging.INFO]


class TestSharing:
    async def test_concurrent_calls_share_one_invalidator(
        self, cluster_url: str, client: redis.RedisCluster, caplog: pytest.LogCaptureFixture
    ) -> None:
        users = [str(i) for i in range(20)]
        gone = seed(client, [k for u in users for k in (f"user:{u}", f"user:{u}:sessions:1")])
        caplog.set_level(logging.INFO, logger=COMPAT)
        async with RedisService(cluster_url) as svc:
            async with anyio.create_task_group() as tg:
                for u in users:
                    tg.start_soon(svc.invalidate_user_cache, u)
            first = svc.invalidator
            await svc.invalidate_catalog_cache()
            assert svc.invalidator is first is not None
        assert svc.invalidator is None
        assert existing(client, gone) == set()
        infos = [m for level, m in compat_records(caplog) if level == logging.INFO]
        assert len(infos) == 21

    async def test_services_per_call_share_one_invalidator(
        self, cluster_url: str, client: redis.RedisCluster, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The hand-made service was used as `RedisService()` inside every function.
        monkeypatch.setenv(ENV_URL, cluster_url)
        gone = seed(client, [f"project:{i}" for i in range(5)])
        used: set[int] = set()
        for i in range(5):
            svc = RedisService()
            await svc.invalidate_cache_by_patterns(specific_keys=[f"project:{i}"],
                                                   operation_name="project")
            used.add(id(svc.invalidator))
        assert len(used) == 1
        other = RedisService(cluster_url, timeout_s=7.0)
        await other.invalidate_catalog_cache()
        assert other.invalidator is not svc.invalidator
        await other.aclose()
        await svc.aclose()
        assert svc.invalidator is None
        assert existing(client, gone) == set()
        # after aclose, the next call opens a fresh one
        await RedisService().invalidate_catalog_cache()
        assert RedisService().invalidator is not None
        await RedisService().aclose()

    async def test_given_invalidator_is_not_closed(self, cluster_url: str) -> None:
        from clusterinval import ClusterInvalidator

        async with ClusterInvalidator.from_url(cluster_url) as inv:
            async with RedisService(invalidator=inv) as svc:
                await svc.invalidate_catalog_cache()
            result = await inv.invalidate(patterns=["x:*"])
            assert result.complete


def test_mask_credentials() -> None:
    assert mask_credentials("redis://u:p4ss@h:1 and rediss://:x@h2:2") == (
        "redis://u:***@h:1 and rediss://:***@h2:2"
    )
    assert mask_credentials("redis://h:1") == "redis://h:1"
