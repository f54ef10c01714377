"""A Django cache backend for Redis Cluster, with django-redis's ``delete_pattern``.

::

    CACHES = {
        "default": {
            "BACKEND": "clusterinval.contrib.django.RedisClusterCache",
            "LOCATION": "redis://10.0.0.5:7000",
            "KEY_PREFIX": "shop",
        }
    }

It implements Django's whole cache API on ``redis.cluster.RedisCluster``. Values are pickled like
Django's own Redis backend does (integers are stored as plain numbers so that ``incr`` works);
multi-key calls are grouped by hash slot, so no command is ever cross-slot. ``delete_pattern``
and ``clear`` run through clusterinval's engine: every primary, slot-grouped ``UNLINK``, metrics
under an ``operation_name``. ``clear`` removes only this cache's keys unless ``OPTIONS["clear"]``
is ``"flush"``. See ``docs/django.md``.
"""

from __future__ import annotations

import atexit
import pickle
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from redis.cluster import RedisCluster

from clusterinval._core.glob import escape
from clusterinval._core.slots import key_slot
from clusterinval._io.redis_io import CONNECTION_OPTIONS
from clusterinval.sync import SyncClusterInvalidator

__all__ = ["PickleSerializer", "RedisClusterCache", "close_connections"]

CLEAR_MODES = ("prefix", "flush")
DEFAULT_OPERATION = "django_cache"
# OPTIONS keys Django's BaseCache reads itself (culling has no meaning on Redis).
_BASECACHE_OPTIONS = frozenset({"MAX_ENTRIES", "CULL_FREQUENCY"})

# incr/decr: only an existing key, in one step (a key expiring in between is never recreated).
_INCR_EXISTING = (
    "if redis.call('EXISTS', KEYS[1]) == 1 then "
    "return redis.call('INCRBY', KEYS[1], ARGV[1]) end return false"
)


class Serializer(Protocol):
    """What ``OPTIONS["serializer"]`` must provide."""

    def dumps(self, obj: Any) -> bytes | int: ...

    def loads(self, data: bytes) -> Any: ...


class PickleSerializer:
    """Pickle values, except plain ints which are stored as numbers (as Django's backend does)."""

    def __init__(self, protocol: int | None = None) -> None:
        self.protocol = pickle.HIGHEST_PROTOCOL if protocol is None else protocol

    def dumps(self, obj: Any) -> bytes | int:
        """The stored form of ``obj``."""
        # type() rather than isinstance(): bool and other int subclasses are pickled.
        if type(obj) is int:
            return obj
        return pickle.dumps(obj, self.protocol)

    def loads(self, data: bytes) -> Any:
        """The value of a stored form."""
        try:
            return int(data)
        except ValueError:
            return pickle.loads(data)


# -- connections shared by every instance of one configuration ---------------------------------
#
# Django builds one backend object per thread (and per async task context); a RedisCluster client
# discovers the topology when created, so clients and invalidators are shared per configuration.

_lock = threading.Lock()
_clients: dict[str, RedisCluster] = {}
_invalidators: dict[str, SyncClusterInvalidator] = {}


def close_connections() -> None:
    """Close every shared client and invalidator (they reopen on next use); runs at exit."""
    with _lock:
        clients, invalidators = list(_clients.values()), list(_invalidators.values())
        _clients.clear()
        _invalidators.clear()
    for inv in invalidators:
        inv.close()
    for client in clients:
        client.close()


atexit.register(close_connections)


class RedisClusterCache(BaseCache):  # type: ignore[misc]  # django ships no type information
    """Django cache backend on Redis Cluster (``BACKEND: clusterinval.contrib.django...``).

    ``LOCATION`` is a ``redis://`` URL of any cluster node (or several, separated by ``,`` or
    ``;``, tried in order). ``OPTIONS``: ``serializer`` (object or dotted path, default
    :class:`PickleSerializer`), ``clear`` (``"prefix"`` or ``"flush"``), ``operation_name`` (the
    metrics label of ``delete_pattern``/``clear``), ``invalidator`` (a dict of
    ``ClusterInvalidator`` options); anything else goes to ``RedisCluster.from_url``.
    """

    def __init__(self, server: str | Sequence[str], params: Mapping[str, Any]) -> None:
        super().__init__(params)
        servers = re.split("[;,]", server) if isinstance(server, str) else list(server)
        self._servers = [s.strip() for s in servers if s.strip()]
        if not self._servers:
            raise ImproperlyConfigured("RedisClusterCache needs LOCATION, a redis:// URL")
        options = {k: v for k, v in dict(params.get("OPTIONS") or {}).items()
                   if k not in _BASECACHE_OPTIONS}
        serializer = options.pop("serializer", None)
        if isinstance(serializer, str):
            serializer = import_string(serializer)
        if callable(serializer):
            serializer = serializer()
        self._serializer: Serializer = serializer or PickleSerializer()
        self._clear_mode = options.pop("clear", "prefix")
        if self._clear_mode not in CLEAR_MODES:
            raise ImproperlyConfigured(
                f"OPTIONS['clear'] must be one of {CLEAR_MODES}, got {self._clear_mode!r}"
            )
        self._operation = options.pop("operation_name", DEFAULT_OPERATION)
        self._invalidator_options = dict(options.pop("invalidator", None) or {})
        self._client_options = options
        self._config = repr((self._servers, sorted(options.items(), key=lambda kv: kv[0])))

    # -- connections ------------------------------------------------------------------------

    def get_client(self) -> RedisCluster:
        """The shared ``redis.cluster.RedisCluster`` client of this configuration."""
        client = _clients.get(self._config)
        if client is not None:
            return client
        with _lock:
            client = _clients.get(self._config)
            if client is None:
                client = self._connect()
                _clients[self._config] = client
            return client

    def _connect(self) -> RedisCluster:
        last: Exception | None = None
        for url in self._servers:
            try:
                return RedisCluster.from_url(url, **self._client_options)
            except Exception as exc:  # the next LOCATION may answer
                last = exc
        assert last is not None
        raise last

    def get_invalidator(self) -> SyncClusterInvalidator:
        """The shared invalidator that runs ``delete_pattern`` and ``clear``."""
        key = repr((self._config, sorted(self._invalidator_options.items())))
        with _lock:
            inv = _invalidators.get(key)
            if inv is None:
                connection = {k: v for k, v in self._client_options.items()
                              if k in CONNECTION_OPTIONS}
                inv = SyncClusterInvalidator.from_url(
                    self._servers[0], **connection, **self._invalidator_options
                )
                _invalidators[key] = inv
            return inv

    def _pipeline(self) -> Any:
        return self.get_client().pipeline()  # type: ignore[no-untyped-call]

    def _load(self, raw: Any) -> Any:
        return self._serializer.loads(raw)

    def close(self, **kwargs: Any) -> None:
        """Nothing to do: connections are pooled and shared (see ``close_connections``)."""

    # -- Django's cache API ----------------------------------------------------------------

    def get_backend_timeout(self, timeout: Any = DEFAULT_TIMEOUT) -> int | None:
        """Seconds until expiry, None for never; 0 or less means "do not keep"."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        return None if timeout is None else max(0, int(timeout))

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
            version: int | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent; whether it was stored."""
        made = self.make_and_validate_key(key, version=version)
        stored = self._serializer.dumps(value)
        ttl = self.get_backend_timeout(timeout)
        client = self.get_client()
        if ttl == 0:
            added = bool(client.set(made, stored, nx=True))
            if added:
                client.delete(made)
            return added
        return bool(client.set(made, stored, ex=ttl, nx=True))

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        """The value of ``key``, or ``default``."""
        made = self.make_and_validate_key(key, version=version)
        raw = self.get_client().get(made)
        return default if raw is None else self._load(raw)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
            version: int | None = None) -> None:
        """Store ``value`` under ``key``."""
        made = self.make_and_validate_key(key, version=version)
        stored = self._serializer.dumps(value)
        ttl = self.get_backend_timeout(timeout)
        client = self.get_client()
        if ttl == 0:
            client.delete(made)
        else:
            client.set(made, stored, ex=ttl)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Give ``key`` a new timeout; whether the key exists."""
        made = self.make_and_validate_key(key, version=version)
        ttl = self.get_backend_timeout(timeout)
        client = self.get_client()
        if ttl is None:
            return bool(client.persist(made)) or bool(client.exists(made))
        return bool(client.expire(made, ttl))

    def delete(self, key: Any, version: int | None = None) -> bool:
        """Remove ``key``; whether it existed."""
        made = self.make_and_validate_key(key, version=version)
        return bool(self.get_client().delete(made))

    def has_key(self, key: Any, version: int | None = None) -> bool:
        """Whether ``key`` is in the cache."""
        made = self.make_and_validate_key(key, version=version)
        return bool(self.get_client().exists(made))

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Add ``delta`` to the number under ``key``; ValueError when the key is absent."""
        made = self.make_and_validate_key(key, version=version)
        value = self.get_client().eval(_INCR_EXISTING, 1, made, delta)
        if value is None:
            raise ValueError(f"Key '{key}' not found.")
        return int(value)

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """The values of those ``keys`` present in the cache (one MGET per hash slot)."""
        key_map = {self.make_and_validate_key(k, version=version): k for k in keys}
        if not key_map:
            return {}
        groups = _by_slot(key_map)
        pipe = self._pipeline()
        for group in groups:
            pipe.execute_command("MGET", *group)
        out: dict[Any, Any] = {}
        for group, values in zip(groups, pipe.execute(), strict=True):
            for made, raw in zip(group, values, strict=True):
                if raw is not None:
                    out[key_map[made]] = self._load(raw)
        return out

    def set_many(self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                 version: int | None = None) -> list[Any]:
        """Store every item of ``data`` (pipelined per node); the keys that failed (none)."""
        if not data:
            return []
        safe = {self.make_and_validate_key(k, version=version): v for k, v in data.items()}
        ttl = self.get_backend_timeout(timeout)
        if ttl == 0:
            self._delete_made(list(safe))
            return []
        pipe = self._pipeline()
        for made, value in safe.items():
            pipe.set(made, self._serializer.dumps(value), ex=ttl)
        pipe.execute()
        return []

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """Remove ``keys`` (one DEL per hash slot)."""
        made = [self.make_and_validate_key(k, version=version) for k in keys]
        if made:
            self._delete_made(made)

    def _delete_made(self, made: Sequence[str]) -> int:
        pipe = self._pipeline()
        for group in _by_slot(made):
            pipe.execute_command("DEL", *group)
        return sum(int(n) for n in pipe.execute())

    def clear(self) -> bool:
        """Remove this cache's keys (``OPTIONS["clear"] == "flush"``: FLUSHDB every primary)."""
        if self._clear_mode == "flush":
            self.get_client().flushdb(target_nodes=RedisCluster.PRIMARIES)
            return True
        pattern = self.key_func("*", _glob_literal(self.key_prefix), "*")
        self._invalidate(pattern, self._operation)
        return True

    def delete_pattern(self, pattern: str, version: int | None = None, *,
                       prefix: str | None = None, operation_name: str | None = None) -> int:
        """Delete every key matching the Redis glob ``pattern``; how many were deleted.

        As in django-redis, the key prefix and version (escaped) are applied to ``pattern``
        through the key function; the run covers every primary and raises InvalidationError
        when it could not cover every slot.
        """
        version = self.version if version is None else version
        prefix = self.key_prefix if prefix is None else prefix
        full = self.key_func(pattern, _glob_literal(prefix), _glob_literal(str(version)))
        return self._invalidate(full, operation_name or self._operation)

    def _invalidate(self, pattern: str, operation: str) -> int:
        return self.get_invalidator().invalidate(
            patterns=[pattern], operation_name=operation
        ).deleted

    # -- async: batched where Django's defaults would loop key by key -------------------------

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        """See get_many()."""
        found: dict[Any, Any] = await _in_thread(self.get_many)(list(keys), version)
        return found

    async def aset_many(self, data: Mapping[Any, Any],
                        timeout: Any = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - Django's API
                        version: int | None = None) -> list[Any]:
        """See set_many()."""
        failed: list[Any] = await _in_thread(self.set_many)(data, timeout, version)
        return failed

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        """See delete_many()."""
        await _in_thread(self.delete_many)(list(keys), version)

    async def adelete_pattern(self, pattern: str, version: int | None = None, *,
                              prefix: str | None = None,
                              operation_name: str | None = None) -> int:
        """See delete_pattern()."""
        deleted: int = await _in_thread(self.delete_pattern)(
            pattern, version, prefix=prefix, operation_name=operation_name
        )
        return deleted


def _in_thread(func: Callable[..., Any]) -> Callable[..., Any]:
    return sync_to_async(func, thread_sensitive=True)


def _glob_literal(text: str) -> str:
    """``text`` with Redis glob metacharacters escaped (so a prefix matches only itself)."""
    return escape(text.encode("utf-8")).decode("utf-8")


def _by_slot(keys: Iterable[str]) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(key_slot(key.encode("utf-8")), []).append(key)
    return list(groups.values())
