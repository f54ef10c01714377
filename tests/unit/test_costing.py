"""The cost of each pattern, from its plan alone."""

from __future__ import annotations

import pytest

from clusterinval._core.costing import shapes
from clusterinval._core.planning import make_plan


@pytest.mark.parametrize(("pattern", "cost", "suggestion"), [
    ("user:42:*", "prefix-walk", b"{user:42}:*"),
    ("project:7:list:*", "prefix-walk", b"{project:7:list}:*"),
    ("user:4?:*", "full-scan", b"{user}:4?:*"),
    ("*:x", "full-scan", None),
    ("{t:1}:*", "one-slot", None),
    ("{t:1}:*:v", "one-slot", None),
    ("lit:key", "exact", None),
    ("a\\*b:*", "prefix-walk", b"{a\\*b}:*"),  # a literal * may sit in a hash tag
])
def test_shapes(pattern: str, cost: str, suggestion: bytes | None) -> None:
    (shape,) = shapes(make_plan(None, [pattern]))
    assert (shape.cost, shape.suggestion) == (cost, suggestion)
    if cost == "one-slot":
        assert shape.slot is not None


def test_a_pattern_served_by_a_broader_one_is_covered() -> None:
    kinds = [s.cost for s in shapes(make_plan(None, ["user:*", "user:1:*", "user:1:*"]))]
    assert kinds == ["prefix-walk", "covered", "covered"]
