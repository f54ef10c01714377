"""Pipelined raw commands on one node: packed here, sent in one write, replies read in order.

redis-py packs each argument in Python and wraps every pipelined command in bookkeeping; for
commands carrying thousands of keys that dominates the client's time. Keys are already ``bytes``,
so packing them is a join. Connections still come from the client's pool (auth, TLS, timeouts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any, Protocol

import anyio
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = [
    "Commands", "Exchange", "begin", "call", "pack", "pack_args", "pack_with", "read_reply",
    "read_settled", "send_many", "write",
]

Arg = bytes | int | str

# How long a cancelled send waits for the replies of commands already on the wire. They were
# sent before the deadline and a healthy node answers in well under a millisecond; a node that
# does not answer in this time is treated as lost (its replies unread, its keys unconfirmed).
_DRAIN_S = 0.25
# Replies are read without a per-read socket timeout: every caller runs under a deadline of its
# own (the command timeout of the call as a whole), and a timer per reply costs more client time
# than parsing the reply does.
_NO_TIMEOUT = math.inf


def _arg(a: Arg) -> bytes:
    if isinstance(a, bytes):
        return a
    if isinstance(a, int):
        return str(a).encode()
    return a.encode()


class _BulkHeads(dict[int, bytes]):
    """``$<length>`` headers by length, made once each (keys repeat a handful of lengths)."""

    def __missing__(self, n: int) -> bytes:
        head = self[n] = b"$%d" % n
        return head


_HEADS = _BulkHeads()


def pack(*args: Arg) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    if len(args) < 24:
        # Short commands (an UNLINK of a few keys): formatting each argument is cheapest.
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if type(a) is bytes else _arg(a)
            parts.append(b"$%d\r\n%b\r\n" % (len(b), b))
        return b"".join(parts)
    items = [a if type(a) is bytes else _arg(a) for a in args]
    # Long ones carry up to hundreds of thousands of keys: headers, keys and separators are put
    # together by C-level maps and one join rather than formatted one key at a time.
    heads = map(_HEADS.__getitem__, map(len, items))
    body = b"\r\n".join(chain.from_iterable(zip(heads, items, strict=True)))
    return b"*%d\r\n%b\r\n" % (len(items), body)


def pack_args(args: Sequence[bytes]) -> bytes:
    """Arguments packed as RESP bulk strings, without the array's header (see ``pack_with``)."""
    if not args:
        return b""
    heads = map(_HEADS.__getitem__, map(len, args))
    return b"\r\n".join(chain.from_iterable(zip(heads, args, strict=True))) + b"\r\n"


def pack_with(tail: bytes, tail_count: int, *args: Arg) -> bytes:
    """One command: ``args``, then ``tail_count`` arguments packed once by ``pack_args``.

    A step called many times with the same long list of arguments (a shared pass's prefixes)
    packs that list once, not once per call.
    """
    head = pack(*args)
    # ``pack`` wrote the array's length for ``args`` alone: the header is written again.
    body = head[head.index(b"\r\n") + 2:]
    return b"*%d\r\n%b%b" % (len(args) + tail_count, body, tail)


class Commands(Protocol):
    """Packed commands by index: a list, or a sequence that packs each one when asked."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> bytes: ...


async def send_many(
    client: Redis, commands: Commands, window: int | None = None,
    on_reply: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """Send packed ``commands`` on one connection; each reply, or the ResponseError it was.

    With a ``window``, at most that many commands are in flight: each reply read lets the next
    command go (a sliding window), so the node is never handed the whole batch at once.
    ``on_reply(index, reply)`` sees each reply as it is read, so what the node confirmed is known
    even when the call is cut short (deadline, lost connection) before all replies are in.
    """
    if not commands:
        return []
    exchange = await begin(client, commands, window, on_reply)
    return await exchange.replies()


async def begin(
    client: Redis, commands: Commands, window: int | None = None,
    on_reply: Callable[[int, Any], None] | None = None,
) -> Exchange:
    """Take a connection and send the first window of ``commands`` (see ``send_many``).

    The replies are read by ``Exchange.replies()``; until then the caller may start exchanges
    with other nodes, so that one task waits for all of them at once.
    """
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    exchange = Exchange(pool, conn, commands, window, on_reply)
    try:
        # Commands are taken by index as the window moves, so a lazily packed sequence is packed
        # while the node works on the ones already sent.
        await write(conn, b"".join([commands[i] for i in range(exchange.sent)]))
    except BaseException:
        # A cut-short write leaves the connection in an unknown state: it is dropped.
        with anyio.CancelScope(shield=True):
            try:
                await conn.disconnect()
            finally:
                await pool.release(conn)
        raise
    return exchange


class Exchange:
    """Commands sent on one pooled connection, whose replies are still to be read."""

    __slots__ = ("_ahead", "_commands", "_conn", "_on_reply", "_pool", "_replies", "_total",
                 "sent")

    def __init__(self, pool: Any, conn: Any, commands: Commands, window: int | None,
                 on_reply: Callable[[int, Any], None] | None) -> None:
        self._pool: Any = pool
        self._conn: Any = conn
        self._commands = commands
        self._total = len(commands)
        self._ahead = self._total if window is None else max(1, window)
        self._on_reply = on_reply
        self._replies: list[Any] = []
        self.sent = min(self._ahead, self._total)

    async def replies(self) -> list[Any]:
        """Every reply, in order (each the value or the ResponseError it was); releases."""
        conn, commands, replies = self._conn, self._commands, self._replies
        total, ahead, on_reply = self._total, self._ahead, self._on_reply
        try:
            read = conn.read_response
            for _ in range(total - len(replies)):
                # Inlined read_reply: this loop sees every reply of a large call.
                try:
                    reply = await read(disconnect_on_error=False, timeout=_NO_TIMEOUT)
                except ResponseError as exc:
                    reply = exc
                if on_reply is not None:
                    on_reply(len(replies), reply)
                replies.append(reply)
                # Refill once half the window is free: one write per half window, not per reply.
                sent = self.sent
                if sent < total and sent - len(replies) <= ahead // 2:
                    top = min(total, len(replies) + ahead)
                    batch = b"".join([commands[i] for i in range(sent, top)])
                    self.sent = top  # counted as sent first: a cut-short write disconnects
                    await write(conn, batch)
        except BaseException as exc:
            await self._give_back(drain=isinstance(exc, anyio.get_cancelled_exc_class()))
            raise
        await self._give_back(drain=False, clean=True)
        return replies

    async def abandon(self) -> None:
        """Stop without reading on: replies already in flight are read briefly (shielded), so
        what the node did is counted, then the connection goes back (dropped if unread)."""
        with anyio.CancelScope(shield=True):
            await self._give_back(drain=True)

    async def _give_back(self, *, drain: bool, clean: bool = False) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return  # given back already
        try:
            # Cancelled (a deadline) or abandoned with commands in flight: the node may already
            # have run them, so their replies are read, briefly and shielded, to count what they
            # did. Anything else (timeout, lost connection), or a drain that cannot finish,
            # leaves unread replies behind: the connection cannot be reused.
            if not clean and drain and self._on_reply is not None:
                clean = await _drain(conn, self.sent - len(self._replies), self._replies,
                                     self._on_reply)
            if not clean:
                await conn.disconnect()
        finally:
            # A pool that can take a clean connection back at once is not awaited (see
            # ``NodePool.release_nowait``).
            release_nowait = getattr(self._pool, "release_nowait", None)
            if not (clean and release_nowait is not None and release_nowait(conn)):
                await self._pool.release(conn)


async def write(conn: Any, data: bytes) -> None:
    """Send packed ``data`` on ``conn`` (connected by the pool), without a timer of its own.

    redis-py runs every write under ``asyncio.wait_for`` when the connection has a socket
    timeout: a task and a loop turn per write. Every caller here runs under its own deadline, and
    a write that fits the socket's buffers never waits, so the bytes go straight to the stream.
    """
    writer = getattr(conn, "_writer", None)
    if writer is None:  # not connected, or not an asyncio stream: redis-py's own path
        await conn.send_packed_command(data, check_health=False)
        return
    try:
        writer.write(data)
        transport = writer.transport
        if transport.get_write_buffer_size() or transport.is_closing():
            # Bytes the socket did not take at once (flow control), or a connection going
            # away: the stream's own wait and checks. A write the socket took whole needs none.
            await writer.drain()
    except OSError as exc:
        await conn.disconnect(nowait=True)
        raise RedisConnectionError(f"Error while writing to the socket: {exc}") from exc
    except BaseException:
        # Cut short mid-write (a deadline): what reached the node is unknown.
        await conn.disconnect(nowait=True)
        raise


async def call(client: Redis, *args: Arg) -> Any:
    """One command on a connection of ``client``'s pool: the raw reply (errors raised).

    The reply is read under the connection's socket timeout, as redis-py reads it; unlike
    ``execute_command`` no response callback, retry wrapper or event runs around it.
    """
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await write(conn, pack(*args))
        reply = await conn.read_response()
    except ResponseError:
        raise  # a whole reply was read: the connection stays usable
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
    return reply


async def read_reply(conn: Any) -> Any:
    """One reply, or the ResponseError it was (fully read: the next reply follows)."""
    try:
        # disconnect_on_error=False: the parser keeps a reply cut short by cancellation, so
        # reading it again resumes where it stopped (see _drain).
        return await conn.read_response(disconnect_on_error=False, timeout=_NO_TIMEOUT)
    except ResponseError as exc:
        return exc


async def read_settled(conn: Any, on_late: Callable[[Any], None]) -> Any:
    """One reply; when cancelled while waiting for it, the reply is still read (briefly,
    shielded) and handed to ``on_late`` before the cancellation goes on: the node ran the
    command, and what it did should be counted."""
    try:
        return await read_reply(conn)
    except anyio.get_cancelled_exc_class():
        await _drain(conn, 1, [], lambda _index, reply: on_late(reply))
        raise


async def _drain(conn: Any, unread: int, replies: list[Any],
                 on_reply: Callable[[int, Any], None]) -> bool:
    """Read ``unread`` replies still in flight; True when all came in time."""
    with anyio.move_on_after(_DRAIN_S, shield=True):
        try:
            for _ in range(unread):
                reply = await read_reply(conn)
                on_reply(len(replies), reply)
                replies.append(reply)
        except Exception:
            return False
        return True
    return False
