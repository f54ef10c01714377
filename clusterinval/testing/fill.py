"""Fast, synchronous helpers to fill a cluster with keys and read its keyspace back.

Used by tests, the demo, the load generator and the benchmark. Keys are grouped by slot and written
with one ``MSET`` per slot chunk on the owning primary, pipelined, so a million keys take seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

import redis

from clusterinval._core.batching import group_by_slot
from clusterinval._core.cluster_text import slot_ranges
from clusterinval._core.slots import SLOT_COUNT

__all__ = ["cluster_primaries", "count_keys", "fill_keys", "scan_all_keys", "slot_owners"]

_CHUNK = 50_000


def _conn(host: str, port: int, url_template: str) -> redis.Redis:
    # Reuse the URL's scheme and credentials with another host:port.
    base = redis.Redis.from_url(url_template, decode_responses=False)
    kwargs = dict(base.connection_pool.connection_kwargs)
    base.close()
    kwargs.update(host=host, port=port)
    kwargs.pop("db", None)
    conn_class = base.connection_pool.connection_class
    pool = redis.ConnectionPool(connection_class=conn_class, **kwargs)
    return redis.Redis.from_pool(pool)


def slot_owners(url: str) -> list[tuple[str, int] | None]:
    """The owner ``(host, port)`` of every slot (all the seed node for a standalone server)."""
    seed = redis.Redis.from_url(url)
    try:
        host = str(seed.connection_pool.connection_kwargs.get("host", "127.0.0.1"))
        port = int(seed.connection_pool.connection_kwargs.get("port", 6379))
        try:
            rows = seed.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
        except redis.ResponseError:
            return [(host, port)] * SLOT_COUNT
    finally:
        seed.close()
    owners: list[tuple[str, int] | None] = [None] * SLOT_COUNT
    for lo, hi, primary, _replicas in slot_ranges(rows):
        h = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
        for s in range(lo, hi + 1):
            owners[s] = (h or host, int(primary[1]))
    return owners


def cluster_primaries(url: str) -> list[tuple[str, int]]:
    """Every primary that owns a slot."""
    return sorted({o for o in slot_owners(url) if o is not None})


def _chunks(items: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def fill_keys(url: str, keys: Iterable[bytes | str], value: bytes = b"v") -> int:
    """SET every key (grouped per slot, pipelined per primary); returns how many were written."""
    owners = slot_owners(url)
    conns: dict[tuple[str, int], redis.Redis] = {}
    written = 0
    try:
        for chunk in _chunks((k.encode() if isinstance(k, str) else k for k in keys), _CHUNK):
            per_node: dict[tuple[str, int], list[tuple[int, list[bytes]]]] = {}
            for slot, ks in group_by_slot(chunk, 200):
                owner = owners[slot]
                if owner is None:
                    raise RuntimeError(f"slot {slot} has no owner; is the cluster healthy?")
                per_node.setdefault(owner, []).append((slot, ks))
            for owner, batches in per_node.items():
                conn = conns.get(owner) or conns.setdefault(owner, _conn(*owner, url))
                pipe = conn.pipeline(transaction=False)
                for _slot, ks in batches:
                    pipe.mset(dict.fromkeys(ks, value))
                pipe.execute()
            written += len(chunk)
    finally:
        for c in conns.values():
            c.close()
    return written


def scan_all_keys(url: str, match: bytes | str | None = None) -> set[bytes]:
    """Every key on every primary (optionally only those matching ``match``)."""
    out: set[bytes] = set()
    for host, port in cluster_primaries(url):
        conn = _conn(host, port, url)
        try:
            for k in conn.scan_iter(match=match, count=2000):
                out.add(k)
        finally:
            conn.close()
    return out


def count_keys(url: str) -> int:
    """Total keys held by the primaries (DBSIZE summed)."""
    total = 0
    for host, port in cluster_primaries(url):
        conn = _conn(host, port, url)
        try:
            total += int(conn.dbsize())
        finally:
            conn.close()
    return total
