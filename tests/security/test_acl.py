"""ACL users limited to a key prefix, and passwords that never leak: not in logs, exceptions,
reprs, results, metrics or CLI output."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from seckit import APP_PASSWORD, APP_USER, NOSCRIPT_PASSWORD, NOSCRIPT_USER

from clusterinval import (
    ClusterInvalidator,
    ClusterPermissionError,
    InvalidationError,
)
from clusterinval.compat import RedisService
from clusterinval.testing.fill import fill_keys, scan_all_keys

pytestmark = pytest.mark.anyio

SECRETS = (APP_PASSWORD, NOSCRIPT_PASSWORD, "Zq7-wrong-pw")


def url(port: int, user: str = APP_USER, password: str = APP_PASSWORD) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{port}"


def admin(port: int) -> str:
    return f"redis://127.0.0.1:{port}"


def assert_no_secret(*texts: Any) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in str(text), f"password leaked into: {str(text)[:300]}"


@pytest.mark.parametrize(("user", "password"), [(APP_USER, APP_PASSWORD),
                                                (NOSCRIPT_USER, NOSCRIPT_PASSWORD)],
                         ids=["all-commands", "no-scripting"])
async def test_acl_user_invalidates_its_prefix(acl_port: int, user: str, password: str,
                                               caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    fill_keys(admin(acl_port), [f"app:{i}" for i in range(2000)] + ["other:1", "other:2"])
    registry = CollectorRegistry()
    with anyio.fail_after(30):
        async with ClusterInvalidator.from_url(url(acl_port, user, password),
                                               registry=registry) as inv:
            result = await inv.invalidate(patterns=["app:*"], keys=["app:x"])
            inv_repr = repr(inv)
    assert result.complete and result.deleted == 2000
    assert scan_all_keys(admin(acl_port)) == {b"other:1", b"other:2"}
    assert_no_secret(caplog.text, inv_repr, json.dumps(result.to_dict()), repr(result),
                     generate_latest(registry).decode())


@pytest.mark.parametrize("server_scripts", [True, False], ids=["script", "pipeline"])
async def test_pattern_outside_permissions_is_a_permission_error(
        acl_port: int, server_scripts: bool, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    fill_keys(admin(acl_port), [f"other:{i}" for i in range(300)] + ["app:1"])
    registry = CollectorRegistry()
    with anyio.fail_after(30):
        with pytest.raises(ClusterPermissionError) as info:
            async with ClusterInvalidator.from_url(url(acl_port), registry=registry,
                                                   server_scripts=server_scripts) as inv:
                await inv.invalidate(patterns=["other:*"])
    message = str(info.value)
    assert "refused" in message and ("NOPERM" in message or "permission" in message.lower())
    assert info.value.node is not None
    assert len(scan_all_keys(admin(acl_port), "other:*")) == 300, "nothing may be deleted"
    assert registry.get_sample_value(
        "clusterinval_errors_total", {"operation": "cache", "error": "permission"}) == 1.0
    assert_no_secret(message, repr(info.value), caplog.text, generate_latest(registry).decode())


async def test_exact_key_outside_permissions_is_a_permission_error(acl_port: int) -> None:
    fill_keys(admin(acl_port), ["other:1"])
    with anyio.fail_after(30):
        with pytest.raises(ClusterPermissionError):
            async with ClusterInvalidator.from_url(url(acl_port),
                                                   registry=CollectorRegistry()) as inv:
                await inv.invalidate(keys=["other:1"])
    assert scan_all_keys(admin(acl_port)) == {b"other:1"}


async def test_wrong_password_is_a_permission_error_without_the_password(
        acl_port: int, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    bad = url(acl_port, APP_USER, "Zq7-wrong-pw")
    with anyio.fail_after(20):
        with pytest.raises(ClusterPermissionError) as info:
            async with ClusterInvalidator.from_url(bad, registry=CollectorRegistry()) as inv:
                await inv.invalidate(patterns=["app:*"])
    chain = []
    exc: BaseException | None = info.value
    while exc is not None:
        chain.append(f"{exc!s} {exc!r}")
        exc = exc.__cause__ or exc.__context__
    assert_no_secret(*chain, caplog.text)


async def test_password_as_option_is_not_leaked(acl_port: int, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    with anyio.fail_after(20):
        with pytest.raises(ClusterPermissionError) as info:
            async with ClusterInvalidator.from_url(
                admin(acl_port), username=APP_USER, password="Zq7-wrong-pw",
                registry=CollectorRegistry(),
            ) as inv:
                await inv.invalidate(patterns=["app:*"])
    assert_no_secret(str(info.value), repr(info.value), caplog.text)


async def test_compat_facade_hides_the_password(acl_port: int, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    fill_keys(admin(acl_port), ["other:1"])
    bad = url(acl_port, APP_USER, "Zq7-wrong-pw")
    with anyio.fail_after(20):
        async with RedisService(bad, registry=CollectorRegistry(), timeout_s=5) as service:
            await service.invalidate_cache_by_patterns(patterns=["app:*"])
            shown = f"{service.url} {service!r}"
        async with RedisService(url(acl_port), registry=CollectorRegistry()) as service:
            await service.invalidate_cache_by_patterns(patterns=["other:*"])
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    assert_no_secret(shown, caplog.text)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CLUSTERINVAL_URL"}
    return subprocess.run([sys.executable, "-m", "clusterinval.cli.main", *args],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
def test_cli_never_prints_the_password(acl_port: int, json_out: bool) -> None:
    extra = ["--json"] if json_out else []
    bad = run_cli("invalidate", "--url", url(acl_port, APP_USER, "Zq7-wrong-pw"),
                  "--pattern", "app:*", *extra)
    assert bad.returncode != 0
    assert bad.stdout or bad.stderr, "a failed CLI run must say why"
    fill_keys(admin(acl_port), ["other:1"])
    denied = run_cli("invalidate", "--url", url(acl_port), "--pattern", "other:*", *extra)
    assert denied.returncode != 0
    good = run_cli("invalidate", "--url", url(acl_port), "--pattern", "app:*", *extra)
    assert good.returncode == 0, good.stderr
    for proc in (bad, denied, good):
        assert_no_secret(proc.stdout, proc.stderr)


async def test_incomplete_run_error_hides_the_password(acl_cluster: Any, caplog: Any) -> None:
    acl_cluster.flushall()
    caplog.set_level(logging.DEBUG)
    port = acl_cluster.nodes[0].port
    fill_keys(admin(port), [f"app:{i}" for i in range(50_000)])
    with anyio.fail_after(20):
        with pytest.raises(InvalidationError) as info:
            async with ClusterInvalidator.from_url(url(port), registry=CollectorRegistry(),
                                                   timeout_s=0.3, keys_per_second=1000) as inv:
                await inv.invalidate(patterns=["app:*"])
    assert_no_secret(str(info.value), repr(info.value), json.dumps(info.value.result.to_dict()),
                     caplog.text)


async def test_bench_set_up_client_authenticates_with_the_urls_credentials(
        acl_cluster: Any, acl_port: int) -> None:
    from clusterinval._core.slots import key_slot
    from clusterinval.loadtest.plainresp import PlainRespError, PlainSetter
    from clusterinval.testing.fill import slot_owners

    keys = [f"app:{i}" for i in range(20)]
    owners = slot_owners(admin(acl_port))
    key_owners = {k: owner for k in keys if (owner := owners[key_slot(k.encode())]) is not None}
    assert len(key_owners) == len(keys)
    with anyio.fail_after(10):
        async with PlainSetter(url(acl_port), key_owners) as setter:
            await setter.each(b"SET", keys, b"v")
            assert await setter.each(b"EXISTS", keys) == len(keys)
        assert scan_all_keys(admin(acl_port)) == {k.encode() for k in keys}
        wrong_url = url(acl_port, APP_USER, "Zq7-wrong-pw")
        async with PlainSetter(wrong_url, key_owners) as wrong:
            with pytest.raises(PlainRespError, match="WRONGPASS") as info:
                await wrong.each(b"EXISTS", keys)
    assert_no_secret(str(info.value))
