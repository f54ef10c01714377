"""The error tree: one root, context carried as attributes.

::

    ClusterInvalError
    ├── InvalidInputError (also ValueError)      bad arguments, raised before any I/O
    │   ├── InvalidPatternError                  empty or malformed glob, match-all refused
    │   ├── InvalidKeyError                      key that is not str/bytes, or empty
    │   └── InvalidOperationNameError            operation_name not a short identifier
    ├── ClusterConnectionError (also ConnectionError)  no node of the cluster answered
    ├── ClusterPermissionError (also PermissionError)  the server refused a command (ACL, auth)
    ├── InvalidationError                        a run ended incomplete; carries .result
    └── QueueError                               the invalidation queue could not do its part
        └── QueueUnavailableError (also ConnectionError)  neither stream nor spool stored it
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clusterinval.result import InvalidationResult

__all__ = [
    "ClusterConnectionError",
    "ClusterInvalError",
    "ClusterPermissionError",
    "InvalidInputError",
    "InvalidKeyError",
    "InvalidOperationNameError",
    "InvalidPatternError",
    "InvalidationError",
    "QueueError",
    "QueueUnavailableError",
]


class ClusterInvalError(Exception):
    """Root of every error clusterinval raises on purpose."""


class InvalidInputError(ClusterInvalError, ValueError):
    """Raised before any I/O when the arguments of a call cannot be honoured."""


class InvalidPatternError(InvalidInputError):
    """Raised for an empty or malformed glob, or a match-all pattern not explicitly allowed."""

    def __init__(self, message: str, pattern: bytes | str | None = None) -> None:
        super().__init__(message)
        self.pattern = pattern


class InvalidKeyError(InvalidInputError):
    """Raised for a key that is not ``str``/``bytes`` or is empty."""


class InvalidOperationNameError(InvalidInputError):
    """Raised for an ``operation_name`` that is not a short identifier."""


class ClusterConnectionError(ClusterInvalError, ConnectionError):
    """Raised when no node of the cluster could be reached (at start or during a refresh).

    ``.result`` holds what the run had done before it stopped (None when no run had started).
    """

    def __init__(self, message: str, nodes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.nodes = nodes
        self.result: InvalidationResult | None = None


class ClusterPermissionError(ClusterInvalError, PermissionError):
    """Raised when the server refuses a command: ACL (NOPERM) or authentication (WRONGPASS).

    ``.result`` holds what the run had done before it stopped (None when no run had started).
    """

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.result: InvalidationResult | None = None


class InvalidationError(ClusterInvalError):
    """Raised when an invalidation ended incomplete; ``.result`` holds what was done."""

    def __init__(self, message: str, result: InvalidationResult) -> None:
        super().__init__(message)
        self.result = result

    @property
    def uncovered_slots(self) -> tuple[tuple[int, int], ...]:
        """Slot ranges (inclusive) that no finished scan covered."""
        return self.result.uncovered_slots


class QueueError(ClusterInvalError):
    """Raised when the invalidation queue (``InvalidationQueue``, its worker) cannot do its part."""


class QueueUnavailableError(QueueError, ConnectionError):
    """Raised by ``submit`` when neither the stream nor the local spool could store the request."""
