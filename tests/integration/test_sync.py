"""SyncClusterInvalidator: the blocking facade over one ClusterInvalidator, from several threads."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from prometheus_client import CollectorRegistry

from clusterinval import (
    ClusterConnectionError,
    ClusterInvalError,
    InvalidationResult,
    InvalidPatternError,
    SyncClusterInvalidator,
)
from clusterinval.errors import InvalidInputError


def fill(rc: redis.RedisCluster, keys: list[str]) -> None:
    pipe = rc.pipeline()  # type: ignore[no-untyped-call]
    for key in keys:
        pipe.set(key, b"v")
    pipe.execute()


def count(rc: redis.RedisCluster, keys: list[str]) -> int:
    return sum(int(rc.exists(k)) for k in keys)


class TestSyncFacade:
    def test_invalidate_keys_and_patterns(
        self, cluster_url: str, client: redis.RedisCluster
    ) -> None:
        gone = [f"project:p1:{i}" for i in range(200)] + ["project:p1"]
        kept = [f"project:p2:{i}" for i in range(50)]
        fill(client, gone + kept)
        with SyncClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry()) as inv:
            result = inv.invalidate(
                keys=["project:p1"], patterns=["project:p1:*"], operation_name="project"
            )
        assert isinstance(result, InvalidationResult)
        assert result.complete and result.deleted == 201
        assert count(client, gone) == 0
        assert count(client, kept) == 50

    def test_dry_run_and_rule(self, cluster_url: str, client: redis.RedisCluster) -> None:
        fill(client, ["user:5", "user:5:profile", "user:5:sessions:a", "user:50"])
        with SyncClusterInvalidator(cluster_url, registry=CollectorRegistry()) as inv:
            dry = inv.invalidate(patterns=["user:5*"], dry_run=True)
            assert dry.dry_run and dry.matched == 4 and dry.deleted == 0
            result = inv.invalidate_rule("user", user_id="5")
        assert result.deleted == 3 and result.operation == "user"
        assert count(client, ["user:50"]) == 1

    def test_many_threads_share_one_invalidator(
        self, cluster_url: str, client: redis.RedisCluster
    ) -> None:
        groups = {f"t{i}": [f"tenant:t{i}:{j}" for j in range(100)] for i in range(16)}
        fill(client, [k for keys in groups.values() for k in keys] + ["tenant:other"])
        seen: set[int] = set()
        inv = SyncClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry())
        try:
            def work(tenant: str) -> int:
                seen.add(id(inv.invalidator))
                r = inv.invalidate(patterns=[f"tenant:{tenant}:*"], operation_name="tenant")
                return r.deleted

            with ThreadPoolExecutor(max_workers=8) as pool:
                deleted = list(pool.map(work, groups))
        finally:
            inv.close()
        assert deleted == [100] * 16
        assert len(seen) == 1
        assert count(client, ["tenant:other"]) == 1

    def test_lazy_open_from_several_threads(self, cluster_url: str) -> None:
        inv = SyncClusterInvalidator(cluster_url, registry=CollectorRegistry())
        barrier = threading.Barrier(6)
        results: list[bool] = []

        def first_call() -> None:
            barrier.wait(timeout=10)
            results.append(inv.invalidate(keys=["nope"]).complete)

        threads = [threading.Thread(target=first_call) for _ in range(6)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
        finally:
            inv.close()
        assert results == [True] * 6

    def test_errors_are_the_core_errors(self, cluster_url: str) -> None:
        with SyncClusterInvalidator(cluster_url, registry=CollectorRegistry()) as inv:
            with pytest.raises(InvalidPatternError):
                inv.invalidate(patterns=["a[b"])
            with pytest.raises(InvalidInputError, match="user_id"):
                inv.invalidate_rule("user")
            # still usable after an error
            assert inv.invalidate(keys=["x"]).complete

    def test_unreachable(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        inv = SyncClusterInvalidator(f"redis://127.0.0.1:{port}", registry=CollectorRegistry())
        with pytest.raises(ClusterConnectionError):
            inv.invalidate(keys=["k"])
        inv.close()

    def test_closed_is_closed(self, cluster_url: str) -> None:
        inv = SyncClusterInvalidator(cluster_url, registry=CollectorRegistry())
        inv.open()
        inv.close()
        inv.close()
        with pytest.raises(ClusterInvalError, match="closed"):
            inv.invalidate(keys=["k"])

    def test_needs_a_url(self) -> None:
        with pytest.raises(InvalidInputError, match="URL"):
            SyncClusterInvalidator("")

    def test_standalone(self, standalone_url: str) -> None:
        rc = redis.Redis.from_url(standalone_url)
        try:
            rc.mset({"a:1": 1, "a:2": 2, "b:1": 3})
            with SyncClusterInvalidator(standalone_url, registry=CollectorRegistry()) as inv:
                assert inv.invalidate(patterns=["a:*"]).deleted == 2
            assert rc.dbsize() == 1
        finally:
            rc.close()


def test_process_exits_without_close(cluster_url: str) -> None:
    # An application that forgets close() must still be able to exit.
    code = (
        "import sys\n"
        "from clusterinval import SyncClusterInvalidator\n"
        "inv = SyncClusterInvalidator(sys.argv[1])\n"
        "print(inv.invalidate(keys=['k']).complete)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, cluster_url], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
