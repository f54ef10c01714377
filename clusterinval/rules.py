"""Named invalidation rules: key and pattern templates kept as data, rendered per call.

A rule replaces a hand-written ``invalidate_user_cache(user_id)`` method::

    Rule("user",
         keys=("user:{user_id}", "user:{user_id}:profile"),
         patterns=("user:{user_id}:sessions:*", "user:{user_id}:projects:*"))

Templates use ``str.format`` named fields (write ``{{`` and ``}}`` for literal braces, as in a
hash tag ``{{tenant:{tenant_id}}}:*``). Values substituted into *patterns* are glob-escaped, so
``user_id="1*"`` deletes the keys of user ``1*`` and never widens the pattern to users ``10``,
``11``... Templates under ``optional`` apply only when their parameter is given.
"""

from __future__ import annotations

import json
import os
import tomllib
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Formatter
from typing import Any, NamedTuple

from clusterinval._core.glob import escape
from clusterinval.errors import InvalidInputError

__all__ = [
    "BUILTIN_RULES",
    "Rendered",
    "Rule",
    "RuleSet",
    "Templates",
    "render_rule",
]

ParamValue = str | int | uuid.UUID

_FORMATTER = Formatter()


class Rendered(NamedTuple):
    """What a rule expands to for one call: exact keys, patterns and the operation name."""

    keys: tuple[str, ...]
    patterns: tuple[str, ...]
    operation_name: str

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``ClusterInvalidator.invalidate`` (empty lists become None)."""
        return {
            "keys": list(self.keys) or None,
            "patterns": list(self.patterns) or None,
            "operation_name": self.operation_name,
        }


def _fields(template: str, where: str) -> tuple[str, ...]:
    """The named fields of ``template``; anything but plain ``{name}`` is refused."""
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise InvalidInputError(f"{where}: malformed template {template!r}: {exc}") from exc
    names: list[str] = []
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if not name.isidentifier():
            raise InvalidInputError(
                f"{where}: template {template!r} has field {{{name}}}; use named fields such as "
                "{user_id} (write {{ and }} for literal braces)"
            )
        if spec or conversion:
            raise InvalidInputError(
                f"{where}: template {template!r} uses a format spec or conversion on {{{name}}}; "
                "only plain {name} fields are supported"
            )
        names.append(name)
    return tuple(names)


def _fill(template: str, values: Mapping[str, str], *, glob: bool) -> str:
    out: list[str] = []
    for literal, name, _spec, _conv in _FORMATTER.parse(template):
        out.append(literal)
        if name is not None:
            value = values[name]
            # escape() only inserts ASCII backslashes, so a UTF-8 round trip is lossless.
            out.append(escape(value.encode()).decode() if glob else value)
    return "".join(out)


def _as_templates(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Iterable):
        raise InvalidInputError(f"{where} must be a list of template strings, got {value!r}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise InvalidInputError(f"{where} must hold non-empty strings, got {item!r}")
    return items


@dataclass(frozen=True, slots=True)
class Templates:
    """Key and pattern templates that apply together."""

    keys: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()

    @classmethod
    def coerce(cls, value: object, where: str) -> Templates:
        """A Templates from an instance or a ``{"keys": [...], "patterns": [...]}`` mapping."""
        if isinstance(value, Templates):
            return value
        if not isinstance(value, Mapping):
            raise InvalidInputError(
                f"{where} must be a mapping with 'keys' and/or 'patterns', got {value!r}"
            )
        unknown = sorted(set(value) - {"keys", "patterns"})
        if unknown:
            raise InvalidInputError(f"{where}: unknown field(s) {', '.join(unknown)}")
        return cls(
            _as_templates(value.get("keys", ()), f"{where}.keys"),
            _as_templates(value.get("patterns", ()), f"{where}.patterns"),
        )

    def fields(self, where: str) -> set[str]:
        """Every field name the templates use."""
        return {n for t in (*self.keys, *self.patterns) for n in _fields(t, where)}


@dataclass(frozen=True, slots=True)
class Rule:
    """A named invalidation: templates always applied, and templates per optional parameter."""

    name: str
    keys: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    operation_name: str | None = None
    optional: Mapping[str, Templates] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        where = f"rule {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise InvalidInputError(f"a rule needs a non-empty name, got {self.name!r}")
        object.__setattr__(self, "keys", _as_templates(self.keys, f"{where} keys"))
        object.__setattr__(self, "patterns", _as_templates(self.patterns, f"{where} patterns"))
        if not isinstance(self.optional, Mapping):
            raise InvalidInputError(f"{where}: optional must map a parameter to templates")
        optional = {
            str(param): Templates.coerce(t, f"{where} optional.{param}")
            for param, t in self.optional.items()
        }
        object.__setattr__(self, "optional", optional)
        if not (self.keys or self.patterns or optional):
            raise InvalidInputError(f"{where} has no key or pattern templates")
        required = self.required
        for param, templates in optional.items():
            if not param.isidentifier():
                raise InvalidInputError(f"{where}: optional parameter {param!r} is not a name")
            if param in required:
                raise InvalidInputError(
                    f"{where}: {param!r} is used by the always-applied templates, so it cannot "
                    "also be optional"
                )
            stray = templates.fields(where) - required - {param}
            if stray:
                raise InvalidInputError(
                    f"{where}: templates under optional.{param} use {', '.join(sorted(stray))}; "
                    f"they may use only {param} and the rule's required parameters"
                )

    @property
    def required(self) -> frozenset[str]:
        """Parameters every call must give."""
        return frozenset(Templates(self.keys, self.patterns).fields(f"rule {self.name!r}"))

    @property
    def parameters(self) -> tuple[str, ...]:
        """Every parameter the rule accepts, required first."""
        return (*sorted(self.required), *sorted(set(self.optional) - self.required))

    def render(self, **params: Any) -> Rendered:
        """Fill the templates with ``params``; raise InvalidInputError naming what is wrong."""
        where = f"rule {self.name!r}"
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise InvalidInputError(
                f"{where} got unknown parameter(s) {', '.join(unknown)}; "
                f"it takes: {', '.join(self.parameters) or 'none'}"
            )
        given = {k: v for k, v in params.items() if v is not None}
        missing = sorted(self.required - set(given))
        if missing:
            raise InvalidInputError(f"{where} needs parameter(s) {', '.join(missing)}")
        values = {name: _param_text(name, value, where) for name, value in given.items()}
        keys = [_fill(t, values, glob=False) for t in self.keys]
        patterns = [_fill(t, values, glob=True) for t in self.patterns]
        for param, templates in self.optional.items():
            if param in values:
                keys += [_fill(t, values, glob=False) for t in templates.keys]
                patterns += [_fill(t, values, glob=True) for t in templates.patterns]
        if not keys and not patterns:
            raise InvalidInputError(
                f"{where} renders no keys or patterns without one of: "
                f"{', '.join(sorted(self.optional))}"
            )
        return Rendered(
            tuple(dict.fromkeys(keys)),
            tuple(dict.fromkeys(patterns)),
            self.operation_name or self.name,
        )

    @classmethod
    def from_dict(cls, name: str, spec: Mapping[str, Any]) -> Rule:
        """A rule from config data: ``keys``, ``patterns``, ``operation_name``, ``optional``."""
        if not isinstance(spec, Mapping):
            raise InvalidInputError(f"rule {name!r} must be a table/mapping, got {spec!r}")
        known = {"keys", "patterns", "operation_name", "optional", "description"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise InvalidInputError(
                f"rule {name!r}: unknown field(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        op = spec.get("operation_name")
        if op is not None and not isinstance(op, str):
            raise InvalidInputError(f"rule {name!r}: operation_name must be a string")
        return cls(
            name=name,
            keys=_as_templates(spec.get("keys", ()), f"rule {name!r} keys"),
            patterns=_as_templates(spec.get("patterns", ()), f"rule {name!r} patterns"),
            operation_name=op,
            optional=spec.get("optional", {}),
            description=str(spec.get("description", "")),
        )


def _param_text(name: str, value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | uuid.UUID):
        raise InvalidInputError(
            f"{where}: parameter {name} must be a str, int or UUID, got {type(value).__name__}"
        )
    text = str(value)
    if not text:
        raise InvalidInputError(f"{where}: parameter {name} is empty")
    return text


class RuleSet(Mapping[str, Rule]):
    """Rules by name, loadable from a dict, TOML or JSON."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self._rules: dict[str, Rule] = {}
        for rule in rules:
            if not isinstance(rule, Rule):
                raise InvalidInputError(f"a RuleSet holds Rule objects, got {rule!r}")
            if rule.name in self._rules:
                raise InvalidInputError(f"rule {rule.name!r} is defined twice")
            self._rules[rule.name] = rule

    def __getitem__(self, name: str) -> Rule:
        return self._rules[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, name: object) -> bool:
        return name in self._rules

    def __repr__(self) -> str:
        return f"RuleSet({sorted(self._rules)})"

    def render(self, name: str, /, **params: Any) -> Rendered:
        """Render the rule called ``name`` with ``params``."""
        return _lookup(self, name).render(**params)

    def merged(self, other: Iterable[Rule] | Mapping[str, Rule]) -> RuleSet:
        """A new set with ``other``'s rules added, replacing same-named ones."""
        extra = other.values() if isinstance(other, Mapping) else other
        combined = dict(self._rules)
        combined.update({r.name: r for r in extra})
        return RuleSet(combined.values())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleSet:
        """Rules from ``{name: {keys, patterns, operation_name, ...}}`` or ``{"rules": ...}``."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"rules must be a mapping of name -> rule, got {data!r}")
        table = data.get("rules", data) if set(data) == {"rules"} else data
        if not isinstance(table, Mapping):
            raise InvalidInputError("the 'rules' table must map a name to a rule")
        return cls(Rule.from_dict(str(name), spec) for name, spec in table.items())

    @classmethod
    def from_toml(cls, source: str | os.PathLike[str]) -> RuleSet:
        """Rules from a TOML file path or TOML text (a ``[rules.<name>]`` table per rule)."""
        text = _read(source, ".toml")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInputError(f"invalid TOML rules: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> RuleSet:
        """Rules from a JSON file path or JSON text (rules by name, or ``{"rules": {...}}``)."""
        text = _read(source, ".json")
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidInputError(f"invalid JSON rules: {exc}") from exc
        return cls.from_dict(data)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte: not a file name
        return False


def _read(source: str | os.PathLike[str], suffix: str) -> str:
    # One line that names a file (or ends like one) is a path; anything else is the text itself.
    if isinstance(source, os.PathLike) or (
        "\n" not in source and (source.endswith(suffix) or _is_file(source))
    ):
        try:
            return Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError(f"cannot read rules file {os.fspath(source)!r}: {exc}") from exc
    return source


# The rules behind the compatible facade's methods (invalidate_catalog_cache, _user_cache,
# _cluster_cache); an application's own rules are a RuleSet of its own (see the guide).
BUILTIN_RULES = RuleSet(
    [
        Rule(
            "catalog",
            patterns=("catalog:models:*",),
            optional={"endpoint_id": Templates(keys=("catalog:model:{endpoint_id}",))},
            description="published model catalog: list/search pages, and one model's detail",
        ),
        Rule(
            "user",
            keys=("user:{user_id}", "user:{user_id}:profile"),
            patterns=("user:{user_id}:sessions:*", "user:{user_id}:projects:*"),
            description="one user's record, profile, sessions and project lists",
        ),
        Rule(
            "cluster",
            patterns=("clusters:list:*",),
            optional={
                "cluster_id": Templates(
                    keys=(
                        "cluster:{cluster_id}",
                        "cluster:{cluster_id}:status",
                        "cluster:{cluster_id}:metrics",
                    ),
                    patterns=("cluster:{cluster_id}:*",),
                )
            },
            description="cluster list pages, and one cluster's entries",
        ),
    ]
)


def render_rule(
    rule: str | Rule,
    rules: Mapping[str, Rule] | None = None,
    /,
    **params: Any,
) -> Rendered:
    """Render a rule given by name (looked up in ``rules``, else the built-ins) or as a Rule."""
    if isinstance(rule, Rule):
        return rule.render(**params)
    if not isinstance(rule, str):
        raise InvalidInputError(f"a rule is a name or a Rule, got {rule!r}")
    return _lookup(BUILTIN_RULES if rules is None else rules, rule).render(**params)


def _lookup(rules: Mapping[str, Rule], name: str) -> Rule:
    try:
        return rules[name]
    except KeyError:
        raise InvalidInputError(
            f"no rule named {name!r}; known rules: {', '.join(sorted(rules)) or 'none'}"
        ) from None
