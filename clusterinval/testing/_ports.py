"""Free loopback ports for local redis-server processes."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable

__all__ = ["BUS_OFFSET", "PORT_HIGH", "PORT_LOW", "is_port_free", "pick_ports"]

BUS_OFFSET = 10000
"""Redis Cluster listens on its client port plus this for the cluster bus."""

PORT_LOW = 20000
PORT_HIGH = 29999


def is_port_free(host: str, port: int) -> bool:
    """Return True when a TCP listener could bind ``host:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # No SO_REUSEADDR on purpose: a port still in TIME_WAIT is treated as taken,
        # which is stricter than what redis-server itself needs.
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_ports(
    count: int,
    host: str = "127.0.0.1",
    *,
    cluster_bus: bool = True,
    avoid: Iterable[int] = (),
    rng: random.Random | None = None,
) -> list[int]:
    """Return ``count`` free ports in 20000-29999 (and their bus ports when ``cluster_bus``)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    taken = set(avoid)
    span = PORT_HIGH - PORT_LOW + 1
    # A random start keeps concurrent users (parallel test runs, a CLI cluster) apart.
    start = (rng or random.SystemRandom()).randrange(span)
    found: list[int] = []
    for i in range(span):
        port = PORT_LOW + (start + i) % span
        if port in taken or (cluster_bus and port + BUS_OFFSET in taken):
            continue
        if not is_port_free(host, port):
            continue
        if cluster_bus and not is_port_free(host, port + BUS_OFFSET):
            continue
        found.append(port)
        taken.add(port)
        if len(found) == count:
            return found
    raise OSError(f"no {count} free ports in {PORT_LOW}-{PORT_HIGH} on {host}")
