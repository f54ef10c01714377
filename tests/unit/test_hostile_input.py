"""Hostile input, fuzzed: make_plan / compile_pattern / keys / operation names either give a valid
plan or raise an InvalidInputError subclass with a message — never anything else."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from clusterinval._core.glob import MAX_PATTERN_BYTES, MAX_STARS, compile_pattern, redis_glob_match
from clusterinval._core.planning import Plan, make_plan, to_bytes_key, validate_operation_name
from clusterinval._core.slots import key_slot
from clusterinval.errors import (
    InvalidInputError,
    InvalidKeyError,
    InvalidOperationNameError,
    InvalidPatternError,
)

# Bytes that mean something to a glob, a hash tag or a terminal, and a few plain ones.
GLOB_ALPHABET = b"ab:*?[]^-\\{}\x00\xff\n "
globby = st.binary(max_size=24).map(
    lambda b: bytes(GLOB_ALPHABET[x % len(GLOB_ALPHABET)] for x in b))
glob_text = st.text(alphabet="ab:*?[]^-\\{}é\x00 ", max_size=24)
hostile_objects = st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(),
    st.lists(st.text(max_size=3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers()),
    st.just(object()), st.just(b""), st.just(""), st.tuples(st.text(max_size=2)),
)
any_key = st.one_of(st.text(max_size=40), st.binary(max_size=40), globby, hostile_objects)
any_pattern = st.one_of(globby, glob_text, st.binary(max_size=40), st.text(max_size=40),
                        hostile_objects)
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def plan_or_invalid(keys: Any, patterns: Any, allow_match_all: bool = False) -> Plan | None:
    """make_plan's answer, or None when it refused with an InvalidInputError (with a message)."""
    try:
        return make_plan(keys, patterns, allow_match_all=allow_match_all)
    except InvalidInputError as exc:
        assert str(exc), "an input error must say what to fix"
        return None


def wanted(key: bytes, keys: list[bytes], patterns: list[bytes]) -> bool:
    """Whether Redis semantics say ``key`` must go: named, or matched by a pattern."""
    return key in keys or any(redis_glob_match(p, key) for p in patterns)


def planned(plan: Plan, key: bytes) -> bool:
    """Whether running ``plan`` would delete ``key``."""
    if key in plan.keys or key in plan.literal_origins:
        return True
    slot = key_slot(key)
    return any(
        slot in p.slots and redis_glob_match(p.match, key) and any(g.match(key) for g in p.globs)
        for p in plan.passes
    )


def check_valid(plan: Plan, n_patterns: int) -> None:
    assert len(plan.patterns) == n_patterns
    assert all(isinstance(k, bytes) and k for k in plan.keys)
    assert len(set(plan.keys)) == len(plan.keys)
    for p in plan.passes:
        assert p.globs and isinstance(p.match, bytes) and p.match
        assert len(p.origins) == len(p.globs)
        assert all(0 <= o < n_patterns for o in p.origins)
        assert len(p.slots) > 0


@SETTINGS
@given(keys=st.one_of(st.none(), st.lists(any_key, max_size=6), hostile_objects, st.text()),
       patterns=st.one_of(st.none(), st.lists(any_pattern, max_size=4), hostile_objects,
                          st.binary()),
       allow_match_all=st.booleans())
def test_make_plan_gives_a_plan_or_an_input_error(keys: Any, patterns: Any,
                                                  allow_match_all: bool) -> None:
    plan = plan_or_invalid(keys, patterns, allow_match_all)
    if plan is not None:
        check_valid(plan, len(list(patterns or [])))


@SETTINGS
@given(patterns=st.lists(globby, min_size=1, max_size=3),
       keys=st.lists(st.binary(min_size=1, max_size=6), max_size=3),
       probes=st.lists(globby.filter(bool), min_size=1, max_size=12))
def test_a_plan_deletes_exactly_what_redis_would(patterns: list[bytes], keys: list[bytes],
                                                 probes: list[bytes]) -> None:
    plan = plan_or_invalid(keys, patterns, allow_match_all=True)
    assume(plan is not None)
    assert plan is not None
    for probe in probes + keys:
        assert planned(plan, probe) == wanted(probe, keys, patterns), probe


@SETTINGS
@given(pattern=st.one_of(globby, glob_text, st.binary(max_size=64)))
def test_compile_pattern_compiles_or_says_why(pattern: bytes | str) -> None:
    try:
        glob = compile_pattern(pattern)
    except InvalidPatternError as exc:
        assert str(exc)
        return
    raw = pattern.encode() if isinstance(pattern, str) else pattern
    assert glob.pattern == raw


@SETTINGS
@given(name=st.one_of(st.text(max_size=80), hostile_objects, st.binary(max_size=10)))
def test_operation_names(name: Any) -> None:
    try:
        assert validate_operation_name(name) == name
    except InvalidOperationNameError as exc:
        assert "operation_name" in str(exc)
        return
    assert isinstance(name, str) and 0 < len(name) <= 64


# -- the bad-input table of docs/resilience.md, one case each ----------------------------------

BAD_CALLS: list[tuple[str, dict[str, Any], type[InvalidInputError]]] = [
    ("empty call", {}, InvalidInputError),
    ("empty lists", {"keys": [], "patterns": []}, InvalidInputError),
    ("a str instead of a list", {"keys": "user:1"}, InvalidInputError),
    ("bytes instead of a list", {"patterns": b"user:*"}, InvalidInputError),
    ("a number as keys", {"keys": 5}, InvalidInputError),
    ("None inside keys", {"keys": [None]}, InvalidKeyError),
    ("int key", {"keys": [1]}, InvalidKeyError),
    ("empty key", {"keys": [""]}, InvalidKeyError),
    ("empty bytes key", {"keys": [b""]}, InvalidKeyError),
    ("empty pattern", {"patterns": [""]}, InvalidPatternError),
    ("non-str pattern", {"patterns": [3]}, InvalidPatternError),
    ("match-all *", {"patterns": ["*"]}, InvalidPatternError),
    ("match-all ***", {"patterns": ["***"]}, InvalidPatternError),
    ("unbalanced [", {"patterns": ["user:[12"]}, InvalidPatternError),
    ("range cut by ]", {"patterns": ["a[b-]"]}, InvalidPatternError),
    ("trailing backslash", {"patterns": ["user:\\"]}, InvalidPatternError),
    ("lone surrogate in pattern", {"patterns": ["u\ud800*"]}, InvalidPatternError),
    ("pattern over 4096 bytes", {"patterns": ["a" * (MAX_PATTERN_BYTES + 1) + "*"]},
     InvalidPatternError),
    ("more than 64 stars", {"patterns": ["a" + "*b" * (MAX_STARS + 1)]}, InvalidPatternError),
    ("too many keys", {"keys": [f"k{i}" for i in range(1_000_001)]}, InvalidInputError),
]


@pytest.mark.parametrize(("what", "call", "error"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_calls_are_refused(what: str, call: dict[str, Any],
                               error: type[InvalidInputError]) -> None:
    with pytest.raises(error) as info:
        make_plan(call.get("keys"), call.get("patterns"))
    assert len(str(info.value)) < 400, "the message must stay short (no echo of huge input)"


GOOD_ODD_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("binary non-UTF-8 key", {"keys": [b"\xff\xfe\x00k"]}),
    ("key with NUL and newline", {"keys": ["a\x00b\nc"]}),
    ("key with glob characters", {"keys": ["a*b?[c]"]}),
    ("surrogate-escaped key", {"keys": ["k\udcff"]}),
    ("non-UTF-8 pattern", {"patterns": [b"\xff*"]}),
    ("escaped trailing backslash", {"patterns": ["user:\\\\"]}),
    ("empty set []", {"patterns": ["a[]"]}),
    ("match-all allowed", {"patterns": ["*"], "allow_match_all": True}),
    ("hash-tagged pattern", {"patterns": ["{user:1}:*"]}),
    ("200,000 keys", {"keys": [f"k{i}" for i in range(200_000)]}),
]


@pytest.mark.parametrize(("what", "call"), GOOD_ODD_CALLS, ids=[c[0] for c in GOOD_ODD_CALLS])
def test_odd_but_valid_calls_plan(what: str, call: dict[str, Any]) -> None:
    plan = make_plan(call.get("keys"), call.get("patterns"),
                     allow_match_all=call.get("allow_match_all", False))
    check_valid(plan, len(call.get("patterns") or []))


def test_lone_surrogate_key_is_an_input_error() -> None:
    with pytest.raises(InvalidKeyError):
        to_bytes_key("k\ud800")


HOSTILE_OPERATION_NAMES: list[object] = [
    "", "user cache", "x" * 65, "a\nb", "drop;--", "../etc", "é", "{{user}}", "a\x00",
    "label\"} 1\n# injected", 5, None, b"cache",
]


@pytest.mark.parametrize("name", HOSTILE_OPERATION_NAMES, ids=repr)
def test_hostile_operation_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidOperationNameError):
        validate_operation_name(name)


@pytest.mark.parametrize("name", ["cache", "catalog.v2:list-1", "_x", "a" * 64])
def test_reasonable_operation_names_pass(name: str) -> None:
    assert validate_operation_name(name) == name
