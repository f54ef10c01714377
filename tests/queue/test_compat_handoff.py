"""RedisService hands a failed invalidation to the queue instead of dropping it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from queuekit import STREAM, stream_counts

from clusterinval import InvalidationQueue
from clusterinval.compat import ENV_QUEUE, RedisService
from clusterinval.testing._ports import pick_ports

pytestmark = pytest.mark.anyio


def _dead_url() -> str:
    (port,) = pick_ports(1, cluster_bus=False)
    return f"redis://127.0.0.1:{port}"


async def test_failed_call_goes_to_the_given_queue(cluster_url: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "clusterinval.compat")
    q = InvalidationQueue.from_url(cluster_url, registry=CollectorRegistry())
    async with q, RedisService(_dead_url(), queue=q, connect_timeout_s=0.5, retries=1) as svc:
        await svc.invalidate_cache_by_patterns(["user:1"], ["user:1:*"], "user")
        await svc.invalidate_cache_by_patterns(None, ["user:["], "user")  # bad input
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Failed to invalidate user cache") for m in messages)
    queued = [m for m in messages if m.startswith("Queued user cache invalidation")]
    assert len(queued) == 1 and f"stream {STREAM}" in queued[0]
    assert stream_counts(cluster_url)[0] == 1


async def test_environment_variable_with_spool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "clusterinval.compat")
    monkeypatch.setenv(ENV_QUEUE, "1")
    monkeypatch.setenv(f"{ENV_QUEUE}_SPOOL", str(tmp_path / "svc.spool"))
    async with RedisService(_dead_url(), connect_timeout_s=0.5, retries=1) as svc:
        await svc.invalidate_user_cache(user_id="7")
    queued = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith("Queued user cache invalidation")]
    assert len(queued) == 1 and "local spool" in queued[0]
