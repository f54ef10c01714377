"""The benchmark's scenarios (S1-S4 plus the guide's multi-pattern project example).

Each scenario knows its keyspace exactly, so a run is verified by two facts: nothing matching
``gone`` survives, and the total key count is exactly what should remain.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from clusterinval._core.slots import key_slot

__all__ = ["Scenario", "scenarios"]

_TENANT_KEYS = 1000


@dataclass(frozen=True, slots=True)
class Scenario:
    """One benchmark case: what to fill, what to invalidate, what must be gone afterwards."""

    name: str
    title: str
    families: tuple[tuple[str, int], ...]  # (prefix, n): keys prefix0 .. prefix{n-1}
    extra_keys: tuple[str, ...]
    patterns: tuple[str, ...]
    exact_prefix: str | None
    exact_count: int
    gone: tuple[str, ...]  # globs that must match no key afterwards
    expected_deleted: int
    floor_prefixes: tuple[str, ...] | None  # None: the floor does not apply
    floor_slot: int | None = None

    @property
    def total(self) -> int:
        """Keys filled."""
        return sum(n for _, n in self.families) + len(self.extra_keys)

    def keys(self) -> Iterator[str]:
        """Every key to fill."""
        yield from self.extra_keys
        for prefix, n in self.families:
            for i in range(n):
                yield f"{prefix}{i}"

    def spec(self) -> dict[str, Any]:
        """The part of a child-process spec that describes the work."""
        return {"patterns": list(self.patterns), "extra_keys": list(self.extra_keys),
                "exact_prefix": self.exact_prefix, "exact_count": self.exact_count,
                "floor_prefixes": list(self.floor_prefixes or ()), "floor_slot": self.floor_slot}


def scenarios(size: int) -> list[Scenario]:
    """S1-S4 and MP for a keyspace of ``size`` keys (the full benchmark uses 1,000,000)."""
    if size < 10_000:
        raise ValueError(f"size must be at least 10000 keys, got {size}")
    tenth = size // 10
    twentieth = size // 20
    tenant = min(_TENANT_KEYS, size // 100)
    return [
        Scenario("S1", f"{size} keys, {tenth} match catalog:models:*",
                 (("catalog:models:", tenth), ("cache:item:", size - tenth)), (),
                 ("catalog:models:*",), None, 0, ("catalog:models:*",), tenth,
                 ("catalog:models:",)),
        Scenario("S2", f"{size} keys, all match cache:*",
                 (("cache:item:", size),), (), ("cache:*",), None, 0, ("cache:*",), size,
                 ("cache:",)),
        Scenario("S3", f"{size} keys, {tenant} match {{tenant:42}}:*",
                 (("{tenant:42}:item:", tenant), ("cache:item:", size - tenant)), (),
                 ("{tenant:42}:*",), None, 0, ("{tenant:42}:*",), tenant,
                 ("{tenant:42}:",), key_slot(b"{tenant:42}")),
        Scenario("S4", f"{size} keys, {tenth} exact keys over all slots",
                 (("s4:gone:", tenth), ("cache:item:", size - tenth)), (), (),
                 "s4:gone:", tenth, ("s4:gone:*",), tenth, None),
        Scenario("MP", f"{size} keys; project:7 + project:7:* + projects:list:* "
                       f"({2 * twentieth + 1} match)",
                 (("project:7:detail:", twentieth), ("projects:list:", twentieth),
                  ("cache:item:", size - 2 * twentieth)), ("project:7",),
                 ("project:7:*", "projects:list:*"), None, 0,
                 ("project:7", "project:7:*", "projects:list:*"), 2 * twentieth + 1,
                 ("project:7", "projects:list:")),
    ]
