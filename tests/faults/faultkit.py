"""Helpers for fault tests: key sets, replication catch-up, slot migration, outcome checks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import redis
from polling import wait_for

from clusterinval._core.tally import ProgressWatch
from clusterinval.testing.fill import fill_keys, scan_all_keys
from clusterinval.testing.local import LocalCluster

HOST = "127.0.0.1"

# The make_cluster fixture: starts a dedicated LocalCluster with the given options.
ClusterFactory = Callable[..., LocalCluster]


@dataclass(frozen=True)
class KeySet:
    """Keys a fault test writes: those the pattern must remove and those that must stay."""

    pattern: str
    doomed: frozenset[bytes]
    kept: frozenset[bytes]


def make_keyset(n_doomed: int, n_kept: int, prefix: str = "inv") -> KeySet:
    """``n_doomed`` keys under ``prefix:*`` and ``n_kept`` look-alikes that must survive."""
    doomed = frozenset(f"{prefix}:{i}:v".encode() for i in range(n_doomed))
    # Near misses: same characters, other order or case, so a sloppy match would take them.
    kept = frozenset(
        (f"keep:{prefix}:{i}" if i % 2 else f"{prefix.upper()}:{i}").encode()
        for i in range(n_kept)
    )
    return KeySet(f"{prefix}:*", doomed, kept)


def fill(url: str, keys: KeySet) -> None:
    """Write every key of ``keys`` to the cluster at ``url``."""
    fill_keys(url, keys.doomed)
    fill_keys(url, keys.kept)


async def until_deleted(watch: ProgressWatch, n: int) -> None:
    """Return once the watched run has deleted ``n`` keys (bound it with ``anyio.fail_after``)."""
    while watch.snapshot().deleted < n:  # noqa: ASYNC110 - the counters offer no event to await
        await anyio.sleep(0.005)


def client(port: int) -> redis.Redis:
    """A plain client to one node (bytes replies)."""
    return redis.Redis(host=HOST, port=port, socket_timeout=5)


def _call(port: int, *args: Any) -> Any:
    with client(port) as c:
        return c.execute_command(*args)


def node_id(port: int) -> str:
    """The cluster node id of the node on ``port``."""
    raw = _call(port, "CLUSTER", "MYID")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def replicas_caught_up(cluster: LocalCluster) -> bool:
    """True when every online replica has acknowledged its primary's whole replication stream."""
    for node in cluster.primaries():
        with client(node.port) as c:
            info = c.info("replication")
        offset = int(info["master_repl_offset"])
        for key, value in info.items():
            if not (key.startswith("slave") and isinstance(value, dict)):
                continue
            if value.get("state") != "online" or int(value["offset"]) < offset:
                return False
    return True


def wait_replicated(cluster: LocalCluster, timeout: float = 20.0) -> None:
    """Block until the replicas hold everything their primaries were sent."""
    wait_for(lambda: replicas_caught_up(cluster), timeout, "replicas to catch up")


def live_url(cluster: LocalCluster, avoid: Iterable[int] = ()) -> str:
    """A URL of a cluster node other than those in ``avoid``."""
    skip = set(avoid)
    for node in cluster.nodes:
        if node.port not in skip:
            return f"redis://{HOST}:{node.port}"
    raise AssertionError("no live node left")


def owned_slots(port: int) -> list[int]:
    """The slots the node on ``port`` serves, as it says itself."""
    out: list[int] = []
    for row in _call(port, "CLUSTER", "SLOTS"):
        primary_port = int(row[2][1])
        if primary_port == port:
            out.extend(range(int(row[0]), int(row[1]) + 1))
    return out


def migrate_slots(src: int, dst: int, slots: Sequence[int], all_ports: Sequence[int],
                  batch: int = 50, done: list[int] | None = None) -> int:
    """Move ``slots`` from the primary on ``src`` to the one on ``dst`` the way redis-cli does.

    IMPORTING on the target, MIGRATING on the source, MIGRATE ... KEYS in batches, then SETSLOT
    NODE on both and on every other node. Returns the number of keys moved; each slot is
    appended to ``done`` once it has moved.
    """
    src_id, dst_id = node_id(src), node_id(dst)
    moved = 0
    with client(src) as s, client(dst) as d:
        for slot in slots:
            d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            while True:
                keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
                if not keys:
                    break
                s.execute_command("MIGRATE", HOST, dst, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
            d.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            s.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            for port in all_ports:
                if port not in (src, dst):
                    # A replica refuses; gossip tells it.
                    with contextlib.suppress(redis.RedisError):
                        _call(port, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            if done is not None:
                done.append(slot)
    return moved


def check_outcome(url: str, keys: KeySet) -> None:
    """No key matching the pattern survives and every other key is still there."""
    left = scan_all_keys(url)
    survivors = left & keys.doomed
    assert not survivors, f"{len(survivors)} matching keys survived, e.g. {sorted(survivors)[:3]}"
    lost = keys.kept - left
    assert not lost, f"{len(lost)} non-matching keys were lost, e.g. {sorted(lost)[:3]}"
    assert left == keys.kept, f"unexpected keys: {sorted(left - keys.kept)[:3]}"
