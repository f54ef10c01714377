"""The node seam's contract on a stable cluster: the same scenarios in memory and on Redis."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from iocontract import STABLE_SCENARIOS, Backend, MemoryBackend, RedisBackend

from clusterinval._io.memory import MemoryCluster

pytestmark = pytest.mark.anyio

Scenario = Callable[[Backend], Awaitable[None]]


def _name(scenario: Scenario) -> str:
    return scenario.__name__


class TestContract:
    @pytest.mark.parametrize("scenario", STABLE_SCENARIOS, ids=_name)
    async def test_memory(self, scenario: Scenario) -> None:
        backend = MemoryBackend(MemoryCluster(primaries=3, replicas=1))
        try:
            await scenario(backend)
        finally:
            await backend.aclose()

    @pytest.mark.parametrize("scenario", STABLE_SCENARIOS, ids=_name)
    async def test_redis(self, scenario: Scenario, cluster_url: str) -> None:
        backend = RedisBackend(cluster_url)
        try:
            await scenario(backend)
        finally:
            await backend.aclose()
