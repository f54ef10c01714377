"""The tag index on a real node: short scripts on the keys of one tag (one slot), and SSCAN.

The scripts carry no flags, so they run on Redis 6.2 as on 7.x and Valkey; each touches the keys
it declares, all in the tag's slot. Each does a bounded amount of work: the set is renamed, not
copied; members come back inline only for a small set; larger sets are read with SSCAN steps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from clusterinval._core.values import TagTake
from clusterinval._io.resp import Exchange, begin, call, pack, send_many

__all__ = ["INDEX_SCRIPT_SHAS", "RedisTagStore"]

# KEYS[1] set; ARGV[1] TTL in ms (-1: the set must not expire); ARGV[2..] members. The set's TTL
# follows its longest-lived member: it only ever grows, and a member that never expires makes the
# set permanent. (PTTL, not EXPIRE ... GT: the GT flag is 7.0+.)
_ADD = b"""
local existed = redis.call('EXISTS', KEYS[1])
local added = redis.call('SADD', KEYS[1], unpack(ARGV, 2))
local ttl = tonumber(ARGV[1])
if ttl < 0 then
  redis.call('PERSIST', KEYS[1])
else
  local current = redis.call('PTTL', KEYS[1])
  if existed == 0 or (current >= 0 and current < ttl) then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
end
return added
"""

# KEYS[1] set, KEYS[2] takes, KEYS[3] taken; ARGV[1] keep (ms), ARGV[2] inline limit. RENAME is
# O(1): a key tagged after this call goes into a new set and is not part of this run.
_TAKE = b"""
local leftovers = redis.call('SMEMBERS', KEYS[2])
local n = 0
local members = false
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RENAME', KEYS[1], KEYS[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
  redis.call('SADD', KEYS[2], KEYS[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
  n = redis.call('SCARD', KEYS[3])
  if n <= tonumber(ARGV[2]) then members = redis.call('SMEMBERS', KEYS[3]) end
end
return {n, members, leftovers}
"""

# KEYS[1] takes, KEYS[2] taken. UNLINK frees a large set off the main thread.
_DONE = b"""
redis.call('UNLINK', KEYS[2])
redis.call('SREM', KEYS[1], KEYS[2])
return 1
"""


class _Script:
    """One script, run by SHA and loaded again when the node forgot it."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.sha = hashlib.sha1(body).hexdigest().encode()  # the name Redis gives the script

    async def run(self, client: Redis, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        try:
            return await call(client, b"EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await call(client, b"EVAL", self.body, len(keys), *keys, *args)


_SCRIPT_ADD, _SCRIPT_TAKE, _SCRIPT_DONE = _Script(_ADD), _Script(_TAKE), _Script(_DONE)
# The scripts an invalidation by tag runs on the tag's own node (for SLOWLOG readers).
INDEX_SCRIPT_SHAS = frozenset({_SCRIPT_TAKE.sha, _SCRIPT_DONE.sha})


def _take(reply: Any, taken_key: bytes) -> TagTake:
    """The take script's reply: (count, members or false, the takes registered)."""
    members = reply[1]
    return TagTake(int(reply[0]), list(members) if isinstance(members, list) else None,
                   [k for k in reply[2] if k != taken_key])


class _TakesInFlight:
    """The scripts of one ``take_many``, sent; their replies come with ``results()``."""

    def __init__(self, client: Redis, exchange: Exchange,
                 calls: list[tuple[_Script, Sequence[bytes]]],
                 takes: Sequence[tuple[bytes, bytes, bytes]], finished: int) -> None:
        self._client = client
        self._exchange = exchange
        self._calls = calls
        self._takes = takes
        self._finished = finished

    async def results(self) -> list[TagTake | BaseException]:
        """Per take, its result or the error it met."""
        replies = await self._exchange.replies()
        calls = self._calls
        again = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if again:  # the node forgot the scripts (restart, SCRIPT FLUSH): sent whole once more
            redo = await send_many(self._client, [pack(b"EVAL", calls[i][0].body, *calls[i][1])
                                                  for i in again])
            for i, reply in zip(again, redo, strict=True):
                replies[i] = reply
        out: list[TagTake | BaseException] = []
        for (_set_key, _takes_key, taken_key), reply in zip(
                self._takes, replies[self._finished:], strict=True):
            out.append(reply if isinstance(reply, BaseException) else _take(reply, taken_key))
        return out

    async def abandon(self) -> None:
        """Give the connection back unread (see ``Exchange.abandon``)."""
        await self._exchange.abandon()


class RedisTagStore:
    """A node's side of the tag index, through one node client."""

    def __init__(self, client: Redis) -> None:
        self._client = client

    async def add(self, set_key: bytes, members: Sequence[bytes], ttl_ms: int | None) -> int:
        """SADD with the set's TTL raised to ``ttl_ms`` (None: never expires)."""
        ttl = -1 if ttl_ms is None else max(int(ttl_ms), 1)
        return int(await _SCRIPT_ADD.run(self._client, [set_key], [b"%d" % ttl, *members]))

    async def take(self, set_key: bytes, takes_key: bytes, taken_key: bytes, *, keep_ms: int,
                   inline: int) -> TagTake:
        """Move the set aside atomically; members inline for a small set."""
        reply = await _SCRIPT_TAKE.run(self._client, [set_key, takes_key, taken_key],
                                       [b"%d" % keep_ms, b"%d" % inline])
        return _take(reply, taken_key)

    async def done(self, takes_key: bytes, taken_key: bytes) -> None:
        """Drop a finished taken set and its registration."""
        await _SCRIPT_DONE.run(self._client, [takes_key, taken_key], [])

    async def take_many(self, takes: Sequence[tuple[bytes, bytes, bytes]],
                        finished: Sequence[tuple[bytes, bytes]], *, keep_ms: int, inline: int
                        ) -> list[TagTake | BaseException]:
        """Drop ``finished`` sets, then take each of ``takes``: one pipelined exchange."""
        pending = await self.begin_take_many(takes, finished, keep_ms=keep_ms, inline=inline)
        return await pending.results()

    async def begin_take_many(self, takes: Sequence[tuple[bytes, bytes, bytes]],
                              finished: Sequence[tuple[bytes, bytes]], *, keep_ms: int,
                              inline: int) -> _TakesInFlight:
        """Send ``take_many``'s scripts; the results are read by ``results()``."""
        keep, limit = b"%d" % keep_ms, b"%d" % inline
        calls: list[tuple[_Script, Sequence[bytes]]] = [
            (_SCRIPT_DONE, (b"2", takes_key, taken_key)) for takes_key, taken_key in finished]
        calls += [(_SCRIPT_TAKE, (b"3", set_key, takes_key, taken_key, keep, limit))
                  for set_key, takes_key, taken_key in takes]
        exchange = await begin(self._client, [pack(b"EVALSHA", script.sha, *args)
                                              for script, args in calls])
        return _TakesInFlight(self._client, exchange, calls, takes, len(finished))

    async def scan(self, key: bytes, cursor: int, count: int) -> tuple[int, list[bytes]]:
        """One SSCAN step."""
        next_cursor, members = await call(self._client, b"SSCAN", key, cursor, b"COUNT", count)
        return int(next_cursor), list(members)

    async def restore(self, set_key: bytes, members: Sequence[bytes]) -> int:
        """SADD members back."""
        return int(await call(self._client, b"SADD", set_key, *members))

    async def remove(self, set_key: bytes, members: Sequence[bytes]) -> int:
        """SREM members."""
        return int(await call(self._client, b"SREM", set_key, *members))
