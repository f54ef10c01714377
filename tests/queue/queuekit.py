"""Helpers of the queue tests: key sets, stream counts, worker processes, polling."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import redis

from clusterinval.testing.fill import fill_keys, scan_all_keys

CLI = str(Path(sys.executable).with_name("clusterinval"))
STREAM = "clusterinval:{queue}"
GROUP = "clusterinval"


async def poll_until(probe: Callable[[], Any], within: float, what: str) -> Any:
    """Await ``probe()`` until it returns something truthy; TimeoutError after ``within`` s."""
    with anyio.fail_after(within):
        while True:
            value = await probe()
            if value:
                return value
            await anyio.sleep(0.05)
    raise AssertionError(what)  # unreachable: fail_after raises first


def entity_keys(n: int, per: int = 4, prefix: str = "user") -> tuple[set[bytes], set[bytes]]:
    """Keys of ``n`` entities (to invalidate) and look-alikes that must survive."""
    doomed = {f"{prefix}:{i}:{j}".encode() for i in range(n) for j in range(per)}
    kept = {f"{prefix}x:{i}:0".encode() for i in range(n)} | {f"keep:{prefix}:{i}".encode()
                                                            for i in range(n)}
    return doomed, kept


def seed(url: str, *groups: set[bytes]) -> None:
    """Write every key of ``groups`` to the cluster."""
    for keys in groups:
        fill_keys(url, keys)


def assert_outcome(url: str, doomed: set[bytes], kept: set[bytes]) -> None:
    """Zero surviving targets, zero lost other keys."""
    left = scan_all_keys(url)
    assert not (left & doomed), f"{len(left & doomed)} targets survived"
    assert kept <= left, f"{len(kept - left)} other keys lost"


def stream_counts(url: str) -> tuple[int, int, int]:
    """(entries in the stream, pending in the group, dead letters)."""
    rc = redis.RedisCluster.from_url(url) if _is_cluster(url) else redis.Redis.from_url(url)
    try:
        length = int(rc.xlen(STREAM))
        try:
            pending = int(rc.xpending(STREAM, GROUP)["pending"])
        except redis.ResponseError:
            pending = 0
        dead = int(rc.xlen("clusterinval:{queue}:dead"))
        return length, pending, dead
    finally:
        rc.close()


def _is_cluster(url: str) -> bool:
    with redis.Redis.from_url(url, socket_timeout=2) as conn:
        return bool(int(conn.info("cluster").get("cluster_enabled", 0)))


class Workers:
    """Worker processes started by a test; each stopped by its PID at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, url: str, *args: str, consumer: str) -> subprocess.Popen[bytes]:
        """Start ``clusterinval worker --url URL ARGS`` as a process; its log goes to a file."""
        log = (self.tmp / f"worker-{consumer}.log").open("wb")
        proc = subprocess.Popen([CLI, "-v", "worker", "--url", url, "--consumer", consumer,
                                 *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, consumer: str) -> str:
        """What the worker named ``consumer`` wrote."""
        return (self.tmp / f"worker-{consumer}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        """SIGTERM every worker still running, SIGKILL past a deadline."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
