"""Input the library must refuse before any I/O: match-all patterns in disguise, endless
iterators, options of the wrong type or out of range."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from clusterinval import ClusterInvalidator, InvalidInputError, InvalidPatternError
from clusterinval._core.planning import MAX_PATTERNS_PER_CALL, make_plan

# Nothing listens there: every test below must fail before a connection is tried.
_NOWHERE = "redis://127.0.0.1:1"


class TestMatchAllGuard:
    @pytest.mark.parametrize(
        "pattern", ["*", "**", "?*", "*?", "[^]*", "**?**", "?", "???", "*[^]*", "?**?"])
    def test_patterns_without_a_literal_part_are_refused(self, pattern: str) -> None:
        with pytest.raises(InvalidPatternError, match="allow_match_all"):
            make_plan(None, [pattern])

    @pytest.mark.parametrize("pattern", ["?*", "[^]*", "**?**"])
    def test_allowed_explicitly(self, pattern: str) -> None:
        assert make_plan(None, [pattern], allow_match_all=True).passes

    @pytest.mark.parametrize("pattern", ["a*", "*a", "[ab]*", "?a*", "*[^a]*", "[^a]"])
    def test_a_constraint_anywhere_is_not_match_all(self, pattern: str) -> None:
        assert make_plan(None, [pattern]).passes

    @pytest.mark.parametrize("flag", ["no", "yes", 1, 0, None, "True"])
    def test_flag_must_be_a_real_bool(self, flag: Any) -> None:
        with pytest.raises(InvalidInputError, match="allow_match_all must be True or False"):
            make_plan(None, ["*"], allow_match_all=flag)

    @pytest.mark.anyio
    async def test_dry_run_must_be_a_real_bool(self) -> None:
        inv = ClusterInvalidator.from_url(_NOWHERE)
        with pytest.raises(InvalidInputError, match="dry_run must be True or False"):
            await inv.invalidate(keys=["k"], dry_run="no")  # type: ignore[arg-type]


class TestEndlessInput:
    def test_endless_key_iterator_stops_at_the_limit(self) -> None:
        keys = (f"k:{i}" for i in itertools.count())
        with pytest.raises(InvalidInputError, match="max_keys_per_call=1000"):
            make_plan(keys, None, max_keys=1000)

    def test_endless_pattern_iterator_stops_at_the_limit(self) -> None:
        patterns = (f"p:{i}:*" for i in itertools.count())
        with pytest.raises(InvalidInputError, match=f"more than {MAX_PATTERNS_PER_CALL}"):
            make_plan(None, patterns)

    @pytest.mark.anyio
    async def test_through_the_invalidator(self) -> None:
        inv = ClusterInvalidator.from_url(_NOWHERE, max_keys_per_call=10)
        with pytest.raises(InvalidInputError, match="max_keys_per_call=10"):
            await inv.invalidate(keys=(str(i) for i in itertools.count()))

    def test_an_iterator_at_the_limit_is_fine(self) -> None:
        plan = make_plan((str(i) for i in range(1000)), None, max_keys=1000)
        assert len(plan.keys) == 1000


_BAD_OPTIONS: list[tuple[str, Any]] = [
    ("retries", "3"), ("retries", -1), ("retries", 2.5), ("retries", True),
    ("sample_size", None), ("sample_size", -1),
    ("backoff_base_s", "x"), ("backoff_base_s", math.nan), ("backoff_base_s", -0.1),
    ("backoff_cap_s", 0), ("backoff_cap_s", math.inf),
    ("timeout_s", math.nan), ("timeout_s", math.inf), ("timeout_s", 0), ("timeout_s", "5"),
    ("timeout_s", True), ("command_timeout_s", -1), ("connect_timeout_s", math.nan),
    ("keys_per_second", math.nan), ("keys_per_second", 0), ("keys_per_second", "fast"),
    ("node_keys_per_second", math.inf), ("node_keys_per_second", -5),
    ("adaptive_latency_ms", math.nan),
    ("server_scripts", "no"), ("server_scripts", 0), ("scan_on_replicas", "yes"),
    ("publish_events", 1),
    ("scan_count", 10**9), ("scan_count", 0), ("scan_count", 10.0),
    ("server_scan_count", 10**6), ("unlink_batch", 10**6), ("stream_depth", 10**6),
    ("deleters_per_node", 0), ("deleters_per_node", 1000), ("buffer_keys", None),
    ("max_operation_names", 0), ("max_keys_per_call", -1),
]


class TestOptions:
    @pytest.mark.parametrize(("name", "value"), _BAD_OPTIONS,
                             ids=[f"{n}={v!r}" for n, v in _BAD_OPTIONS])
    def test_bad_option_is_an_input_error_naming_it(self, name: str, value: Any) -> None:
        with pytest.raises(InvalidInputError, match=f"option {name} must be"):
            ClusterInvalidator.from_url(_NOWHERE, **{name: value})

    @pytest.mark.parametrize(("name", "value"), [
        ("retries", 0), ("sample_size", 0), ("backoff_base_s", 0), ("timeout_s", 0.001),
        ("keys_per_second", None), ("keys_per_second", 1), ("scan_count", 10_000),
        ("server_scripts", False), ("node_keys_per_second", 2.5),
    ])
    def test_edge_values_are_accepted(self, name: str, value: Any) -> None:
        inv = ClusterInvalidator.from_url(_NOWHERE, **{name: value})
        assert getattr(inv.options, name) == value
