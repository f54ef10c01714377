"""The local spool: requests the stream could not take, kept in a SQLite file until it can."""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from clusterinval.errors import QueueError
from clusterinval.queue.request import QueueRequest, RequestDecodeError, decode, encode

__all__ = ["Spool", "SpoolError", "SpooledRow"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    submitted_at REAL NOT NULL,
    op TEXT NOT NULL,
    fields BLOB NOT NULL
)
"""


class SpoolError(QueueError):
    """Raised when the spool file cannot be opened, read or written."""


@dataclass(frozen=True)
class SpooledRow:
    """One spooled request, or the reason its row could not be read back."""

    id: str
    request: QueueRequest | None
    error: str | None = None


def _pack(fields: dict[bytes, bytes]) -> bytes:
    # Length-prefixed pairs: the exact bytes of the stream entry, whatever they hold.
    out = bytearray()
    for key, value in fields.items():
        for part in (key, value):
            out += len(part).to_bytes(4, "big") + part
    return bytes(out)


def _unpack(blob: bytes) -> dict[bytes, bytes]:
    parts: list[bytes] = []
    i = 0
    while i < len(blob):
        size = int.from_bytes(blob[i:i + 4], "big")
        parts.append(blob[i + 4:i + 4 + size])
        i += 4 + size
    if len(parts) % 2:
        raise RequestDecodeError("truncated spool row")
    return dict(zip(parts[::2], parts[1::2], strict=True))


class Spool:
    """A SQLite file of requests; safe to share between threads and between processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                if self.path.parent != Path():
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                       check_same_thread=False)
                # WAL lets a reader in one process work beside a writer in another; FULL sync
                # is what "durably stored" means when submit returns.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute(_SCHEMA)
            except (sqlite3.Error, OSError) as exc:
                raise SpoolError(f"cannot open the spool {self.path}: {exc}") from None
            self._conn = conn
        return self._conn

    def _run_put(self, request: QueueRequest) -> None:
        with self._lock:
            try:
                self._db().execute(
                    "INSERT OR IGNORE INTO requests (id, submitted_at, op, fields) "
                    "VALUES (?, ?, ?, ?)",
                    (request.id, request.submitted_at, request.operation,
                     _pack(encode(request))))
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot write to the spool {self.path}: {exc}") from None

    def _run_take(self, limit: int) -> list[SpooledRow]:
        with self._lock:
            try:
                rows = self._db().execute(
                    "SELECT id, fields FROM requests ORDER BY submitted_at, id LIMIT ?",
                    (limit,)).fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read the spool {self.path}: {exc}") from None
        out: list[SpooledRow] = []
        for row_id, blob in rows:
            try:
                out.append(SpooledRow(str(row_id), decode(_unpack(bytes(blob)))))
            except RequestDecodeError as exc:
                out.append(SpooledRow(str(row_id), None, str(exc)))
        return out

    def _run_remove(self, ids: list[str]) -> None:
        with self._lock:
            try:
                self._db().executemany("DELETE FROM requests WHERE id = ?",
                                       [(i,) for i in ids])
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot write to the spool {self.path}: {exc}") from None

    def _run_stats(self) -> tuple[int, float | None]:
        with self._lock:
            try:
                count, oldest = self._db().execute(
                    "SELECT COUNT(*), MIN(submitted_at) FROM requests").fetchone()
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read the spool {self.path}: {exc}") from None
        return int(count), None if oldest is None else float(oldest)

    async def put(self, request: QueueRequest) -> None:
        """Store ``request`` (on disk, synced) until it is moved to the stream."""
        await anyio.to_thread.run_sync(self._run_put, request)

    async def take(self, limit: int = 100) -> list[SpooledRow]:
        """The oldest ``limit`` spooled rows (they stay in the spool until removed)."""
        return await anyio.to_thread.run_sync(self._run_take, limit)

    async def remove(self, ids: list[str]) -> None:
        """Forget the rows with these ids (moved to the stream)."""
        if ids:
            await anyio.to_thread.run_sync(self._run_remove, ids)

    async def stats(self) -> tuple[int, float | None]:
        """How many requests are spooled, and the submit time of the oldest (None when empty)."""
        return await anyio.to_thread.run_sync(self._run_stats)

    def close(self) -> None:
        """Close the file (it is opened again on the next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
