"""Slot moves between in-memory primaries, as ``CLUSTER SETSLOT``, ``MIGRATE``, ``ADDSLOTS`` do."""

from __future__ import annotations

from collections.abc import Iterable

from clusterinval._core.slots import key_slot
from clusterinval._core.values import NodeAddr
from clusterinval._io.memory.errors import redis_error
from clusterinval._io.memory.node_state import PRIMARY
from clusterinval._io.memory.topology import ClusterState

__all__ = [
    "add_slots",
    "del_slots",
    "migrate_keys",
    "move_slot",
    "setslot_importing",
    "setslot_migrating",
    "setslot_node",
    "setslot_stable",
]


def setslot_importing(cluster: ClusterState, slot: int, dst: NodeAddr, src: NodeAddr) -> None:
    """``CLUSTER SETSLOT slot IMPORTING src`` on ``dst``."""
    node = cluster.primary_state(dst)
    if cluster.owners[slot] == dst:
        raise redis_error(f"ERR I'm already the owner of hash slot {slot}")
    node.importing[slot] = cluster.primary_state(src).addr


def setslot_migrating(cluster: ClusterState, slot: int, src: NodeAddr, dst: NodeAddr) -> None:
    """``CLUSTER SETSLOT slot MIGRATING dst`` on ``src``."""
    node = cluster.primary_state(src)
    if cluster.owners[slot] != src:
        raise redis_error(f"ERR I'm not the owner of hash slot {slot}")
    node.migrating[slot] = cluster.primary_state(dst).addr


def setslot_stable(cluster: ClusterState, slot: int, node: NodeAddr) -> None:
    """``CLUSTER SETSLOT slot STABLE`` on ``node``: its migration state for the slot goes."""
    state = cluster.node_state(node)
    state.migrating.pop(slot, None)
    state.importing.pop(slot, None)


def migrate_keys(
    cluster: ClusterState,
    slot: int,
    src: NodeAddr,
    dst: NodeAddr,
    n: int | None,
    keys: Iterable[bytes] | None,
) -> int:
    """``MIGRATE`` the first ``n`` keys of ``slot`` (or the given ``keys``); how many moved."""
    source, target = cluster.primary_state(src), cluster.primary_state(dst)
    if keys is not None:
        chosen = [k for k in keys if k in source.data and key_slot(k) == slot]
    else:
        chosen = source.slot_keys(slot)[:n]
    moved = 0
    for key in chosen:
        if key in target.data:
            raise redis_error("BUSYKEY Target key name already exists.")
        cluster.write(target, key, source.data[key])
        cluster.unlink(source, key)
        moved += 1
    return moved


def setslot_node(cluster: ClusterState, slot: int, node: NodeAddr, on: NodeAddr | None) -> None:
    """``CLUSTER SETSLOT slot NODE node`` run on ``on`` (default: ``node`` itself)."""
    new_owner = cluster.primary_state(node)
    runner = cluster.node_state(on if on is not None else node)
    if runner.role != PRIMARY:
        raise redis_error("ERR Please use SETSLOT only with masters.")
    if cluster.owners[slot] == runner.addr and new_owner is not runner and runner.by_slot.get(slot):
        raise redis_error(
            f"ERR Can't assign hashslot {slot} to a different node while I "
            "still hold keys for this hash slot."
        )
    if slot in runner.migrating and not runner.by_slot.get(slot):
        del runner.migrating[slot]
    if new_owner is runner and slot in runner.importing:
        cluster.bump_epoch(runner)
        del runner.importing[slot]
    cluster.assign(slot, new_owner.addr)


def move_slot(cluster: ClusterState, slot: int, src: NodeAddr, dst: NodeAddr) -> int:
    """Migrate ``slot`` from ``src`` to ``dst`` the way redis-cli does; keys moved."""
    setslot_importing(cluster, slot, dst, src)
    setslot_migrating(cluster, slot, src, dst)
    everything = len(cluster.node_state(src).slot_keys(slot))
    moved = migrate_keys(cluster, slot, src, dst, everything, None)
    setslot_node(cluster, slot, dst, None)
    setslot_node(cluster, slot, dst, src)
    return moved


def del_slots(cluster: ClusterState, slots: Iterable[int]) -> None:
    """``CLUSTER DELSLOTS`` on every node: nobody serves these slots (their keys stay)."""
    for s in slots:
        cluster.owners[s] = None
        cluster.unbound.add(s)


def add_slots(cluster: ClusterState, node: NodeAddr, slots: Iterable[int]) -> None:
    """``CLUSTER ADDSLOTS`` on ``node`` for unowned slots (no epoch change, as in Redis)."""
    state = cluster.primary_state(node)
    for s in slots:
        if cluster.owners[s] is not None:
            raise redis_error(f"ERR Slot {s} is already busy")
        cluster.owners[s] = state.addr
        cluster.unbound.discard(s)
