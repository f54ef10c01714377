"""The public face: __all__ matches the real exports; results and options behave as values."""

from __future__ import annotations

import dataclasses
import json

import pytest

import clusterinval
from clusterinval import (
    ClusterInvalError,
    InvalidationError,
    InvalidationResult,
    InvalidatorOptions,
    NodeResult,
)


def test_all_matches_exports() -> None:
    public = {n for n in dir(clusterinval) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(clusterinval, n)).__name__ == "module"}
    assert set(clusterinval.__all__) == public - modules
    for name in clusterinval.__all__:
        assert getattr(clusterinval, name).__module__.startswith("clusterinval")


def test_error_tree() -> None:
    for name in clusterinval.__all__:
        obj = getattr(clusterinval, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, ClusterInvalError)
            assert obj.__doc__
    assert issubclass(clusterinval.InvalidInputError, ValueError)
    assert issubclass(clusterinval.ClusterConnectionError, ConnectionError)
    assert issubclass(clusterinval.ClusterPermissionError, PermissionError)


def test_result_is_frozen_and_serialises() -> None:
    r = InvalidationResult(
        operation="op", deleted=3, matched=4, scanned=10, complete=False, duration_s=0.5,
        nodes=(NodeResult(node="h:1", deleted=3),), uncovered_slots=((0, 9), (20, 20)),
        sample=(b"\xffkey",), per_pattern=(("a*", 4),),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.deleted = 5  # type: ignore[misc]
    data = json.loads(json.dumps(r.to_dict()))
    assert data["uncovered_slot_count"] == 11 and data["sample"] == ["\\xffkey"]
    assert data["nodes"][0]["node"] == "h:1" and data["per_pattern"] == {"a*": 4}
    err = InvalidationError("incomplete", r)
    assert err.result is r and err.uncovered_slots == ((0, 9), (20, 20))


def test_options_validate() -> None:
    assert InvalidatorOptions().with_overrides(scan_count=10).scan_count == 10
    with pytest.raises(ValueError, match="unknown option"):
        InvalidatorOptions().with_overrides(scancount=1)
    with pytest.raises(ValueError, match="scan_count must be a whole number from 1"):
        InvalidatorOptions(scan_count=0)
    with pytest.raises(ValueError, match="timeout_s must be a finite number > 0"):
        InvalidatorOptions(timeout_s=-1)
