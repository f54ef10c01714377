"""Helpers for invalidator tests on the in-memory cluster: quick retries, results in hand."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from clusterinval._invalidator import ClusterInvalidator
from clusterinval._io.memory import MemoryCluster
from clusterinval.errors import InvalidationError
from clusterinval.result import InvalidationResult

# Back-off in milliseconds, a short deadline: faults resolve (or fail) within a test's time.
FAST: dict[str, Any] = {"backoff_base_s": 0.001, "backoff_cap_s": 0.01, "timeout_s": 20.0,
                        "command_timeout_s": 1.0, "retries": 2}


def invalidator(cluster: MemoryCluster, **options: Any) -> ClusterInvalidator:
    """An invalidator on ``cluster`` with the quick settings (``options`` override them)."""
    return ClusterInvalidator._from_io(cluster, cluster.seeds, registry=CollectorRegistry(),
                                       **{**FAST, **options})


async def outcome(inv: ClusterInvalidator, **call: Any) -> InvalidationResult:
    """The call's result, also when it raised InvalidationError (incomplete)."""
    try:
        return await inv.invalidate(**call)
    except InvalidationError as exc:
        return exc.result
