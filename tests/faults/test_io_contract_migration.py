"""The node seam's contract during a slot migration: the same scenarios in memory and on Redis.

Each real run gets its own cluster (the migration changes it for good).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from faultkit import ClusterFactory
from iocontract import MIGRATION_SCENARIOS, Backend, MemoryBackend, RedisBackend

from clusterinval._io.memory import MemoryCluster

pytestmark = pytest.mark.anyio

Scenario = Callable[[Backend], Awaitable[None]]


def _name(scenario: Scenario) -> str:
    return scenario.__name__


class TestMigrationContract:
    @pytest.mark.parametrize("scenario", MIGRATION_SCENARIOS, ids=_name)
    async def test_memory(self, scenario: Scenario) -> None:
        backend = MemoryBackend(MemoryCluster(primaries=3, replicas=0))
        try:
            await scenario(backend)
        finally:
            await backend.aclose()

    @pytest.mark.parametrize("scenario", MIGRATION_SCENARIOS, ids=_name)
    async def test_redis(self, scenario: Scenario, make_cluster: ClusterFactory) -> None:
        cluster = make_cluster(primaries=3, replicas=0)
        backend = RedisBackend(cluster.url)
        try:
            await scenario(backend)
        finally:
            await backend.aclose()
