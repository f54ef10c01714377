"""The hot path of small exact-key calls on the in-memory cluster: one write per owner, and
everything it cannot prove handed to the general path (deadline, cancellation, redirects)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from iocontract import key_in
from prometheus_client import CollectorRegistry

from clusterinval._core.slots import SlotSet, key_slot
from clusterinval._core.values import NodeAddr
from clusterinval._engine.smallcall import SMALL_CALL_KEYS
from clusterinval._invalidator import ClusterInvalidator
from clusterinval._io.memory import MemoryCluster
from clusterinval.errors import InvalidationError

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {"backoff_base_s": 0.001, "backoff_cap_s": 0.01}


def invalidator(cluster: MemoryCluster, **options: Any) -> ClusterInvalidator:
    """An invalidator on ``cluster`` with its own metrics registry."""
    return ClusterInvalidator._from_io(cluster, cluster.seeds, registry=CollectorRegistry(),
                                       **{**FAST, **options})


def one_key_per_primary(c: MemoryCluster) -> dict[int, bytes]:
    """A key in a slot of each primary, by the primary's index."""
    view = c.primaries()
    found: dict[int, bytes] = {}
    for slot in range(0, 16384, 97):
        node = c.owner(slot)
        assert node is not None
        owner = view.index(node)
        found.setdefault(owner, key_in(slot))
        if len(found) == len(view):
            return found
    raise AssertionError("a primary without slots")


def filled_cluster() -> tuple[MemoryCluster, dict[int, bytes]]:
    """Three primaries, each holding one key of the call."""
    c = MemoryCluster(primaries=3)
    keys = one_key_per_primary(c)
    c.set(keys.values())
    return c, keys


async def warm_then_freeze(inv: ClusterInvalidator, c: MemoryCluster, node: NodeAddr) -> None:
    """A first call (the view read, the hot path open), then ``node`` stops answering."""
    await inv.invalidate(keys=[b"warm"])
    c.freeze(node)


async def test_one_command_per_owner_and_exact_figures() -> None:
    c = MemoryCluster(primaries=3)
    keys = list(one_key_per_primary(c).values())
    c.set([*keys, b"kept"])
    async with invalidator(c) as inv:
        c.reset_calls()
        result = await inv.invalidate(keys=[*keys, b"absent"])
        assert result.complete and result.deleted == result.exact_deleted == 3
        assert result.matched == 3
        assert sum(n.unlink_calls for n in result.nodes) == 4
        assert sum(c.call_count(p, "key_commands") for p in c.primaries()) == 3
        assert sum(c.call_count(p, "cluster_view") for p in c.primaries()) == 0
    assert c.keys() == {b"kept"}


async def test_frozen_owner_times_out_alone_and_the_rest_is_counted() -> None:
    """The hot path's timer fires; the general path gets the rest of the deadline, and the
    result names exactly the frozen key's slot."""
    c, keys = filled_cluster()
    frozen = c.primaries()[2]
    async with invalidator(c, timeout_s=0.6, command_timeout_s=0.2) as inv:
        await warm_then_freeze(inv, c, frozen)
        with pytest.raises(InvalidationError) as caught:
            with anyio.fail_after(5):
                await inv.invalidate(keys=list(keys.values()))
        result = caught.value.result
        assert SlotSet.from_ranges(result.uncovered_slots) == SlotSet([key_slot(keys[2])])
        assert result.deleted == 2
        assert any("deadline" in e for e in result.errors)
        c.thaw(frozen)
        retry = await inv.invalidate(keys=list(keys.values()))
        assert retry.complete
    assert not c.keys()


async def test_a_cancelled_caller_leaves_the_invalidator_usable() -> None:
    c, keys = filled_cluster()
    frozen = c.primaries()[1]
    async with invalidator(c, timeout_s=30.0, command_timeout_s=10.0) as inv:
        await warm_then_freeze(inv, c, frozen)
        with anyio.move_on_after(0.2) as scope:
            await inv.invalidate(keys=list(keys.values()))
        assert scope.cancelled_caught
        c.thaw(frozen)
        with anyio.fail_after(5):
            again = await inv.invalidate(keys=list(keys.values()))
        assert again.complete
    assert not c.keys()


async def test_redirected_keys_go_through_the_general_path() -> None:
    """A slot moved after the view was read: MOVED on the hot path, followed by the general
    path, every key counted once."""
    c = MemoryCluster(primaries=3)
    keys = one_key_per_primary(c)
    async with invalidator(c) as inv:
        await inv.invalidate(keys=[b"warm"])
        slot = key_slot(keys[0])
        c.move_slot(slot, c.primaries()[0], c.primaries()[1])
        c.set(keys.values())
        result = await inv.invalidate(keys=list(keys.values()))
        assert result.complete and result.deleted == 3
        assert {n.node: n.deleted for n in result.nodes}[c.primaries()[1].name] == 2
    assert not c.keys()


async def test_large_and_paced_calls_take_the_general_path() -> None:
    """Past the hot path's size, or under a key budget, the run's own machinery serves."""
    c = MemoryCluster(primaries=3)
    many = [f"k:{i}".encode() for i in range(SMALL_CALL_KEYS + 1)]
    c.set(many)
    async with invalidator(c) as inv:
        result = await inv.invalidate(keys=many)
        assert result.complete and result.deleted == len(many)
    few = list(one_key_per_primary(c).values())
    c.set(few)
    async with invalidator(c, keys_per_second=1000) as inv:
        result = await inv.invalidate(keys=few)
        assert result.complete and result.deleted == 3
    assert not c.keys()
