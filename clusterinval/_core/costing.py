"""What each pattern of a call costs, decided from its plan alone (pure): the exact key it names,
the one slot a hash tag fixes, a walk of every slot by prefix, or a full SCAN; and, for the
expensive ones, the hash-tagged key layout that would make them one slot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clusterinval._core.glob import escape
from clusterinval._core.planning import Plan
from clusterinval._core.slots import key_slot

__all__ = ["Cost", "PatternShape", "shapes"]

# exact: names one key; one-slot: a hash tag fixes its slot; prefix-walk: every slot, read by
# prefix server-side; full-scan: a SCAN of every primary; covered: a broader pattern of the same
# call already serves it.
Cost = Literal["exact", "one-slot", "prefix-walk", "full-scan", "covered"]


@dataclass(frozen=True, slots=True)
class PatternShape:
    """How one pattern of a plan is served, and how it could be made cheaper."""

    index: int
    cost: Cost
    slot: int | None
    suggestion: bytes | None  # a one-slot pattern, for keys written under that hash tag


def shapes(plan: Plan) -> list[PatternShape]:
    """The shape of every pattern of ``plan``, in the caller's order."""
    out: dict[int, PatternShape] = {}
    for key, origin in plan.literal_origins.items():
        out.setdefault(origin, PatternShape(origin, "exact", key_slot(key), None))
    for scan_pass in plan.passes:
        walkable = all(g.prefix_only for g in scan_pass.globs)
        for glob, origin in zip(scan_pass.globs, scan_pass.origins, strict=True):
            if scan_pass.single_slot is not None:
                out[origin] = PatternShape(origin, "one-slot", scan_pass.single_slot, None)
            else:
                cost: Cost = "prefix-walk" if walkable else "full-scan"
                out[origin] = PatternShape(origin, cost, None, _one_slot(glob.pattern,
                                                                       glob.literal_prefix))
    return [out.get(i) or PatternShape(i, "covered", None, None)
            for i in range(len(plan.patterns))]


def _one_slot(pattern: bytes, prefix: bytes) -> bytes | None:
    """``user:42:*`` -> ``{user:42}:*``: the entity part of the literal prefix as a hash tag."""
    entity = prefix[: prefix.rfind(b":")] if b":" in prefix else prefix
    if not entity or b"{" in entity or b"}" in entity:
        return None
    written = escape(entity)
    if not pattern.startswith(written):
        return None  # the prefix is spelled with other escapes: no safe rewrite
    # The pattern's rest (after the entity) is kept as written, metacharacters and all.
    return b"{" + written + b"}" + pattern[len(written):]
