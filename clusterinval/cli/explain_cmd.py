"""``clusterinval explain``: what an invalidation would cost, pattern by pattern, before it runs."""

from __future__ import annotations

from rich.table import Table

from clusterinval import ClusterInvalidator, Explanation
from clusterinval.cli.checks import check_invalidation, check_url
from clusterinval.cli.invalidate_cmd import (
    AllowAllOpt,
    JsonOpt,
    KeyOpt,
    PatternOpt,
    UrlOpt,
    resolve_url,
)
from clusterinval.cli.output import (
    EXIT_BAD_INPUT,
    fail,
    out_console,
    print_json,
    print_table,
    run_on_cluster,
)
from clusterinval.errors import InvalidInputError

__all__ = ["explain"]

_WHAT = {
    "exact": "names one key: one UNLINK",
    "one-slot": "one slot on one node (hash tag)",
    "prefix-walk": "walks every slot of every primary",
    "full-scan": "SCANs every primary",
    "covered": "served by a broader pattern of the same call",
}


def explain(
    url: UrlOpt = None,
    pattern: PatternOpt = None,
    key: KeyOpt = None,
    json_out: JsonOpt = False,
    allow_match_all: AllowAllOpt = False,
) -> None:
    """Say what invalidating these keys and patterns would cost; nothing is deleted."""
    try:
        check_invalidation(key or [], pattern or [], "cache", allow_match_all=allow_match_all)
        target = resolve_url(url, as_json=json_out)
        check_url(target)
    except InvalidInputError as exc:
        fail(str(exc), EXIT_BAD_INPUT, as_json=json_out)
    found = run_on_cluster(_explain, target, key, pattern, allow_match_all, as_json=json_out)
    if json_out:
        print_json(found.to_dict())
        return
    table = Table("pattern", "cost", "keys read", "one-slot layout", title_justify="left")
    for p in found.patterns:
        table.add_row(p.pattern, _WHAT[p.cost], f"{p.keys_to_read:,}", p.suggestion or "")
    print_table(table)
    if found.keys:
        out_console.print(f"{found.keys} exact keys on {found.key_nodes} primaries: one round "
                          "trip each")
    out_console.print(f"the cluster holds {found.cluster_keys:,} keys")


async def _explain(url: str, keys: list[str] | None, patterns: list[str] | None,
                   allow_match_all: bool) -> Explanation:
    async with ClusterInvalidator.from_url(url) as inv:
        return await inv.explain(keys or None, patterns or None,
                                 allow_match_all=allow_match_all)
