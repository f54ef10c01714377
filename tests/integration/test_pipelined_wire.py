"""Pipelined raw commands with a sliding window, against a real redis-server."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Connection, Redis
from redis.exceptions import ResponseError

from clusterinval._io.resp import pack, send_many

pytestmark = pytest.mark.anyio


class LazyCommands:
    """Packs each command when asked, and remembers the order in which they were asked for."""

    def __init__(self, commands: list[bytes]) -> None:
        self.commands = commands
        self.asked: list[int] = []

    def __len__(self) -> int:
        return len(self.commands)

    def __getitem__(self, index: int) -> bytes:
        self.asked.append(index)
        return self.commands[index]


@pytest.mark.parametrize("window", [None, 1, 2, 5, 64])
async def test_every_reply_comes_back_in_order(standalone_url: str, window: int | None) -> None:
    client = Redis.from_url(standalone_url)
    try:
        commands = [pack(b"SET", b"w:%d" % i, b"%d" % i) for i in range(50)]
        commands.insert(20, pack(b"INCR", b"w:notanumber:x", b"extra"))  # an error reply
        commands += [pack(b"GET", b"w:%d" % i) for i in range(50)]
        lazy = LazyCommands(commands)
        replies = await send_many(client, lazy, window=window)
        assert len(replies) == 101 and isinstance(replies[20], ResponseError)
        assert replies[:20] == [b"OK"] * 20 and replies[21:51] == [b"OK"] * 30
        assert replies[51:] == [b"%d" % i for i in range(50)]
        assert lazy.asked == list(range(101))  # each packed once, in order
        # The connection went back to the pool clean: the next command gets its own reply.
        assert await client.ping() is True
    finally:
        await client.aclose()


@pytest.mark.parametrize("window", [1, 2, 3, 8])
async def test_window_bounds_what_is_queued(standalone_url: str, window: int) -> None:
    # Log every command packed and every reply read: the commands packed but not yet answered
    # must never exceed the window, and all must be answered in the end.
    log: list[str] = []

    class LoggingConnection(Connection):
        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            reply = await super().read_response(*args, **kwargs)
            log.append("read")
            return reply

    class Probe(LazyCommands):
        def __getitem__(self, index: int) -> bytes:
            log.append("ask")
            return super().__getitem__(index)

    client = Redis.from_url(standalone_url, connection_class=LoggingConnection)
    try:
        assert await send_many(client, Probe([pack(b"PING")] * 20), window=window) == [b"PONG"] * 20
    finally:
        await client.aclose()
    log = log[log.index("ask"):]  # replies read while connecting are not ours
    in_flight = peak = 0
    for event in log:
        in_flight += 1 if event == "ask" else -1
        peak = max(peak, in_flight)
    assert log.count("ask") == log.count("read") == 20
    assert peak == window
