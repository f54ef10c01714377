"""What an in-memory node answers to key commands and SCAN, with Redis's routing checks."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from clusterinval._core.glob import compile_pattern, redis_glob_match
from clusterinval._core.slots import key_slot
from clusterinval._io.memory.errors import (
    CROSSSLOT,
    DOWN_STATE,
    DOWN_UNBOUND,
    UNSTABLE,
    redis_error,
)
from clusterinval._io.memory.node_state import PRIMARY, NodeState
from clusterinval._io.memory.topology import ClusterState
from clusterinval.errors import InvalidPatternError

__all__ = ["key_command", "route", "scan"]


def route(
    cluster: ClusterState, node: NodeState, keys: Sequence[bytes], asking: bool
) -> BaseException | None:
    """Redis's ``getNodeByQuery`` for a key command: None when ``node`` serves it."""
    first = keys[0]
    slot = key_slot(first)
    owner = cluster.owners[slot]
    if owner is None:
        return redis_error(DOWN_UNBOUND)
    multiple = False
    for k in keys[1:]:
        if k != first:
            if key_slot(k) != slot:
                return redis_error(CROSSSLOT)
            multiple = True
    migrating = owner == node.addr and node.role == PRIMARY and slot in node.migrating
    importing = not migrating and node.role == PRIMARY and slot in node.importing
    missing = existing = 0
    if migrating or importing:
        for k in keys:
            if k in node.data:
                existing += 1
            else:
                missing += 1
    if not cluster.state_ok():
        return redis_error(DOWN_STATE)
    if migrating and missing:
        if existing:
            return redis_error(UNSTABLE)
        target = cluster.nodes[node.migrating[slot]].addr
        return redis_error(f"ASK {slot} {target.host}:{target.port}")
    if importing and asking:
        return redis_error(UNSTABLE) if multiple and missing else None
    if owner != node.addr:
        return redis_error(f"MOVED {slot} {owner.host}:{owner.port}")
    return None


def key_command(
    cluster: ClusterState, node: NodeState, command: str, keys: Sequence[bytes], asking: bool
) -> Any:
    """One UNLINK or EXISTS as ``node`` answers it: an int or the error instance."""
    if not keys:
        return redis_error(f"ERR wrong number of arguments for '{command.lower()}' command")
    refused = route(cluster, node, keys, asking)
    if refused is not None:
        return refused
    if command == "UNLINK":
        return sum(cluster.unlink(node, k) for k in dict.fromkeys(keys))
    if command == "EXISTS":
        return sum(1 for k in keys if k in node.data)
    return redis_error(f"ERR unknown command '{command}'")


def scan(
    cluster: ClusterState, node: NodeState, cursor: int, match: bytes, count: int
) -> tuple[int, list[bytes]]:
    """One ``SCAN cursor MATCH match COUNT count``: the next cursor and the keys found."""
    matches = _matcher(match)
    order = node.order
    i = bisect_left(order, cursor) if cursor else 0
    examined = 0
    start = i
    found: list[bytes] = []
    while i < len(order) and examined < max(1, count):
        for k in node.at[order[i]]:
            examined += 1
            if matches(k):
                found.append(k)
        i += 1
    if i >= len(order):
        return 0, found
    if cluster.scan_repeat and i - start >= 2:
        i -= 1  # the next call reads this position again
    return order[i], found


_MATCHERS: dict[bytes, Callable[[bytes], bool]] = {}


def _matcher(pattern: bytes) -> Callable[[bytes], bool]:
    """``SCAN ... MATCH pattern`` as Redis decides it (the pattern "*" alone skips matching)."""
    found = _MATCHERS.get(pattern)
    if found is None:
        if pattern == b"*":
            found = _match_all
        else:
            try:
                found = compile_pattern(pattern).match
            except InvalidPatternError:
                # Redis takes any bytes as a pattern; follow its own matcher for malformed ones.
                found = partial(_match_malformed, pattern)
        if len(_MATCHERS) < 1024:
            _MATCHERS[pattern] = found
    return found


def _match_all(key: bytes) -> bool:
    return True


def _match_malformed(pattern: bytes, key: bytes) -> bool:
    return bool(key) and redis_glob_match(pattern, key)
