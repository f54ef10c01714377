"""Full-keyspace patterns run faster than a cluster can serve them are reported once per shape."""

from __future__ import annotations

from clusterinval._core.pressure import PatternPressure, shape_of


def test_shape_masks_ids() -> None:
    assert shape_of(b"user:42:feed:7*") == b"user:#:feed:#*"


def test_back_to_back_passes_warn_once() -> None:
    p = PatternPressure()
    said = [p.observe(b"user:#:*", t * 0.2, 0.2) for t in range(1, 12)]
    warnings = [s for s in said if s is not None]
    assert len(warnings) == 1 and "user:#:*" in warnings[0] and "hash tag" in warnings[0]
    assert said.index(warnings[0]) == 4  # judged from the fifth pass on


def test_occasional_passes_do_not_warn() -> None:
    p = PatternPressure()
    assert all(p.observe(b"user:#:*", t * 10.0, 0.2) is None for t in range(1, 30))


def test_old_passes_leave_the_window() -> None:
    p = PatternPressure(window_s=60.0)
    for t in range(4):
        assert p.observe(b"a:#:*", float(t), 1.0) is None
    # Long after: the earlier busy seconds no longer count.
    assert p.observe(b"a:#:*", 500.0, 0.1) is None
