"""Command-line input checks, made before any connection, in the words of the flags."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from urllib.parse import urlsplit

from clusterinval._core.glob import compile_pattern
from clusterinval._core.planning import make_plan, validate_operation_name
from clusterinval._core.tags import validate_tags
from clusterinval.compat import mask_credentials
from clusterinval.errors import InvalidInputError, InvalidPatternError

__all__ = ["CliInputError", "check_invalidation", "check_url", "shown"]

_SCHEMES = ("redis", "rediss")


class CliInputError(InvalidInputError):
    """Raised for command-line input that cannot be run; the message names the flag."""


def shown(value: str) -> str:
    """``value`` as the user would type it in a shell (quoted when needed)."""
    return shlex.quote(value)


def check_url(url: str) -> None:
    """Refuse a URL that is not ``redis://`` or ``rediss://`` with a host and a valid port."""
    safe = shown(mask_credentials(url))
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CliInputError(f"--url {safe} is not a valid URL ({exc})") from None
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise CliInputError(
            f"--url {safe} is not a cluster URL: write redis://host:port "
            "(or rediss://host:port for TLS)"
        )
    if port == 0:
        raise CliInputError(f"--url {safe}: port 0 is not a valid port")


def check_invalidation(
    keys: Sequence[str], patterns: Sequence[str], operation: str, *, allow_match_all: bool,
    tags: Sequence[str] = (),
) -> None:
    """Everything the library would refuse, said with the flags (``--key``, ``--pattern`` ...)."""
    if not keys and not patterns and not tags:
        raise CliInputError(
            "nothing to invalidate: pass --key KEY, --pattern PATTERN and/or --tag TAG "
            "(all repeatable)"
        )
    try:
        validate_tags(tags)
    except InvalidInputError as exc:
        raise CliInputError(f"--tag: {exc}") from None
    try:
        validate_operation_name(operation)
    except InvalidInputError:
        raise CliInputError(
            f"--operation {shown(operation)} is not a valid operation_name: use a short "
            "identifier (letters, digits, _ . : -, starting with a letter or _, at most 64 "
            "characters); put ids in keys and patterns, not in the name"
        ) from None
    for key in keys:
        if not key:
            raise CliInputError("--key '' is empty: Redis keys cannot be empty")
    for pattern in patterns:
        if not pattern:
            raise CliInputError(
                "--pattern '' is empty: pass a glob such as 'prefix:*', or exact keys with --key"
            )
        try:
            glob = compile_pattern(pattern)
        except InvalidPatternError as exc:
            raise CliInputError(f"--pattern {shown(pattern)}: {_problem(exc, pattern)}") from None
        if glob.matches_all and not allow_match_all:
            raise CliInputError(
                f"--pattern {shown(pattern)} matches every key in the cluster; add "
                "--allow-match-all if you really mean to empty it"
            )
    # Whatever else the library checks (limits, encodings), checked here too, before any I/O.
    make_plan(keys, patterns, allow_match_all=allow_match_all, allow_empty=bool(tags))


def _problem(exc: InvalidPatternError, pattern: str) -> str:
    """The library's explanation without its Python rendering of the pattern."""
    message = str(exc)
    for rendered in (repr(pattern), repr(pattern.encode("utf-8", "surrogateescape"))):
        suffix = f" in pattern {rendered}"
        if message.endswith(suffix):
            return message[: -len(suffix)]
    return message
