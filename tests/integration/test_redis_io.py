"""The redis-py side of the node seam, against the real cluster."""

from __future__ import annotations

import pytest
import redis

from clusterinval._core.values import NodeAddr
from clusterinval._io.lua import SCRIPTS
from clusterinval._io.redis_io import RedisClusterIO
from clusterinval.testing.fill import cluster_primaries

pytestmark = pytest.mark.anyio


async def test_every_server_step_loads_where_the_server_has_script_flags(
    cluster_url: str,
) -> None:
    io, _seeds = RedisClusterIO.from_url(cluster_url)
    try:
        for host, port in cluster_primaries(cluster_url):
            with redis.Redis(host=host, port=port) as c:
                major = int(str(c.info("server")["redis_version"]).split(".")[0])
            node = io.node(NodeAddr(host, port))
            for name in SCRIPTS:
                # Script flags (the "#!lua" line) came with 7.0: a step that does not load on
                # such a server is a broken script, not a missing feature.
                assert await node.script_ready(name) == (major >= 7), name
    finally:
        await io.aclose()
