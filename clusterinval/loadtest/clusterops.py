"""Benchmark plumbing on the server side: fast fill, flush, SLOWLOG capture, the server-side floor.

Synchronous (redis-py) on purpose: these run between measured runs, never during one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis

from clusterinval._core.slots import key_slot
from clusterinval.testing.fill import cluster_primaries, slot_owners

__all__ = [
    "FLOOR_SCRIPT",
    "FillPlan",
    "SlowCommand",
    "SlowlogGuard",
    "fast_fill",
    "flush_cluster",
    "plan_fill",
    "primary_conn",
    "write_fill",
]

# Keys per MSET and commands per pipeline round trip: large enough that a million keys take a
# few seconds, small enough that no single MSET holds a node for long.
_MSET_KEYS = 500
_PIPE_COMMANDS = 200

# The server-side floor: one blocking loop on a primary over a slot range, listing each slot's keys
# (COUNTKEYSINSLOT / GETKEYSINSLOT) and unlinking those that start with one of the prefixes, one
# UNLINK per slot (in chunks the Lua stack can unpack). A reference for "how fast could it be",
# not a tool: it holds the node for its whole duration.
FLOOR_SCRIPT = b"""#!lua flags=allow-cross-slot-keys
local lo, hi = tonumber(ARGV[1]), tonumber(ARGV[2])
local prefixes = {}
for i = 3, #ARGV do prefixes[#prefixes + 1] = ARGV[i] end
local total = 0
for slot = lo, hi do
  local n = redis.call('CLUSTER', 'COUNTKEYSINSLOT', slot)
  if n > 0 then
    local keys = redis.call('CLUSTER', 'GETKEYSINSLOT', slot, n)
    local doomed = {}
    for i = 1, #keys do
      local k = keys[i]
      for j = 1, #prefixes do
        local p = prefixes[j]
        if string.sub(k, 1, #p) == p then doomed[#doomed + 1] = k; break end
      end
    end
    for i = 1, #doomed, 4000 do
      total = total + redis.call('UNLINK', unpack(doomed, i, math.min(i + 3999, #doomed)))
    end
  end
end
return total
"""


def primary_conn(url: str, host: str, port: int) -> redis.Redis:
    """A plain connection to one node, with the URL's credentials."""
    base = redis.Redis.from_url(url)
    kwargs = dict(base.connection_pool.connection_kwargs)
    base.close()
    kwargs.update(host=host, port=port, socket_timeout=120.0)
    kwargs.pop("db", None)
    pool = redis.ConnectionPool(connection_class=base.connection_pool.connection_class, **kwargs)
    return redis.Redis.from_pool(pool)


def _each_primary(url: str, fn: Any) -> list[Any]:
    primaries = cluster_primaries(url)
    with ThreadPoolExecutor(max_workers=len(primaries)) as pool:
        return list(pool.map(lambda hp: fn(hp[0], hp[1]), primaries))


# How long to wait for replicas to confirm they applied a flush or a fill.
_REPLICA_WAIT_MS = 60_000


def _wait_replicas(conn: redis.Redis) -> None:
    """Block until every replica of ``conn``'s node has applied what this connection wrote.

    A measured run must not share the CPU with replicas still replaying the fill: ``WAIT`` asks
    them for an acknowledgement at once and returns when all have caught up (or at the timeout).
    """
    replicas = int(conn.info("replication").get("connected_slaves", 0))
    if replicas:
        conn.wait(replicas, _REPLICA_WAIT_MS)


def flush_cluster(url: str) -> None:
    """FLUSHALL SYNC on every primary, and wait until their replicas have applied it."""
    def flush(host: str, port: int) -> None:
        with primary_conn(url, host, port) as conn:
            conn.execute_command("FLUSHALL", "SYNC")
            _wait_replicas(conn)

    _each_primary(url, flush)


FillPlan = dict[tuple[str, int], list[list[bytes]]]


def plan_fill(url: str, keys: Iterable[str], value: bytes = b"v") -> FillPlan:
    """The MSET argument lists per primary for ``keys``, grouped by slot (reusable across fills)."""
    owners = slot_owners(url)
    by_slot: dict[int, list[bytes]] = {}
    for k in keys:
        kb = k.encode()
        by_slot.setdefault(key_slot(kb), []).append(kb)
    plan: FillPlan = {}
    for slot, ks in by_slot.items():
        owner = owners[slot]
        if owner is None:
            raise RuntimeError(f"slot {slot} has no owner; is the cluster healthy?")
        commands = plan.setdefault(owner, [])
        for i in range(0, len(ks), _MSET_KEYS):
            commands.append([x for k in ks[i : i + _MSET_KEYS] for x in (k, value)])
    return plan


def write_fill(url: str, plan: FillPlan) -> int:
    """Run a fill plan, primaries in parallel, replicas caught up; returns the keys written."""
    def write(node: tuple[str, int]) -> int:
        commands = plan[node]
        with primary_conn(url, *node) as conn:
            for start in range(0, len(commands), _PIPE_COMMANDS):
                pipe = conn.pipeline(transaction=False)
                for args in commands[start : start + _PIPE_COMMANDS]:
                    pipe.execute_command("MSET", *args)
                pipe.execute()
            _wait_replicas(conn)
        return sum(len(a) // 2 for a in commands)

    with ThreadPoolExecutor(max_workers=max(1, len(plan))) as pool:
        return sum(pool.map(write, list(plan)))


def fast_fill(url: str, keys: Iterable[str], value: bytes = b"v") -> int:
    """SET every key: grouped by slot first, one MSET per slot chunk, primaries in parallel."""
    return write_fill(url, plan_fill(url, keys, value))


@dataclass(frozen=True, slots=True)
class SlowCommand:
    """The longest command a primary's SLOWLOG recorded."""

    node: str
    duration_ms: float
    command: str


class SlowlogGuard:
    """Lowers every primary's slowlog threshold for the benchmark and restores it afterwards."""

    def __init__(self, url: str, threshold_us: int = 500, max_len: int = 10_000) -> None:
        self.url = url
        self.threshold_us = threshold_us
        self.max_len = max_len
        self._saved: dict[tuple[str, int], tuple[str, str]] = {}

    def __enter__(self) -> SlowlogGuard:
        for host, port in cluster_primaries(self.url):
            with primary_conn(self.url, host, port) as conn:
                before = conn.config_get("slowlog-*")
                self._saved[(host, port)] = (str(before["slowlog-log-slower-than"]),
                                             str(before["slowlog-max-len"]))
                conn.config_set("slowlog-log-slower-than", self.threshold_us)
                conn.config_set("slowlog-max-len", self.max_len)
        return self

    def __exit__(self, *exc: object) -> None:
        for (host, port), (slower, max_len) in self._saved.items():
            try:
                with primary_conn(self.url, host, port) as conn:
                    conn.config_set("slowlog-log-slower-than", slower)
                    conn.config_set("slowlog-max-len", max_len)
            except redis.RedisError:
                pass  # a node gone since: nothing to restore on it

    def reset(self) -> None:
        """Empty every primary's slowlog (before a measured run)."""
        for host, port in cluster_primaries(self.url):
            with primary_conn(self.url, host, port) as conn:
                conn.slowlog_reset()

    def longest(self) -> SlowCommand | None:
        """The longest command logged on any primary since the last reset (None: all below)."""
        best: SlowCommand | None = None
        for host, port in cluster_primaries(self.url):
            with primary_conn(self.url, host, port) as conn:
                entries: Sequence[dict[str, Any]] = conn.slowlog_get(self.max_len)
            for e in entries:
                ms = int(e["duration"]) / 1000.0
                cmd = e.get("command", b"")
                text = cmd.decode("utf-8", "replace") if isinstance(cmd, bytes) else str(cmd)
                if text.upper().startswith("SLOWLOG"):
                    continue  # the benchmark's own reset, not the measured tool
                if best is None or ms > best.duration_ms:
                    best = SlowCommand(f"{host}:{port}", ms, text[:60])
        return best
