"""Topology refreshes: callers that ask at once share readings, and each gets a view read after
it asked."""

from __future__ import annotations

import anyio
import pytest

from clusterinval._engine.topology import Topology
from clusterinval._io.memory import MemoryCluster

pytestmark = pytest.mark.anyio


async def test_many_callers_at_once_cost_at_most_two_readings() -> None:
    cluster = MemoryCluster(3, 0)
    cluster.slow(cluster.seeds[0], 0.01)  # every reading takes a while: callers pile up
    topology = Topology(cluster, cluster.seeds)
    await topology.refresh()
    cluster.reset_calls()
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(topology.refresh)
    # One reading was under way when the others asked; one more, begun after, serves them all.
    assert 1 <= cluster.call_count(operation="cluster_view") <= 2


async def test_a_caller_never_gets_a_view_read_before_it_asked() -> None:
    cluster = MemoryCluster(3, 0)
    topology = Topology(cluster, cluster.seeds)
    first = await topology.refresh()
    cluster.reset_calls()
    again = await topology.refresh()  # nobody else is reading: it reads itself
    assert cluster.call_count(operation="cluster_view") == 1
    assert again.owners == first.owners
    assert topology.generation == 2
