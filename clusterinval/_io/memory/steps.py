"""The server-side steps as an in-memory node runs them: batched UNLINK, SCAN step, slot walk.

Each mirrors its Lua script in ``clusterinval._io.lua``; an UNLINK inside a step goes through
the same routing checks as a key command, as ``redis.pcall`` would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from clusterinval._core.values import ScanStep, SlotBatch, SlotWalkStep
from clusterinval._io.memory.commands import route, scan
from clusterinval._io.memory.errors import NOSCRIPT, READONLY, redis_error
from clusterinval._io.memory.node_state import PRIMARY, NodeState
from clusterinval._io.memory.topology import ClusterState

__all__ = ["batch_call", "scan_step", "script_refusal", "walk_call"]

_UNLINK_CHUNK: Final = 500  # keys per UNLINK in the slot-walk step, as in the Lua


def script_refusal(node: NodeState) -> BaseException | None:
    """Why ``node`` does not run a step (no scripts, or not a primary); None when it does."""
    if not node.scripts:
        return redis_error(NOSCRIPT)
    if node.role != PRIMARY:
        return redis_error(READONLY)
    return None


def _script_unlink(cluster: ClusterState, node: NodeState, keys: Sequence[bytes]) -> int | None:
    """``redis.pcall('UNLINK', ...)`` inside a step: the count, or None when it errs."""
    if route(cluster, node, keys, asking=False) is not None:
        return None
    return sum(cluster.unlink(node, k) for k in dict.fromkeys(keys))


def batch_call(
    cluster: ClusterState, node: NodeState, call: Sequence[SlotBatch]
) -> tuple[int, list[int]]:
    """One call of the per-slot UNLINK step: keys removed, and the indexes of failed batches."""
    removed = 0
    failed: list[int] = []
    for index, (_slot, keys) in enumerate(call):
        n = _script_unlink(cluster, node, keys) if keys else None
        if n is None:
            failed.append(index)
        else:
            removed += n
    return removed, failed


def scan_step(
    cluster: ClusterState, node: NodeState, cursor: int, match: bytes, count: int,
    prefixes: Sequence[bytes] = (), empty_key: bool = False,
) -> ScanStep:
    """One SCAN that unlinks each key it finds (with ``prefixes``: each that starts with one);
    the keys it could not unlink are left."""
    next_cursor, keys = scan(cluster, node, cursor, match, count)
    hits = keys
    per: dict[int, int] = {}
    per_all: dict[int, int] = {}
    if prefixes:
        hits = []
        for k in keys:
            fits = [p for p, prefix in enumerate(prefixes)
                    if k.startswith(prefix) and (k or empty_key)]
            if fits:
                hits.append(k)
                per[fits[0]] = per.get(fits[0], 0) + 1
                for p in fits:
                    per_all[p] = per_all.get(p, 0) + 1
    deleted = 0
    left: list[bytes] = []
    for k in hits:
        n = _script_unlink(cluster, node, [k])
        if n is None:
            left.append(k)
        else:
            deleted += n
    if not prefixes:
        return ScanStep(next_cursor, len(hits), deleted, left)
    return ScanStep(next_cursor, len(hits), deleted, left, per, per_all, len(keys))


def walk_call(
    cluster: ClusterState,
    state: NodeState,
    prefixes: Sequence[bytes],
    lo: int,
    hi: int,
    budget: int,
    cap: int,
    empty_key: bool,
) -> SlotWalkStep:
    """One call of the slot-walk step over slots ``lo..hi``, stopping once ``budget`` is spent."""
    mine = state.addr
    moving = set(state.migrating) | set(state.importing)
    per: dict[int, int] = {}
    per_all: dict[int, int] = {}
    examined = matched = deleted = 0
    big: list[int] = []
    failed: list[bytes] = []
    unproven: list[int] = []
    s = lo
    while s <= hi:
        if examined >= budget:
            break
        if state.role != PRIMARY or cluster.owners[s] is not mine or s in moving:
            unproven.append(s)
        else:
            keys = state.slot_keys(s)
            if len(keys) > cap:
                big.append(s)
            elif keys:
                examined += len(keys)
                hit: list[bytes] = []
                for k in keys:
                    if k or empty_key:
                        fits = [p for p, prefix in enumerate(prefixes) if k.startswith(prefix)]
                        if fits:
                            hit.append(k)
                            per[fits[0]] = per.get(fits[0], 0) + 1
                            for p in fits:
                                per_all[p] = per_all.get(p, 0) + 1
                for j in range(0, len(hit), _UNLINK_CHUNK):
                    chunk = hit[j : j + _UNLINK_CHUNK]
                    n = _script_unlink(cluster, state, chunk)
                    if n is None:
                        failed.extend(chunk)
                    else:
                        deleted += n
                matched += len(hit)
        s += 1
    return SlotWalkStep(-1 if s > hi else s, examined, matched, deleted, big, failed, per, unproven,
                        per_all)
