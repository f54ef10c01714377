"""Coverage: a slot counts only when its node served it, not migrating, before and after."""

from __future__ import annotations

from clusterinval._core.coverage import Coverage
from clusterinval._core.slots import SLOT_COUNT, SlotSet
from clusterinval._core.values import ClusterView, NodeAddr, NodeOwnership

A, B = NodeAddr("h", 1), NodeAddr("h", 2)


def view(split: int) -> ClusterView:
    return ClusterView(owners=(A,) * split + (B,) * (SLOT_COUNT - split))


def own(lo: int, hi: int, migrating: tuple[int, ...] = ()) -> NodeOwnership:
    return NodeOwnership(SlotSet.from_ranges([(lo, hi)]), SlotSet(migrating), SlotSet())


class TestCoverage:
    def test_one_round_covers_everything(self) -> None:
        cov = Coverage([SlotSet.full()])
        jobs = cov.jobs(view(8192))
        assert [(n, i, len(s)) for n, i, s in jobs] == [(A, 0, 8192), (B, 0, 8192)]
        assert cov.record(0, jobs[0][2], own(0, 8191), own(0, 8191)) == 8192
        assert not cov.done and cov.left == 8192
        cov.record(0, jobs[1][2], own(8192, 16383), own(8192, 16383))
        assert cov.done and len(cov.uncovered()) == 0

    def test_slot_moved_during_pass_stays_pending(self) -> None:
        cov = Coverage([SlotSet.full()])
        a_need = cov.jobs(view(8192))[0][2]
        # A gave slots 0-99 away while scanning: they are not covered by A's pass.
        cov.record(0, a_need, own(0, 8191), own(100, 8191))
        assert cov.uncovered().ranges() == [(0, 99), (8192, 16383)]
        # Next round: B owns 0-99 now and covers them.
        jobs = cov.jobs(view(0))
        assert [n for n, _, _ in jobs] == [B]

    def test_migrating_slot_not_covered(self) -> None:
        cov = Coverage([SlotSet.full()])
        a_need = cov.jobs(view(8192))[0][2]
        assert cov.record(0, a_need, own(0, 8191), own(0, 8191, migrating=(5,))) == 8191
        assert 5 in cov.uncovered()

    def test_slot_gained_mid_pass_not_covered(self) -> None:
        cov = Coverage([SlotSet.full()])
        a_need = cov.jobs(view(8192))[0][2]
        cov.record(0, a_need, own(10, 8191), own(0, 8191))  # 0-9 arrived during the scan
        assert cov.uncovered().ranges()[0] == (0, 9)

    def test_passes_are_independent(self) -> None:
        cov = Coverage([SlotSet.full(), SlotSet([42])])
        jobs = cov.jobs(view(8192))
        assert sorted((n.port, i, len(s)) for n, i, s in jobs) == [(1, 0, 8192), (1, 1, 1),
                                                                   (2, 0, 8192)]
        cov.record(1, SlotSet([42]), own(0, 8191), own(0, 8191))
        assert 42 in cov.uncovered()  # pass 0 still needs it
        assert cov.left == SLOT_COUNT
