"""The server the suite runs on, and the features the library finds on it.

``CLUSTERINVAL_REDIS_SERVER`` chooses the server binary of every test cluster (CI runs the
integration and fault suites once per server of the support matrix). These tests check that the
setting is obeyed, and that the features the library detects at run time (server scripts with
flags, sharded pub/sub) are present exactly on the servers that have them, so the fallbacks are
exercised where they are needed.
"""

from __future__ import annotations

import os
import re
import subprocess

import anyio
import pytest
import redis

from clusterinval import ClusterInvalidator
from clusterinval.testing._node import SERVER_ENV, resolve_binary
from clusterinval.testing.local import LocalCluster

_VERSION = re.compile(r"\bv=(\d+)\.(\d+)\.(\d+)")


def binary_version(path: str) -> tuple[int, int, int]:
    """The version a server binary reports with ``--version``."""
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    found = _VERSION.search(out)
    assert found, out
    major, minor, patch = (int(g) for g in found.groups())
    return major, minor, patch


def running_server(client: redis.RedisCluster) -> tuple[str, tuple[int, int, int]]:
    """("redis" or "valkey", version) of a primary of the cluster."""
    info = client.info("server", target_nodes=redis.RedisCluster.RANDOM)
    name = "valkey" if "valkey_version" in info else "redis"
    text = str(info.get("valkey_version") or info["redis_version"])
    major, minor, patch = (int(p) for p in text.split(".")[:3])
    return name, (major, minor, patch)


def test_suite_runs_on_the_chosen_server(
    local_cluster: LocalCluster, client: redis.RedisCluster
) -> None:
    chosen = resolve_binary("redis-server")
    name, version = running_server(client)
    assert version == binary_version(chosen), f"{SERVER_ENV}={os.environ.get(SERVER_ENV)!r}"
    if "valkey" in os.path.basename(chosen):
        assert name == "valkey"


def test_a_wrong_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from clusterinval.testing._node import RedisServerNotFoundError

    monkeypatch.setenv(SERVER_ENV, "/nonexistent/redis-server")
    with pytest.raises(RedisServerNotFoundError, match=SERVER_ENV):
        resolve_binary("redis-server")


def _supports_script_flags(client: redis.RedisCluster) -> bool:
    try:
        client.execute_command("EVAL", "#!lua flags=allow-cross-slot-keys\nreturn 1", 0,
                               target_nodes=redis.RedisCluster.RANDOM)
    except redis.ResponseError:
        return False
    return True


def _supports_sharded_pubsub(client: redis.RedisCluster) -> bool:
    # Straight to one node: the cluster client refuses commands its COMMAND table lacks.
    node = client.get_primaries()[0]
    with redis.Redis(host=node.host, port=node.port) as conn:
        try:
            conn.execute_command("SPUBLISH", "probe", "x")
        except redis.ResponseError as exc:
            # MOVED (another node owns the channel's slot) still means the command exists.
            return "unknown command" not in str(exc).lower()
    return True


def test_features_are_those_of_the_server(client: redis.RedisCluster) -> None:
    name, version = running_server(client)
    modern = version >= (7, 0, 0)  # Redis 7.0 and every Valkey release have both
    assert _supports_script_flags(client) is modern, (name, version)
    assert _supports_sharded_pubsub(client) is modern, (name, version)


@pytest.mark.anyio
async def test_invalidation_is_complete_whatever_the_features(
    cluster_url: str, client: redis.RedisCluster
) -> None:
    """Server scripts where the server has them, pipelined UNLINK where it does not."""
    keys = [f"feat:{i}" for i in range(300)]
    pipe = client.pipeline()  # type: ignore[no-untyped-call]
    for key in keys:
        pipe.set(key, b"v")
    pipe.execute()
    client.set("keep:1", b"v")
    async with ClusterInvalidator.from_url(cluster_url) as inv:
        with anyio.fail_after(30):
            result = await inv.invalidate(keys=["feat:0"], patterns=["feat:*"],
                                          operation_name="features")
    assert result.complete and result.deleted == 300
    assert client.exists(*keys) == 0 and client.exists("keep:1") == 1
