"""The figures an explanation needs from the cluster: each primary's DBSIZE, the keys of a
hash-tagged slot, the owners of exact keys. Reads only, one round trip per node or slot."""

from __future__ import annotations

import anyio

from clusterinval._core.costing import shapes
from clusterinval._core.planning import Plan
from clusterinval._core.slots import key_slot
from clusterinval._core.values import NodeAddr
from clusterinval._engine.run import Engine
from clusterinval._engine.topology import Topology
from clusterinval.result import Explanation, PatternCost

__all__ = ["SLOT_COUNT_LIMIT", "explain_plan"]

# A hash-tagged slot is counted up to this many keys (one bounded GETKEYSINSLOT).
SLOT_COUNT_LIMIT = 100_000


async def _size_of(topology: Topology, node: NodeAddr, sizes: dict[NodeAddr, int]) -> None:
    sizes[node] = await topology.node(node).dbsize()


async def explain_plan(engine: Engine, plan: Plan, timeout_s: float) -> Explanation:
    """What serving ``plan`` would read, pattern by pattern (nothing is deleted)."""
    view = await engine.ensure_view()
    topology = engine.topology
    sizes: dict[NodeAddr, int] = {}
    with anyio.fail_after(timeout_s):
        async with anyio.create_task_group() as tg:
            for node in view.primaries:
                tg.start_soon(_size_of, topology, node, sizes)
        cluster_keys = sum(sizes.values())
        costs: list[PatternCost] = []
        for shape in shapes(plan):
            pattern = plan.patterns[shape.index].decode("utf-8", "backslashreplace")
            suggestion = (shape.suggestion.decode("utf-8", "backslashreplace")
                          if shape.suggestion is not None else None)
            if shape.cost in ("prefix-walk", "full-scan"):
                to_read = cluster_keys
            elif shape.cost == "one-slot" and shape.slot is not None:
                owner = view.owner(shape.slot)
                if view.standalone or owner is None:
                    to_read = cluster_keys
                else:
                    listed = await topology.node(owner).keys_in_slot(shape.slot,
                                                                    SLOT_COUNT_LIMIT)
                    to_read = len(listed)
            else:
                to_read = 1 if shape.cost == "exact" else 0
            costs.append(PatternCost(pattern, shape.cost, to_read, shape.slot, suggestion))
    owners = {view.owner(key_slot(k)) for k in plan.keys}
    return Explanation(len(plan.keys), len(owners - {None}), tuple(costs), cluster_keys)
