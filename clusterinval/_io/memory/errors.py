"""The error replies of the in-memory nodes, as the instances redis-py makes of a server's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, cast

from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from clusterinval._core.values import NodeAddr

__all__ = [
    "CROSSSLOT",
    "DOWN_STATE",
    "DOWN_UNBOUND",
    "NOSCRIPT",
    "READONLY",
    "UNSTABLE",
    "connection_closed",
    "connection_refused",
    "redis_error",
]

CROSSSLOT: Final = "CROSSSLOT Keys in request don't hash to the same slot"
UNSTABLE: Final = "TRYAGAIN Multiple keys request during rehashing of slot"
DOWN_STATE: Final = "CLUSTERDOWN The cluster is down"
DOWN_UNBOUND: Final = "CLUSTERDOWN Hash slot not served"
READONLY: Final = "READONLY You can't write against a read only replica."
NOSCRIPT: Final = "NOSCRIPT No matching script. Please use EVAL."


def redis_error(text: str) -> ResponseError:
    """The exception redis-py's parser makes of the server error reply ``text``."""
    parse = cast(Callable[[str], ResponseError], BaseParser.parse_error)
    return parse(text)


def connection_refused(addr: NodeAddr) -> RedisConnectionError:
    """The error of a call to a node that is not running (or was never there)."""
    return RedisConnectionError(
        f"Error 111 connecting to {addr.host}:{addr.port}. Connection refused."
    )


def connection_closed(addr: NodeAddr) -> RedisConnectionError:
    """The error of a call whose node stopped while the call was under way."""
    return RedisConnectionError(f"Connection closed by server ({addr.name}).")
