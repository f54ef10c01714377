"""Named invalidation rules: templates, escaping, optional parts, loading from config."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from clusterinval._core.glob import compile_pattern
from clusterinval.errors import InvalidInputError
from clusterinval.rules import BUILTIN_RULES, Rendered, Rule, RuleSet, Templates, render_rule

# An application's own rules, beside the built-in ones.
APP_RULES = BUILTIN_RULES.merged([
    Rule("project", keys=("project:{project_id}",),
         patterns=("project:{project_id}:*", "projects:list:*")),
    Rule("endpoint",
         keys=("endpoint:{endpoint_id}", "endpoint:{endpoint_id}:status",
               "endpoint:{endpoint_id}:metrics"),
         patterns=("endpoint:{endpoint_id}:workers:*",), operation_name="endpoint_update"),
])

class TestBuiltinRules:
    def test_user_matches_the_guide(self) -> None:
        assert render_rule("user", user_id="42") == Rendered(
            ("user:42", "user:42:profile"),
            ("user:42:sessions:*", "user:42:projects:*"),
            "user",
        )

    def test_catalog_without_endpoint_is_the_list_pages_only(self) -> None:
        assert render_rule("catalog") == Rendered((), ("catalog:models:*",), "catalog")

    def test_catalog_with_endpoint_adds_the_detail_key(self) -> None:
        r = render_rule("catalog", endpoint_id="abc-123")
        assert r.keys == ("catalog:model:abc-123",)
        assert r.patterns == ("catalog:models:*",)

    def test_cluster_optional_part(self) -> None:
        assert render_rule("cluster") == Rendered((), ("clusters:list:*",), "cluster")
        r = render_rule("cluster", cluster_id="c1")
        assert r.keys == ("cluster:c1", "cluster:c1:status", "cluster:c1:metrics")
        assert r.patterns == ("clusters:list:*", "cluster:c1:*")

    def test_cluster_none_is_the_same_as_absent(self) -> None:
        assert render_rule("cluster", cluster_id=None) == render_rule("cluster")

    def test_only_the_facade_rules_are_built_in(self) -> None:
        assert set(BUILTIN_RULES) == {"catalog", "user", "cluster"}

    def test_project_and_endpoint(self) -> None:
        assert render_rule("project", APP_RULES, project_id="p9") == Rendered(
            ("project:p9",), ("project:p9:*", "projects:list:*"), "project"
        )
        r = render_rule("endpoint", APP_RULES, endpoint_id="e1")
        assert r.operation_name == "endpoint_update"
        assert r.patterns == ("endpoint:e1:workers:*",)
        assert len(r.keys) == 3

    def test_uuid_and_int_values(self) -> None:
        u = uuid.UUID(int=7)
        assert render_rule("catalog", endpoint_id=u).keys == (f"catalog:model:{u}",)
        assert render_rule("user", user_id=7).keys[0] == "user:7"

    def test_as_kwargs_turns_empty_into_none(self) -> None:
        assert render_rule("catalog").as_kwargs() == {
            "keys": None,
            "patterns": ["catalog:models:*"],
            "operation_name": "catalog",
        }


class TestEscaping:
    def test_glob_chars_in_a_value_cannot_widen_a_pattern(self) -> None:
        r = render_rule("user", user_id="1*")
        assert r.patterns[0] == r"user:1\*:sessions:*"
        glob = compile_pattern(r.patterns[0])
        assert glob.match(b"user:1*:sessions:a")
        assert not glob.match(b"user:10:sessions:a")
        assert not glob.match(b"user:1:sessions:a")

    @pytest.mark.parametrize("value", ["?", "[ab]", "a\\b", "[^x]", "*"])
    def test_every_metacharacter_is_literal(self, value: str) -> None:
        (pattern,) = render_rule("project", APP_RULES, project_id=value).patterns[:1]
        glob = compile_pattern(pattern)
        assert glob.match(f"project:{value}:x".encode())
        assert not glob.match(b"project:a:x")

    def test_keys_are_not_escaped(self) -> None:
        assert render_rule("user", user_id="1*").keys[0] == "user:1*"

    def test_non_ascii_values_survive(self) -> None:
        r = render_rule("user", user_id="zoë*")
        assert r.patterns[0] == "user:zoë\\*:sessions:*"
        assert compile_pattern(r.patterns[0]).match("user:zoë*:sessions:1".encode())


class TestParameters:
    def test_missing_parameter_is_named(self) -> None:
        with pytest.raises(InvalidInputError, match="user_id"):
            render_rule("user")

    def test_unknown_parameter_is_named(self) -> None:
        with pytest.raises(InvalidInputError, match=r"userid.*takes: user_id"):
            render_rule("user", user_id="1", userid="1")

    def test_unknown_rule(self) -> None:
        with pytest.raises(InvalidInputError, match=r"no rule named 'nope'.*catalog"):
            render_rule("nope")

    @pytest.mark.parametrize("bad", ["", True, 1.5, b"x", ["a"]])
    def test_bad_values(self, bad: object) -> None:
        with pytest.raises(InvalidInputError, match="user_id"):
            render_rule("user", user_id=bad)

    def test_rule_object_renders_directly(self) -> None:
        rule = Rule("t", patterns=("t:{x}:*",))
        assert render_rule(rule, x="1").patterns == ("t:1:*",)

    def test_parameters_property(self) -> None:
        assert BUILTIN_RULES["cluster"].parameters == ("cluster_id",)
        assert BUILTIN_RULES["user"].required == frozenset({"user_id"})

    def test_duplicates_are_removed_in_order(self) -> None:
        rule = Rule("d", keys=("a:{x}", "a:{x}"), patterns=("p:{x}:*",))
        assert rule.render(x="1").keys == ("a:1",)


class TestRuleDefinition:
    def test_literal_braces_make_a_hash_tag(self) -> None:
        rule = Rule("tenant", patterns=("{{tenant:{tid}}}:*",))
        assert rule.render(tid="7").patterns == ("{tenant:7}:*",)
        assert compile_pattern("{tenant:7}:*").slot is not None

    def test_positional_fields_are_refused(self) -> None:
        with pytest.raises(InvalidInputError, match="named fields"):
            Rule("bad", keys=("a:{}",))

    def test_format_specs_are_refused(self) -> None:
        with pytest.raises(InvalidInputError, match="format spec"):
            Rule("bad", keys=("a:{x!r}",))

    def test_malformed_template(self) -> None:
        with pytest.raises(InvalidInputError, match="malformed"):
            Rule("bad", keys=("a:{x",))

    def test_empty_rule_is_refused(self) -> None:
        with pytest.raises(InvalidInputError, match="no key or pattern"):
            Rule("empty")

    def test_optional_templates_may_not_use_other_optionals(self) -> None:
        with pytest.raises(InvalidInputError, match="may use only a"):
            Rule("bad", patterns=("x:*",), optional={"a": Templates(keys=("k:{a}:{b}",))})

    def test_required_parameter_cannot_be_optional(self) -> None:
        with pytest.raises(InvalidInputError, match="cannot also be optional"):
            Rule("bad", keys=("k:{a}",), optional={"a": Templates(keys=("j:{a}",))})

    def test_only_optional_and_none_given(self) -> None:
        rule = Rule.from_dict("opt", {"optional": {"a": {"keys": ["k:{a}"]}}})
        assert rule.render(a="1").keys == ("k:1",)
        with pytest.raises(InvalidInputError, match="renders no keys or patterns"):
            rule.render()

    def test_duplicate_names_in_a_set(self) -> None:
        with pytest.raises(InvalidInputError, match="defined twice"):
            RuleSet([Rule("a", keys=("a",)), Rule("a", keys=("b",))])


TOML_RULES = """
[rules.tenant]
keys = ["tenant:{tenant_id}"]
patterns = ["tenant:{tenant_id}:*"]
operation_name = "tenant_update"

[rules.pricing]
patterns = ["pricing:list:*"]

[rules.pricing.optional.endpoint_id]
keys = ["pricing:{endpoint_id}"]
patterns = ["pricing:{endpoint_id}:*"]
"""


class TestLoading:
    def test_from_toml_text(self) -> None:
        rules = RuleSet.from_toml(TOML_RULES)
        assert set(rules) == {"tenant", "pricing"}
        assert rules.render("tenant", tenant_id="t1") == Rendered(
            ("tenant:t1",), ("tenant:t1:*",), "tenant_update"
        )
        assert rules.render("pricing").patterns == ("pricing:list:*",)
        assert rules.render("pricing", endpoint_id="e").keys == ("pricing:e",)

    def test_from_toml_file(self, tmp_path: Path) -> None:
        path = tmp_path / "rules.toml"
        path.write_text(TOML_RULES)
        assert len(RuleSet.from_toml(path)) == 2
        assert len(RuleSet.from_toml(str(path))) == 2

    def test_from_json(self, tmp_path: Path) -> None:
        text = '{"rules": {"a": {"patterns": ["a:{x}:*"]}}}'
        assert RuleSet.from_json(text).render("a", x="1").patterns == ("a:1:*",)
        path = tmp_path / "r.json"
        path.write_text('{"a": {"keys": "a:{x}"}}')
        assert RuleSet.from_json(path).render("a", x="2").keys == ("a:2",)

    def test_long_one_line_text_and_paths_without_suffix(self, tmp_path: Path) -> None:
        long_json = '{"rules": {"a": {"keys": ["' + "k" * 600 + ':{x}"]}}}'
        assert RuleSet.from_json(long_json).render("a", x="1").keys == ("k" * 600 + ":1",)
        path = tmp_path / "rules.conf"
        path.write_text(TOML_RULES)
        assert set(RuleSet.from_toml(str(path))) == {"tenant", "pricing"}

    def test_from_dict_and_render_rule_with_a_plain_mapping(self) -> None:
        rules = RuleSet.from_dict({"a": {"keys": ["a:{x}"]}})
        assert render_rule("a", rules, x="1").keys == ("a:1",)
        assert render_rule("a", dict(rules), x="1").keys == ("a:1",)

    def test_unknown_fields_are_refused(self) -> None:
        with pytest.raises(InvalidInputError, match=r"unknown field.*pattern"):
            RuleSet.from_dict({"a": {"pattern": ["a:*"]}})

    def test_invalid_toml(self) -> None:
        with pytest.raises(InvalidInputError, match="invalid TOML"):
            RuleSet.from_toml("[rules.a\nkeys = 1\n")

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(InvalidInputError, match="cannot read"):
            RuleSet.from_toml(tmp_path / "missing.toml")

    def test_merged_overrides_by_name(self) -> None:
        mine = RuleSet.from_toml(TOML_RULES)
        combined = BUILTIN_RULES.merged(mine)
        assert "tenant" in combined and "catalog" in combined
        override = BUILTIN_RULES.merged([Rule("user", keys=("u:{user_id}",))])
        assert override.render("user", user_id="1").keys == ("u:1",)
