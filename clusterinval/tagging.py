"""Writing cache entries together with their tags (see docs/tags.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from clusterinval._core.planning import to_bytes_key
from clusterinval.errors import InvalidInputError

if TYPE_CHECKING:
    from clusterinval._engine.tagindex import TagIndex

__all__ = ["TaggedWriter", "Value"]

Value = bytes | str | int | float


class TaggedWriter:
    """Writes entries and indexes them under the writer's tags (``inv.tagged_writer(tags)``).

    Each ``set`` stores the entry, then adds it to every tag's index: one extra round trip,
    and the index never lists an entry before it exists.
    """

    def __init__(self, index: TagIndex, tags: tuple[bytes, ...]) -> None:
        self._index = index
        self._tags = tags
        self.written = 0

    @property
    def tags(self) -> tuple[bytes, ...]:
        """The tags every entry written here is indexed under."""
        return self._tags

    async def set(self, key: str | bytes, value: Value, *, ex: float | None = None,
                  px: int | None = None) -> None:
        """Store ``value`` at ``key`` (expiring after ``ex`` seconds or ``px`` ms) and tag it."""
        await self._write([(to_bytes_key(key), _value(value))], _ttl_ms(ex, px))

    async def set_many(self, entries: Mapping[str, Value] | Mapping[bytes, Value], *,
                       ex: float | None = None, px: int | None = None) -> None:
        """Store several entries (same expiry) and tag them: all SETs, then all index writes."""
        await self._write([(to_bytes_key(k), _value(v)) for k, v in entries.items()],
                          _ttl_ms(ex, px))

    async def _write(self, entries: list[tuple[bytes, bytes]], ttl_ms: int | None) -> None:
        if entries:
            await self._index.write([(k, v, ttl_ms) for k, v in entries], self._tags)
            self.written += len(entries)


def _ttl_ms(ex: float | None, px: int | None) -> int | None:
    if ex is not None and px is not None:
        raise InvalidInputError("pass ex= (seconds) or px= (milliseconds), not both")
    if ex is not None:
        if isinstance(ex, bool) or not isinstance(ex, int | float) or ex <= 0:
            raise InvalidInputError(f"ex must be a positive number of seconds, got {ex!r}")
        return max(int(ex * 1000), 1)
    if px is not None:
        if isinstance(px, bool) or not isinstance(px, int) or px <= 0:
            raise InvalidInputError(f"px must be a positive whole number of ms, got {px!r}")
        return px
    return None


def _value(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(
            f"values must be bytes, str, int or float, got {type(value).__name__}")
    return repr(value).encode()
