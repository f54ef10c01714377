"""Pipelined raw commands on one node: packed here, sent in one write, replies read in order.

redis-py packs each argument in Python and wraps every pipelined command in bookkeeping; for
commands carrying thousands of keys that dominates the client's time. Keys are already ``bytes``,
so packing them is a join. Connections still come from the client's pool (auth, TLS, timeouts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

__all__ = ["pack", "send_many"]

Arg = bytes | int | str


def _arg(a: Arg) -> bytes:
    if isinstance(a, bytes):
        return a
    if isinstance(a, int):
        return str(a).encode()
    return a.encode()


def pack(*args: Arg) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for a in args:
        b = a if type(a) is bytes else _arg(a)
        append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(parts)


async def send_many(client: Redis, commands: Sequence[bytes]) -> list[Any]:
    """Send packed ``commands`` on one connection; each reply, or the ResponseError it was."""
    if not commands:
        return []
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.send_packed_command(b"".join(commands), check_health=False)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:
                # An error reply is fully read; the next reply follows on the same connection.
                replies.append(exc)
        return replies
    except BaseException:
        # Anything else (timeout, cancellation, lost connection) leaves unread replies behind:
        # the connection cannot be reused.
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
