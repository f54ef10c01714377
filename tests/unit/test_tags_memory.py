"""Tags on the in-memory cluster: writes racing an invalidation at every point of its run, an
index that cannot be reached, and a run that dies half-way."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memkit import invalidator, outcome

from clusterinval._core.slots import key_slot
from clusterinval._core.tags import set_key, tag_slot, takes_key
from clusterinval._core.values import NodeAddr
from clusterinval._io.memory import MemoryCluster
from clusterinval.errors import InvalidationError, InvalidInputError

pytestmark = pytest.mark.anyio

TAG = b"user:42"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tagged=st.integers(1, 40), late=st.integers(0, 5), at_call=st.integers(0, 12),
       inline=st.booleans())
async def test_a_write_racing_the_take_is_deleted_before_it_and_kept_after_it(
        tagged: int, late: int, at_call: int, inline: bool) -> None:
    cluster = MemoryCluster(primaries=3)
    early = [f"user:42:{i}".encode() for i in range(tagged)]
    bystanders = [f"user:43:{i}".encode() for i in range(10)]
    cluster.set(early + bystanders)
    cluster.sadd(set_key(TAG), early)
    racing = [f"user:42:late:{i}".encode() for i in range(late)]
    calls: list[str] = []
    written_before_take: list[bool] = []

    def hook(_node: NodeAddr, operation: str) -> None:
        calls.append(operation)
        if len(calls) - 1 == at_call and racing:
            # A writer stores entries, then indexes them (the tagged writer's order).
            written_before_take.append("tag_take" not in calls[:-1])
            cluster.set(racing)
            cluster.sadd(set_key(TAG), racing)

    inv = invalidator(cluster)
    if not inline:
        import clusterinval._engine.tagtake as tagtake
        saved = tagtake.INLINE_MEMBERS
        tagtake.INLINE_MEMBERS = 0  # every set read in SSCAN steps
    remove = cluster.on_call(hook)
    try:
        async with inv:
            result = await outcome(inv, tags=[TAG], operation_name="user")
    finally:
        remove()
        if not inline:
            tagtake.INLINE_MEMBERS = saved
    left = cluster.keys()
    assert result.complete
    assert not set(early) & left
    assert set(bystanders) <= left
    if written_before_take == [True]:
        # Indexed before the take: part of this run, gone.
        assert not set(racing) & left
        assert result.per_tag == (("user:42", tagged + late),)
    elif written_before_take == [False]:
        # Indexed after the take: it stays, and stays indexed for the next run.
        assert set(racing) <= left
        assert set(racing) <= cluster.set_members(set_key(TAG))
        assert result.per_tag == (("user:42", tagged),)
    assert cluster.set_members(takes_key(TAG)) == frozenset()


async def test_an_unreachable_index_makes_the_run_incomplete_never_empty() -> None:
    cluster = MemoryCluster(primaries=3)
    keys = [f"user:42:{i}".encode() for i in range(5)]
    cluster.set(keys)
    cluster.sadd(set_key(TAG), keys)
    owner = cluster.owner(tag_slot(TAG))
    assert owner is not None
    cluster.kill(owner)
    async with invalidator(cluster) as inv:
        with pytest.raises(InvalidationError) as caught:
            await inv.invalidate(tags=[TAG], operation_name="user")
    result = caught.value.result
    assert not result.complete and result.per_tag == (("user:42", 0),)
    slot = tag_slot(TAG)
    assert any(lo <= slot <= hi for lo, hi in result.uncovered_slots)


async def test_a_run_that_dies_after_the_take_leaves_its_members_to_the_next() -> None:
    cluster = MemoryCluster(primaries=3)
    keys = [f"user:42:{i}".encode() for i in range(30)]
    cluster.set(keys)
    cluster.sadd(set_key(TAG), keys)
    # Every member's node refuses the deletes for a while: the run ends incomplete.
    victims = {cluster.owner(key_slot(k)) for k in keys} - {cluster.owner(tag_slot(TAG))}
    victim = sorted(v for v in victims if v is not None)[0]
    async with invalidator(cluster) as inv:
        cluster.freeze(victim)
        first = await outcome(inv, tags=[TAG], operation_name="user", )
        cluster.thaw(victim)
        assert not first.complete
        assert len(cluster.set_members(takes_key(TAG))) == 1  # the taken set, still registered
        second = await inv.invalidate(tags=[TAG], operation_name="user")
    assert second.complete
    assert not set(keys) & cluster.keys()
    assert first.deleted + second.deleted == len(keys)
    assert cluster.set_members(takes_key(TAG)) == frozenset()


async def test_tag_keys_then_gc_drops_only_missing_members() -> None:
    cluster = MemoryCluster(primaries=3)
    keys = [f"p:7:{i}".encode() for i in range(20)]
    cluster.set(keys)
    async with invalidator(cluster) as inv:
        assert await inv.tag([*keys, b"p:7:absent"], tags=["project:7", "all"]) == 40
        cluster.remove(keys[:5])
        done = await inv.gc_tags()
        assert (done.sets, done.members, done.removed) == (2, 40, 10)
        assert cluster.set_members(set_key(b"project:7")) == frozenset(keys[5:])
        with pytest.raises(InvalidInputError):
            await inv.tag(keys, tags=["bad{tag"])
        with pytest.raises(InvalidInputError):
            await inv.tag("p:7:1", tags=["project:7"])
