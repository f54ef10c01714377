"""``explain``: what each pattern costs, and the one-slot layout that would make it cheap."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry

from clusterinval import ClusterInvalidator, InvalidPatternError, SyncClusterInvalidator
from clusterinval._core.slots import key_slot
from clusterinval.testing.fill import fill_keys, scan_all_keys

pytestmark = pytest.mark.anyio

PATTERNS = ["user:42:*", "user:42:posts:*", "{tenant:7}:*", "*:draft", "catalog:model:9"]


def _fill(url: str) -> set[bytes]:
    keys = {f"k:{i}".encode() for i in range(2_000)}
    keys |= {f"{{tenant:7}}:{i}".encode() for i in range(30)}
    fill_keys(url, keys)
    return keys


async def test_each_pattern_says_what_it_costs(cluster_url: str) -> None:
    keys = _fill(cluster_url)
    async with ClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry()) as inv:
        found = await inv.explain(keys=["a", "b", "c"], patterns=PATTERNS)
    assert scan_all_keys(cluster_url) == keys, "explain must delete nothing"
    by = {p.pattern: p for p in found.patterns}
    assert [p.pattern for p in found.patterns] == PATTERNS
    assert found.cluster_keys == len(keys)
    assert by["user:42:*"].cost == "prefix-walk"
    assert by["user:42:*"].keys_to_read == len(keys)
    assert by["user:42:*"].suggestion == "{user:42}:*"
    assert by["user:42:posts:*"].cost == "covered"
    tagged = by["{tenant:7}:*"]
    assert (tagged.cost, tagged.slot, tagged.keys_to_read) == (
        "one-slot", key_slot(b"{tenant:7}"), 30)
    assert by["*:draft"].cost == "full-scan" and by["*:draft"].suggestion is None
    assert (by["catalog:model:9"].cost, by["catalog:model:9"].keys_to_read) == ("exact", 1)
    assert found.keys == 3 and 1 <= found.key_nodes <= 3


def test_sync_twin_and_input_checks(cluster_url: str) -> None:
    with SyncClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry()) as inv:
        found = inv.explain(patterns=["user:1:*"])
        assert found.patterns[0].cost == "prefix-walk"
        with pytest.raises(InvalidPatternError, match="allow_match_all"):
            inv.explain(patterns=["?*"])


def test_cli_json(cluster_url: str) -> None:
    _fill(cluster_url)
    done = subprocess.run(
        [sys.executable, "-m", "clusterinval.cli.main", "explain", "--url", cluster_url,
         "--pattern", "user:42:*", "--pattern", "{tenant:7}:*", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [p["cost"] for p in data["patterns"]] == ["prefix-walk", "one-slot"]
    assert data["patterns"][0]["suggestion"] == "{user:42}:*"
    assert data["patterns"][1]["keys_to_read"] == 30


async def test_repeated_full_keyspace_patterns_warn_once_per_shape(
    cluster_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    _fill(cluster_url)
    caplog.set_level("WARNING", logger="clusterinval")
    async with ClusterInvalidator.from_url(cluster_url, registry=CollectorRegistry()) as inv:
        for i in range(8):  # back to back: the cluster reads its keyspace all the time
            await inv.invalidate(patterns=[f"user:{i}:*"], operation_name="user")
            await inv.invalidate(patterns=[f"{{tenant:{i}}}:*"], operation_name="tenant")
    said = [r.getMessage() for r in caplog.records if "whole keyspace" in r.getMessage()]
    assert len(said) == 1 and "'user:#:*'" in said[0]
