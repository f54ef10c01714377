"""The two texts a node describes the cluster with: CLUSTER SLOTS (who owns which slot) and the
``myself`` line of CLUSTER NODES (what the node itself serves). Pure parsing."""

from __future__ import annotations

from typing import Any

from clusterinval._core.slots import SLOT_COUNT, SlotSet
from clusterinval._core.values import ClusterView, NodeAddr, NodeOwnership

__all__ = ["parse_cluster_slots", "parse_myself_line", "slot_ranges"]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def slot_ranges(reply: Any) -> list[tuple[int, int, Any, list[Any]]]:
    """Rows ``(lo, hi, primary, replicas)`` of a raw or redis-py-parsed CLUSTER SLOTS reply.

    Each node entry is as the reply gives it: a sequence whose first two items are the host
    (bytes or str, possibly empty) and the port.
    """
    if isinstance(reply, dict):  # redis-py's parsed form {(lo, hi): {"primary": ..}}
        return [(int(lo), int(hi), v["primary"], list(v.get("replicas", [])))
                for (lo, hi), v in reply.items()]
    return [(int(r[0]), int(r[1]), r[2], list(r[3:])) for r in reply or []]


def parse_cluster_slots(reply: Any, asked: NodeAddr) -> ClusterView | None:
    """Parse a raw or redis-py-parsed CLUSTER SLOTS reply."""
    owners: list[NodeAddr | None] = [None] * SLOT_COUNT
    replicas: dict[NodeAddr, set[NodeAddr]] = {}

    def addr(entry: Any) -> NodeAddr:
        host = _text(entry[0]) if entry[0] else ""
        if host in ("", "?"):
            host = asked.host  # the node did not announce an endpoint: it is the one we asked
        return NodeAddr(host, int(entry[1]))

    rows = [(lo, hi, addr(primary), [addr(r) for r in reps])
            for lo, hi, primary, reps in slot_ranges(reply)]
    any_row = False
    for lo, hi, primary, reps in rows:
        any_row = True
        for s in range(lo, hi + 1):
            owners[s] = primary
        replicas.setdefault(primary, set()).update(reps)
    if not any_row:
        return None  # a node that knows no slots (fresh, or not yet joined): ask another
    return ClusterView(
        owners=tuple(owners), replicas={k: tuple(sorted(v)) for k, v in replicas.items()}
    )


def parse_myself_line(cluster_nodes: str) -> NodeOwnership:
    """The owned/migrating/importing slots on the ``myself`` line of CLUSTER NODES output."""
    owned, migrating, importing = SlotSet(), SlotSet(), SlotSet()
    epoch = -1  # no "myself" line: a reading that matches no other
    for line in cluster_nodes.splitlines():
        parts = line.split()
        if len(parts) < 8 or "myself" not in parts[2].split(","):
            continue
        epoch = int(parts[6])
        for item in parts[8:]:
            if item.startswith("["):
                slot_text, _, _ = item[1:].partition("-")
                if "->-" in item:
                    migrating.add(int(slot_text))
                elif "-<-" in item:
                    importing.add(int(slot_text))
            elif "-" in item:
                lo, hi = item.split("-", 1)
                owned.add_range(int(lo), int(hi))
            else:
                owned.add(int(item))
    return NodeOwnership(owned, migrating, importing, epoch)
