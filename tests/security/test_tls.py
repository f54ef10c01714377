"""TLS: rediss:// with a CA and a client certificate, against a Redis Cluster speaking only TLS."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis
from prometheus_client import CollectorRegistry
from redis.asyncio import RedisCluster
from seckit import Certs, TLSCluster

from clusterinval import ClusterConnectionError, ClusterInvalidator

pytestmark = pytest.mark.anyio


def tls_options(certs: Certs) -> dict[str, Any]:
    return {"ssl_ca_certs": str(certs.ca), "ssl_certfile": str(certs.client_cert),
            "ssl_keyfile": str(certs.client_key)}


def fill(cluster: TLSCluster, keys: list[str]) -> None:
    rc = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0], ssl=True,
                            **tls_options(cluster.certs))
    try:
        rc.mset_nonatomic(dict.fromkeys(keys, "v"))
    finally:
        rc.close()


def all_keys(cluster: TLSCluster) -> set[bytes]:
    out: set[bytes] = set()
    for port in cluster.ports:
        with cluster.client(port) as c:
            out.update(c.scan_iter(count=1000))
    return out


def clear(cluster: TLSCluster) -> None:
    for port in cluster.ports:
        with cluster.client(port) as c:
            c.flushall()


async def test_rediss_url_with_client_certificate(tls_cluster: TLSCluster) -> None:
    clear(tls_cluster)
    doomed = [f"tls:{i}" for i in range(3000)]
    kept = [f"keep:{i}" for i in range(500)]
    fill(tls_cluster, doomed + kept)
    with anyio.fail_after(30):
        async with ClusterInvalidator.from_url(
            tls_cluster.url, registry=CollectorRegistry(), **tls_options(tls_cluster.certs)
        ) as inv:
            result = await inv.invalidate(patterns=["tls:*"], keys=["keep:0"])
    assert result.complete
    assert result.deleted == len(doomed) + 1
    assert len(result.nodes) == 3
    assert all_keys(tls_cluster) == {k.encode() for k in kept[1:]}


async def test_caller_supplied_tls_cluster_client(tls_cluster: TLSCluster) -> None:
    clear(tls_cluster)
    fill(tls_cluster, [f"tls:{i}" for i in range(500)] + ["other"])
    client = RedisCluster(host="127.0.0.1", port=tls_cluster.ports[0], ssl=True,
                          **tls_options(tls_cluster.certs))
    try:
        with anyio.fail_after(30):
            async with ClusterInvalidator(client, registry=CollectorRegistry()) as inv:
                result = await inv.invalidate(patterns=["tls:*"])
    finally:
        await client.aclose()
    assert result.complete and result.deleted == 500
    assert all_keys(tls_cluster) == {b"other"}


async def test_missing_client_certificate_is_a_connection_error(tls_cluster: TLSCluster) -> None:
    with anyio.fail_after(20):
        with pytest.raises(ClusterConnectionError) as info:
            async with ClusterInvalidator.from_url(
                tls_cluster.url, registry=CollectorRegistry(),
                ssl_ca_certs=str(tls_cluster.certs.ca), command_timeout_s=2.0,
            ) as inv:
                await inv.invalidate(patterns=["tls:*"])
    assert "no node of the cluster answered" in str(info.value)


async def test_unknown_ca_is_refused(tls_cluster: TLSCluster, certs: Certs) -> None:
    # The server certificate is checked against a CA that did not sign it: the client's own cert.
    with anyio.fail_after(20):
        with pytest.raises(ClusterConnectionError) as info:
            async with ClusterInvalidator.from_url(
                tls_cluster.url, registry=CollectorRegistry(),
                ssl_ca_certs=str(certs.client_cert), ssl_certfile=str(certs.client_cert),
                ssl_keyfile=str(certs.client_key), command_timeout_s=2.0,
            ) as inv:
                await inv.invalidate(patterns=["tls:*"])
    assert "certificate" in str(info.value).lower()


async def test_plain_redis_url_against_tls_port_fails_cleanly(tls_cluster: TLSCluster) -> None:
    url = tls_cluster.url.replace("rediss://", "redis://")
    with anyio.fail_after(20):
        with pytest.raises(ClusterConnectionError):
            async with ClusterInvalidator.from_url(url, registry=CollectorRegistry(),
                                                   command_timeout_s=1.0) as inv:
                await inv.invalidate(patterns=["tls:*"])


async def test_bench_set_up_client_speaks_tls_with_the_urls_certificates(
        tls_cluster: TLSCluster) -> None:
    from urllib.parse import urlencode

    from clusterinval.loadtest.plainresp import PlainSetter

    clear(tls_cluster)
    keys = [f"tls:{i}" for i in range(20)]
    rc = redis.RedisCluster(host="127.0.0.1", port=tls_cluster.ports[0], ssl=True,
                            **tls_options(tls_cluster.certs))
    try:
        owners = {}
        for key in keys:
            node = rc.get_node_from_key(key)
            owners[key] = (node.host, int(node.port))
    finally:
        rc.close()
    tls_url = f"{tls_cluster.url}?{urlencode(tls_options(tls_cluster.certs))}"
    with anyio.fail_after(20):
        async with PlainSetter(tls_url, owners) as setter:
            await setter.each(b"SET", keys, b"v")
            assert await setter.each(b"EXISTS", keys) == len(keys)
    assert all_keys(tls_cluster) == {k.encode() for k in keys}
