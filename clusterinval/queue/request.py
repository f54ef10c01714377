"""A queued invalidation request: validated like ``invalidate()``, encoded for a stream entry."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from clusterinval._core.planning import make_plan, validate_operation_name
from clusterinval._core.tags import validate_tags
from clusterinval.errors import InvalidInputError, QueueError

__all__ = ["FORMAT_VERSION", "QueueRequest", "RequestDecodeError", "decode", "encode",
           "new_request"]

FORMAT_VERSION: Final = "1"

# Field names of a stream entry (and of a dead letter, which adds its own).
F_ID: Final = b"id"
F_OP: Final = b"op"
F_AT: Final = b"at"
F_BODY: Final = b"body"
F_VERSION: Final = b"v"


class RequestDecodeError(QueueError):
    """Raised for a stream entry or spool row that is not a request this version understands."""


@dataclass(frozen=True)
class QueueRequest:
    """One invalidation waiting to be applied: what to delete, under which operation name."""

    id: str
    keys: tuple[bytes, ...]
    patterns: tuple[bytes, ...]
    operation: str
    submitted_at: float
    allow_match_all: bool = False
    tags: tuple[bytes, ...] = ()

    def age_s(self, now: float | None = None) -> float:
        """Seconds since the request was submitted."""
        return max(0.0, (time.time() if now is None else now) - self.submitted_at)


def new_request(
    keys: Iterable[str | bytes] | None,
    patterns: Iterable[str | bytes] | None,
    operation_name: str,
    *,
    allow_match_all: bool = False,
    max_keys: int = 1_000_000,
    tags: Iterable[str | bytes] | None = None,
) -> QueueRequest:
    """A request with a fresh id, validated exactly as ``invalidate()`` validates its arguments."""
    validate_operation_name(operation_name)
    tag_names = validate_tags(tags)
    plan = make_plan(keys, patterns, allow_match_all=allow_match_all, max_keys=max_keys,
                     allow_empty=bool(tag_names))
    # plan.keys leaves out keys that are also literal patterns; the patterns keep them, so the
    # stored request deletes exactly what the call would have.
    return QueueRequest(
        id=uuid.uuid4().hex,
        keys=plan.keys,
        patterns=plan.patterns,
        operation=operation_name,
        submitted_at=time.time(),
        allow_match_all=allow_match_all,
        tags=tag_names,
    )


def _text(value: bytes) -> Any:
    # Keys are bytes: plain UTF-8 stays readable in the stream, anything else travels as base64.
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode("ascii")}


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and isinstance(value.get("b64"), str):
        return base64.b64decode(value["b64"])
    raise RequestDecodeError(f"not a key: {value!r:.80}")


def encode(request: QueueRequest) -> dict[bytes, bytes]:
    """The stream entry fields of ``request``."""
    body = {"k": [_text(k) for k in request.keys], "p": [_text(p) for p in request.patterns]}
    if request.allow_match_all:
        body["a"] = True  # type: ignore[assignment]
    if request.tags:
        body["t"] = [_text(t) for t in request.tags]
    return {
        F_VERSION: FORMAT_VERSION.encode(),
        F_ID: request.id.encode(),
        F_OP: request.operation.encode(),
        F_AT: repr(request.submitted_at).encode(),
        F_BODY: json.dumps(body, separators=(",", ":")).encode(),
    }


def decode(fields: Mapping[Any, Any]) -> QueueRequest:
    """The request held by a stream entry's ``fields``; RequestDecodeError when malformed."""
    got = {(k.encode() if isinstance(k, str) else bytes(k)):
           (v.encode() if isinstance(v, str) else bytes(v)) for k, v in fields.items()}
    try:
        if got.get(F_VERSION, b"") != FORMAT_VERSION.encode():
            raise RequestDecodeError(f"unknown request format {got.get(F_VERSION)!r}")
        body = json.loads(got[F_BODY])
        request = QueueRequest(
            id=got[F_ID].decode(),
            keys=tuple(_bytes(k) for k in body.get("k", [])),
            patterns=tuple(_bytes(p) for p in body.get("p", [])),
            operation=validate_operation_name(got[F_OP].decode()),
            submitted_at=float(got[F_AT]),
            allow_match_all=bool(body.get("a", False)),
            tags=validate_tags([_bytes(t) for t in body.get("t", [])]),
        )
    except RequestDecodeError:
        raise
    except (KeyError, ValueError, TypeError, AttributeError, InvalidInputError) as exc:
        raise RequestDecodeError(f"malformed request entry: {type(exc).__name__}: {exc}") from None
    if not request.id or not (request.keys or request.patterns or request.tags):
        raise RequestDecodeError("malformed request entry: no id, or nothing to invalidate")
    return request
