"""What a queue holds now: waiting, pending, dead letters, spooled, and the lag."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["QueueStatus"]


@dataclass(frozen=True)
class QueueStatus:
    """A snapshot of one queue; ``oldest_age_s`` is the staleness an alert should watch."""

    stream: str
    waiting: int          # in the stream, not yet delivered to a worker
    pending: int          # delivered to a worker, not yet acknowledged (running or to retry)
    dead_letters: int     # gave up after the maximum attempts; see `queue retry-dead`
    spooled: int          # in this process's local spool, waiting for the stream
    oldest_age_s: float   # age of the oldest unfinished request (0.0 when there is none)
    reachable: bool = True  # False when the stream could not be read (counts then 0)

    @property
    def unfinished(self) -> int:
        """Requests submitted and not yet applied (dead letters excluded)."""
        return self.waiting + self.pending + self.spooled

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return asdict(self)
