"""Planning: validation, shortcuts (exact, hash tag, subsumed, shared pass)."""

from __future__ import annotations

import pytest

from clusterinval._core.planning import make_plan, to_bytes_key, validate_operation_name
from clusterinval._core.slots import SLOT_COUNT, key_slot
from clusterinval.errors import (
    InvalidInputError,
    InvalidKeyError,
    InvalidOperationNameError,
    InvalidPatternError,
)


class TestShortcuts:
    def test_literal_pattern_is_exact_key(self) -> None:
        plan = make_plan(None, ["user:1:profile"])
        assert plan.passes == () and plan.literal_origins == {b"user:1:profile": 0}

    def test_escaped_metachar_is_still_literal(self) -> None:
        plan = make_plan(None, [r"user:\*"])
        assert plan.literal_origins == {b"user:*": 0}

    def test_hash_tag_fixes_slot(self) -> None:
        plan = make_plan(None, ["{tenant:42}:*"])
        (p,) = plan.passes
        assert p.single_slot == key_slot(b"tenant:42") and len(p.slots) == 1

    def test_subsumed_pattern_dropped(self) -> None:
        plan = make_plan(None, ["user:1:*", "user:*"])
        (p,) = plan.passes
        assert p.match == b"user:*" and p.server_exact

    def test_shared_prefix_one_pass(self) -> None:
        plan = make_plan(None, ["project:7:*", "projects:list:*"])
        (p,) = plan.passes
        assert p.match == b"project*" and not p.server_exact
        assert len(p.globs) == 2 and p.origins == (0, 1) and len(p.slots) == SLOT_COUNT

    def test_unrelated_patterns_separate_passes(self) -> None:
        plan = make_plan(None, ["user:*", "catalog:*"])
        assert sorted(p.match for p in plan.passes) == [b"catalog:*", b"user:*"]

    def test_keys_deduplicated_and_encoded(self) -> None:
        plan = make_plan(["a", b"a", "é"], None)
        assert plan.keys == (b"a", "é".encode())


class TestRefusals:
    @pytest.mark.parametrize(
        ("keys", "patterns", "error"),
        [
            (None, None, InvalidInputError),
            ([], [], InvalidInputError),
            ("abc", None, InvalidInputError),
            (None, "a*", InvalidInputError),
            ([None], None, InvalidKeyError),
            ([b""], None, InvalidKeyError),
            (None, [3], InvalidPatternError),
            (None, ["*"], InvalidPatternError),
            (None, ["a["], InvalidPatternError),
            (5, None, InvalidInputError),
        ],
    )
    def test_refused(self, keys: object, patterns: object, error: type[Exception]) -> None:
        with pytest.raises(error):
            make_plan(keys, patterns)  # type: ignore[arg-type]

    def test_match_all_allowed(self) -> None:
        (p,) = make_plan(None, ["*"], allow_match_all=True).passes
        assert p.match == b"*"

    def test_too_many_keys(self) -> None:
        with pytest.raises(InvalidInputError, match="max_keys_per_call"):
            make_plan([f"k{i}" for i in range(11)], None, max_keys=10)

    @pytest.mark.parametrize("name", ["cache", "user_session", "a.b:c-d", "_x", "A" * 64])
    def test_good_operation_names(self, name: str) -> None:
        assert validate_operation_name(name) == name

    @pytest.mark.parametrize("name", ["", "1abc", "a b", "a/b", "x" * 65, None, "é", "a\n"])
    def test_bad_operation_names(self, name: object) -> None:
        with pytest.raises(InvalidOperationNameError):
            validate_operation_name(name)

    def test_non_utf8_str_key_roundtrips(self) -> None:
        raw = b"\xff\xfe"
        assert to_bytes_key(raw.decode("utf-8", "surrogateescape")) == raw
