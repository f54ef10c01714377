"""A drop-in ``RedisService``: the hand-written service's methods, log lines and never-raise.

Switching an existing codebase is one import::

    from clusterinval.compat import RedisService

    await RedisService().invalidate_catalog_cache(endpoint_id=str(endpoint_id))

Where it connects comes from ``url=`` or the ``CLUSTERINVAL_URL`` environment variable. Every
invalidation method logs and returns ``None``; a failure is a WARNING, never an exception, so a
cache problem cannot break the business operation that triggered it.

With ``queue=`` (an ``InvalidationQueue``), or ``CLUSTERINVAL_QUEUE=1`` in the environment, a
failed invalidation is handed to the queue instead of being dropped: the WARNING is followed by
one more saying where the request went (the stream, or the local spool).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio

from clusterinval._invalidator import ClusterInvalidator
from clusterinval.errors import InvalidationError, InvalidInputError
from clusterinval.result import InvalidationResult
from clusterinval.rules import BUILTIN_RULES, Rule, render_rule

if TYPE_CHECKING:
    from clusterinval.queue.client import InvalidationQueue

__all__ = ["DEFAULT_TIMEOUT_S", "ENV_QUEUE", "ENV_URL", "RedisService", "mask_credentials"]

ENV_URL = "CLUSTERINVAL_URL"
# "1" hands failed invalidations to a queue on the service's URL; the _STREAM, _URL and _SPOOL
# variables choose its stream, another Redis for it, and a local spool file.
ENV_QUEUE = "CLUSTERINVAL_QUEUE"
DEFAULT_TIMEOUT_S = 30.0

logger = logging.getLogger("clusterinval.compat")

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:@/\s]*):[^@/\s]*@")
_RULE_METHOD = re.compile(r"^invalidate_(?P<rule>\w+?)_cache$")


class _LoopShare:
    """The invalidators opened by RedisService objects on one event loop, by url and options."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.invalidators: dict[_ShareKey, ClusterInvalidator] = {}


_ShareKey = tuple[str, tuple[tuple[str, str], ...]]
# Weak by loop: a closed, dropped event loop takes its entries with it.
_SHARES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopShare] = (
    weakref.WeakKeyDictionary()
)


def _loop_share() -> _LoopShare:
    loop = asyncio.get_running_loop()
    share = _SHARES.get(loop)
    if share is None:
        share = _SHARES[loop] = _LoopShare()
    return share


class RedisService:
    """The familiar service invalidation API on top of one long-lived ClusterInvalidator.

    Services built with the same url and options on the same event loop share one invalidator,
    opened on the first call: ``RedisService()`` in every request (as hand-made services are
    used) costs no new connections. ``await aclose()`` (or ``async with``) closes it at shutdown.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        invalidator: ClusterInvalidator | None = None,
        rules: Mapping[str, Rule] | None = None,
        queue: InvalidationQueue | None = None,
        **options: Any,
    ) -> None:
        self._url = url or os.environ.get(ENV_URL) or None
        self._queue = queue
        self._own_queue: InvalidationQueue | None = None
        # A request path must not wait minutes for a cache: a shorter deadline than the core's.
        self._options = {"timeout_s": DEFAULT_TIMEOUT_S, **options}
        self._given = invalidator
        self._rules: Mapping[str, Rule] = BUILTIN_RULES if rules is None else rules
        self._secrets = _secrets_of(self._url, options)
        # repr() makes unhashable option values (ssl contexts, registries) usable in the key.
        self._key: _ShareKey = (
            self._url or "", tuple(sorted((k, repr(v)) for k, v in self._options.items()))
        )
        self.last_result: InvalidationResult | None = None

    @property
    def url(self) -> str | None:
        """The URL in use, with any password masked."""
        return None if self._url is None else self._redact(self._url)

    async def __aenter__(self) -> RedisService:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def invalidator(self) -> ClusterInvalidator | None:
        """The invalidator calls on the running event loop use now (None before the first)."""
        if self._given is not None:
            return self._given
        try:
            share = _SHARES.get(asyncio.get_running_loop())
        except RuntimeError:
            return None
        return None if share is None else share.invalidators.get(self._key)

    async def aclose(self) -> None:
        """Close the shared invalidator of this url and options (one passed in is left alone).

        Services sharing it open a new one on their next call.
        """
        own, self._own_queue = self._own_queue, None
        if own is not None:
            await own.aclose()
        if self._given is not None:
            return
        share = _SHARES.get(asyncio.get_running_loop())
        inv = None if share is None else share.invalidators.pop(self._key, None)
        if inv is not None:
            with anyio.CancelScope(shield=True):
                await inv.aclose()

    # -- the familiar API --------------------------------------------------------------------

    async def invalidate_cache_by_patterns(
        self,
        specific_keys: list[Any] | None = None,
        patterns: list[Any] | None = None,
        operation_name: str = "cache",
        *,
        tags: list[Any] | None = None,
    ) -> None:
        """Delete ``specific_keys``, every key matching ``patterns`` and every key tagged with
        ``tags``; log, never raise."""
        try:
            inv = await self._get_invalidator()
            result = await inv.invalidate(
                keys=list(specific_keys) if specific_keys else None,
                patterns=list(patterns) if patterns else None,
                operation_name=operation_name,
                tags=list(tags) if tags else None,
            )
        except InvalidationError as exc:
            self.last_result = exc.result
            self._log_details(exc.result, specific_keys)
            self._warn(operation_name, exc)
            await self._hand_off(specific_keys, patterns, operation_name, tags)
            return
        except Exception as exc:
            # The contract of this facade: a cache failure never breaks the caller's operation.
            self._warn(operation_name, exc)
            if not isinstance(exc, InvalidInputError):  # bad input never enters the queue
                await self._hand_off(specific_keys, patterns, operation_name, tags)
            return
        self.last_result = result
        self._log_details(result, specific_keys)
        logger.info(
            "Successfully invalidated %d %s cache entries", result.deleted, operation_name
        )

    async def invalidate_catalog_cache(self, endpoint_id: str | None = None) -> None:
        """Drop the catalog list/search pages, and one model's detail when ``endpoint_id`` given."""
        await self.invalidate_rule("catalog", endpoint_id=endpoint_id or None)

    async def invalidate_user_cache(self, user_id: str) -> None:
        """Drop one user's record, profile, sessions and project lists."""
        await self.invalidate_rule("user", user_id=user_id)

    async def invalidate_cluster_cache(self, cluster_id: str | None = None) -> None:
        """Drop the cluster list pages, and one cluster's entries when ``cluster_id`` given."""
        await self.invalidate_rule("cluster", cluster_id=cluster_id or None)

    async def invalidate_rule(self, name: str, /, **params: Any) -> None:
        """Run the named rule with ``params``; log, never raise (a bad rule call is a WARNING)."""
        try:
            keys, patterns, operation = render_rule(name, self._rules, **params)
        except Exception as exc:
            rule = self._rules.get(name) if isinstance(name, str) else None
            operation = (rule.operation_name or rule.name) if rule is not None else str(name)
            self._warn(operation, exc)
            return
        await self.invalidate_cache_by_patterns(
            specific_keys=list(keys) or None,
            patterns=list(patterns) or None,
            operation_name=operation,
        )

    def __getattr__(self, attr: str) -> Callable[..., Awaitable[None]]:
        # Custom rules get methods named the familiar way: rule "tenant" is invalidate_tenant_cache.
        match = _RULE_METHOD.match(attr)
        rules = self.__dict__.get("_rules")
        if match is None or rules is None or match["rule"] not in rules:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")
        name = match["rule"]

        async def method(**params: Any) -> None:
            await self.invalidate_rule(name, **params)

        method.__name__ = attr
        method.__doc__ = f"Run the {name!r} invalidation rule; log, never raise."
        return method

    # -- internals ---------------------------------------------------------------------------

    async def _get_invalidator(self) -> ClusterInvalidator:
        if self._given is not None:
            return self._given
        if self._url is None:
            raise LookupError(
                f"{ENV_URL} is unset and no url was given to RedisService; "
                f"set {ENV_URL}=redis://host:port or pass RedisService(url=...)"
            )
        share = _loop_share()
        inv = share.invalidators.get(self._key)
        if inv is not None:
            return inv
        async with share.lock:
            inv = share.invalidators.get(self._key)
            if inv is not None:
                return inv
            inv = ClusterInvalidator.from_url(self._url, **self._options)
            try:
                await inv.open()
            except BaseException:
                # Do not keep a half-open client: the next call tries again from scratch.
                with anyio.CancelScope(shield=True):
                    await inv.aclose()
                raise
            share.invalidators[self._key] = inv
            return inv

    def _log_details(self, result: InvalidationResult, specific_keys: Sequence[Any] | None) -> None:
        op = result.operation
        if specific_keys:
            shown = [_plain(k) for k in specific_keys]
            logger.debug(
                "Invalidated %d specific %s cache keys: %s", result.exact_deleted, op, shown
            )
        for pattern, deleted in result.per_pattern:
            logger.debug(
                "Invalidated %d %s cache entries matching pattern: %s", deleted, op, pattern
            )

    def _handoff_queue(self) -> InvalidationQueue | None:
        if self._queue is not None:
            return self._queue
        if self._own_queue is None and os.environ.get(ENV_QUEUE, "") not in ("", "0"):
            target = os.environ.get(f"{ENV_QUEUE}_URL") or self._url
            if target is None:
                return None
            from clusterinval.queue.client import InvalidationQueue
            from clusterinval.queue.stream import DEFAULT_STREAM

            self._own_queue = InvalidationQueue.from_url(
                target, stream=os.environ.get(f"{ENV_QUEUE}_STREAM") or DEFAULT_STREAM,
                spool=os.environ.get(f"{ENV_QUEUE}_SPOOL") or None)
        return self._own_queue

    async def _hand_off(self, keys: Sequence[Any] | None, patterns: Sequence[Any] | None,
                        operation_name: str, tags: Sequence[Any] | None) -> None:
        """Give a failed invalidation to the queue, when there is one; log where it went."""
        try:
            queue = self._handoff_queue()
        except Exception as exc:
            self._warn(operation_name, exc)
            return
        if queue is None:
            return
        try:
            receipt = await queue.submit_receipt(
                keys=list(keys) if keys else None, patterns=list(patterns) if patterns else None,
                operation_name=operation_name, tags=list(tags) if tags else None)
        except Exception as exc:
            reason = self._redact(str(exc) or type(exc).__name__)
            logger.warning("Failed to queue %s cache invalidation: %s", operation_name, reason)
            return
        where = (f"stream {queue.stream} at {self._redact(queue.url)}"
                 if receipt.destination == "stream" else f"local spool {queue.spool_path}")
        logger.warning("Queued %s cache invalidation as request %s in the %s", operation_name,
                       receipt.request_id, where)

    def _warn(self, operation_name: object, exc: BaseException) -> None:
        reason = self._redact(str(exc) or type(exc).__name__)
        logger.warning("Failed to invalidate %s cache: %s", operation_name, reason)

    def _redact(self, text: str) -> str:
        text = mask_credentials(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def mask_credentials(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", text)


def _secrets_of(url: str | None, options: Mapping[str, Any]) -> tuple[str, ...]:
    secrets: list[str] = []
    if url:
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            secrets.append(password)
    password_opt = options.get("password")
    if isinstance(password_opt, str) and password_opt:
        secrets.append(password_opt)
    # Longest first, so a password containing another is masked whole.
    return tuple(sorted(set(secrets), key=len, reverse=True))


def _plain(key: object) -> object:
    return key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else key
