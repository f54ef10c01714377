"""RedisClusterCache against the real session cluster: the cases of Django's own cache tests
(tests/cache/tests.py, BaseCacheTests) that apply to a Redis backend, plus django-redis's
delete_pattern across every slot and clear() limited to the cache's own keys."""

from __future__ import annotations

import pickle
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

pytest.importorskip("django")

from django.core.cache import CacheKeyWarning, caches
from django.core.cache.backends.base import BaseCache

from clusterinval._core.slots import key_slot
from clusterinval.contrib.django import (
    PickleSerializer,
    RedisClusterCache,
    close_connections,
)
from clusterinval.testing.fill import cluster_primaries

KEY_ERRORS_WITH_MEMCACHED_MSG = (
    "Cache key contains characters that will cause errors if used with memcached: %r"
)


def custom_key_func(key: str, key_prefix: str, version: int | str) -> str:
    """A customised cache key function (referenced by dotted path from conftest)."""
    return "CUSTOM-" + "-".join([key_prefix, str(version), key])


def f() -> int:
    return 42


class C:
    def m(self) -> int:
        return 24


class Unpicklable:
    def __getstate__(self) -> Any:
        raise pickle.PickleError()


def wait_until(probe: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``probe`` until true; AssertionError after ``timeout`` s (expiry has no event)."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def cache(django_caches: dict[str, Any], cluster_url: str) -> Iterator[RedisClusterCache]:
    """The default cache on the emptied session cluster."""
    backend = caches["default"]
    assert isinstance(backend, RedisClusterCache)
    yield backend


class TestDjangoCacheApi:
    """Ported from Django's BaseCacheTests."""

    def test_simple(self, cache: RedisClusterCache) -> None:
        cache.set("key", "value")
        assert cache.get("key") == "value"

    def test_default_used_when_none_is_set(self, cache: RedisClusterCache) -> None:
        cache.set("key_default_none", None)
        assert cache.get("key_default_none", default="default") is None

    def test_add(self, cache: RedisClusterCache) -> None:
        assert cache.add("addkey1", "value") is True
        assert cache.add("addkey1", "newvalue") is False
        assert cache.get("addkey1") == "value"

    def test_prefix(self, cache: RedisClusterCache) -> None:
        cache.set("somekey", "value")
        assert caches["prefix"].has_key("somekey") is False
        caches["prefix"].set("somekey", "value2")
        assert cache.get("somekey") == "value"
        assert caches["prefix"].get("somekey") == "value2"

    def test_non_existent(self, cache: RedisClusterCache) -> None:
        assert cache.get("does_not_exist") is None
        assert cache.get("does_not_exist", "bang!") == "bang!"

    def test_get_many(self, cache: RedisClusterCache) -> None:
        cache.set_many({"a": "a", "b": "b", "c": "c", "d": "d"})
        assert cache.get_many(["a", "c", "d"]) == {"a": "a", "c": "c", "d": "d"}
        assert cache.get_many(["a", "b", "e"]) == {"a": "a", "b": "b"}
        assert cache.get_many(iter(["a", "b", "e"])) == {"a": "a", "b": "b"}
        cache.set_many({"x": None, "y": 1})
        assert cache.get_many(["x", "y"]) == {"x": None, "y": 1}

    def test_many_calls_span_every_slot_without_crossslot(
            self, cache: RedisClusterCache) -> None:
        data = {f"k{i}": i for i in range(600)}
        slots = {key_slot(cache.make_key(k).encode()) for k in data}
        assert len(slots) > 500
        assert cache.set_many(data) == []
        assert cache.get_many(list(data)) == data
        cache.delete_many(list(data)[:300])
        assert cache.get_many(list(data)) == dict(list(data.items())[300:])

    def test_delete(self, cache: RedisClusterCache) -> None:
        cache.set_many({"key1": "spam", "key2": "eggs"})
        assert cache.get("key1") == "spam"
        assert cache.delete("key1") is True
        assert cache.get("key1") is None
        assert cache.get("key2") == "eggs"

    def test_delete_nonexistent(self, cache: RedisClusterCache) -> None:
        assert cache.delete("nonexistent_key") is False

    def test_has_key(self, cache: RedisClusterCache) -> None:
        cache.set("hello1", "goodbye1")
        assert cache.has_key("hello1") is True
        assert cache.has_key("goodbye1") is False
        cache.set("no_expiry", "here", None)
        assert cache.has_key("no_expiry") is True
        cache.set("null", None)
        assert cache.has_key("null") is True

    def test_in(self, cache: RedisClusterCache) -> None:
        cache.set("hello2", "goodbye2")
        assert "hello2" in cache
        assert "goodbye2" not in cache
        cache.set("null", None)
        assert "null" in cache

    def test_incr(self, cache: RedisClusterCache) -> None:
        cache.set("answer", 41)
        assert cache.incr("answer") == 42
        assert cache.get("answer") == 42
        assert cache.incr("answer", 10) == 52
        assert cache.get("answer") == 52
        assert cache.incr("answer", -10) == 42
        with pytest.raises(ValueError):
            cache.incr("does_not_exist")
        with pytest.raises(ValueError):
            cache.incr("does_not_exist", -1)
        cache.set("null", None)
        with pytest.raises(redis.ResponseError):
            cache.incr("null")

    def test_decr(self, cache: RedisClusterCache) -> None:
        cache.set("answer", 43)
        assert cache.decr("answer") == 42
        assert cache.get("answer") == 42
        assert cache.decr("answer", 10) == 32
        assert cache.get("answer") == 32
        assert cache.decr("answer", -10) == 42
        with pytest.raises(ValueError):
            cache.decr("does_not_exist")
        cache.set("null", None)
        with pytest.raises(redis.ResponseError):
            cache.decr("null")

    def test_incr_keeps_the_timeout_and_never_recreates(self, cache: RedisClusterCache,
                                                        client: redis.RedisCluster) -> None:
        cache.set("counter", 1, 100)
        assert cache.incr("counter") == 2
        assert 0 < client.ttl(cache.make_key("counter")) <= 100

    def test_close(self, cache: RedisClusterCache) -> None:
        assert hasattr(cache, "close")
        cache.close()
        cache.set("after_close", 1)
        assert cache.get("after_close") == 1

    def test_data_types(self, cache: RedisClusterCache) -> None:
        tests: dict[str, Any] = {
            "string": "this is a string", "int": 42, "bool": True, "list": [1, 2, 3, 4],
            "tuple": (1, 2, 3, 4), "dict": {"A": 1, "B": 2}, "function": f, "class": C,
        }
        for key, value in tests.items():
            cache.set(key, value)
            assert cache.get(key) == value, key
        assert cache.get("bool") is True

    def test_expiration(self, cache: RedisClusterCache) -> None:
        cache.set("expire1", "very quickly", 1)
        cache.set("expire2", "very quickly", 1)
        cache.set("expire3", "very quickly", 1)
        wait_until(lambda: cache.get("expire1") is None, 5, "expire1 to expire")
        wait_until(lambda: not cache.has_key("expire2"), 5, "expire2 to expire")
        assert cache.add("expire2", "newvalue") is True
        assert cache.get("expire2") == "newvalue"
        wait_until(lambda: not cache.has_key("expire3"), 5, "expire3 to expire")

    def test_touch(self, cache: RedisClusterCache, client: redis.RedisCluster) -> None:
        cache.set("expire1", "very quickly", timeout=1)
        assert cache.touch("expire1", timeout=4) is True
        assert 1 < client.pttl(cache.make_key("expire1")) <= 4000
        cache.set("expire1", "very quickly", timeout=1)
        assert cache.touch("expire1") is True
        assert client.ttl(cache.make_key("expire1")) > 250  # Django's default 300 s
        assert cache.touch("nonexistent") is False

    def test_unicode(self, cache: RedisClusterCache) -> None:
        stuff: dict[str, Any] = {
            "ascii": "ascii_value",
            "unicode_ascii": "Iñtërnâtiônàlizætiøn1",
            "Iñtërnâtiônàlizætiøn": "Iñtërnâtiônàlizætiøn2",
            "ascii2": {"x": 1},
        }
        for key, value in stuff.items():
            cache.set(key, value)
            assert cache.get(key) == value
        for key, value in stuff.items():
            assert cache.delete(key) is True
            assert cache.add(key, value) is True
            assert cache.get(key) == value
        for key in stuff:
            assert cache.delete(key) is True
        cache.set_many(stuff)
        for key, value in stuff.items():
            assert cache.get(key) == value

    def test_binary_string(self, cache: RedisClusterCache) -> None:
        value = "value_to_be_compressed"
        compressed = zlib.compress(value.encode())
        cache.set("binary1", compressed)
        assert cache.get("binary1") == compressed
        assert cache.add("binary1-add", compressed) is True
        assert zlib.decompress(cache.get("binary1-add")).decode() == value
        cache.set_many({"binary1-set_many": compressed})
        assert cache.get("binary1-set_many") == compressed

    def test_set_many(self, cache: RedisClusterCache) -> None:
        assert cache.set_many({"key1": "spam", "key2": "eggs"}) == []
        assert cache.get("key1") == "spam"
        assert cache.get("key2") == "eggs"
        assert cache.set_many({}) == []

    def test_set_many_expiration(self, cache: RedisClusterCache,
                                 client: redis.RedisCluster) -> None:
        cache.set_many({"key1": "spam", "key2": "eggs"}, 1)
        assert 0 < client.pttl(cache.make_key("key1")) <= 1000
        wait_until(lambda: cache.get_many(["key1", "key2"]) == {}, 5, "set_many keys to expire")

    def test_delete_many(self, cache: RedisClusterCache) -> None:
        cache.set_many({"key1": "spam", "key2": "eggs", "key3": "ham"})
        cache.delete_many(["key1", "key2"])
        assert cache.get("key1") is None
        assert cache.get("key2") is None
        assert cache.get("key3") == "ham"
        assert cache.delete_many([]) is None

    def test_clear(self, cache: RedisClusterCache) -> None:
        cache.set_many({"key1": "spam", "key2": "eggs"})
        cache.clear()
        assert cache.get("key1") is None
        assert cache.get("key2") is None

    def test_long_timeout(self, cache: RedisClusterCache) -> None:
        month = 60 * 60 * 24 * 30 + 1
        cache.set("key1", "eggs", month)
        assert cache.get("key1") == "eggs"
        assert cache.add("key2", "ham", month) is True
        assert cache.get("key2") == "ham"
        cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, month)
        assert cache.get("key3") == "sausage"
        assert cache.get("key4") == "lobster bisque"

    def test_forever_timeout(self, cache: RedisClusterCache, client: redis.RedisCluster) -> None:
        cache.set("key1", "eggs", None)
        assert cache.get("key1") == "eggs"
        assert cache.add("key2", "ham", None) is True
        assert cache.get("key2") == "ham"
        assert cache.add("key1", "new eggs", None) is False
        assert cache.get("key1") == "eggs"
        cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, None)
        assert cache.get("key3") == "sausage"
        assert cache.get("key4") == "lobster bisque"
        assert {client.ttl(cache.make_key(k)) for k in ("key1", "key2", "key3")} == {-1}
        cache.set("key5", "belgian fries", timeout=1)
        assert cache.touch("key5", timeout=None) is True
        assert client.ttl(cache.make_key("key5")) == -1
        assert cache.touch("key5", timeout=None) is True  # already persistent, still there

    def test_zero_timeout(self, cache: RedisClusterCache) -> None:
        cache.set("key1", "eggs", 0)
        assert cache.get("key1") is None
        assert cache.add("key2", "ham", 0) is True
        assert cache.get("key2") is None
        cache.set_many({"key3": "sausage", "key4": "lobster bisque"}, 0)
        assert cache.get("key3") is None
        assert cache.get("key4") is None
        cache.set("key5", "belgian fries", timeout=5)
        assert cache.touch("key5", timeout=0) is True
        assert cache.get("key5") is None

    def test_float_timeout(self, cache: RedisClusterCache) -> None:
        cache.set("key1", "spam", 100.2)
        assert cache.get("key1") == "spam"

    @pytest.mark.parametrize("operation, args", [
        ("add", ["K", 1]), ("get", ["K"]), ("set", ["K", 1]), ("incr", ["K"]),
        ("decr", ["K"]), ("touch", ["K"]), ("delete", ["K"]), ("get_many", [["K", "b"]]),
        ("set_many", [{"K": 1, "b": 2}]), ("delete_many", [["K", "b"]]),
    ])
    def test_invalid_key_characters_warn(self, cache: RedisClusterCache, operation: str,
                                         args: list[Any]) -> None:
        key = "key with spaces and 清"
        args = [key if a == "K" else a for a in args]
        args = [[key if x == "K" else x for x in a] if isinstance(a, list) else a for a in args]
        args = [{(key if k == "K" else k): v for k, v in a.items()} if isinstance(a, dict)
                else a for a in args]
        old = cache.key_func
        cache.key_func = lambda k, *rest: k
        try:
            if operation in ("incr", "decr"):
                with pytest.warns(CacheKeyWarning):
                    cache.set(key, 1)
            with pytest.warns(CacheKeyWarning) as record:
                getattr(cache, operation)(*args)
        finally:
            cache.key_func = old
        assert str(record[-1].message) == KEY_ERRORS_WITH_MEMCACHED_MSG % key

    def test_cache_versioning_get_set(self, cache: RedisClusterCache) -> None:
        v2 = caches["v2"]
        cache.set("answer1", 42)
        assert cache.get("answer1") == 42
        assert cache.get("answer1", version=1) == 42
        assert cache.get("answer1", version=2) is None
        assert v2.get("answer1") is None
        assert v2.get("answer1", version=1) == 42
        assert v2.get("answer1", version=2) is None
        cache.set("answer2", 42, version=2)
        assert cache.get("answer2") is None
        assert cache.get("answer2", version=2) == 42
        assert v2.get("answer2") == 42
        assert v2.get("answer2", version=1) is None
        v2.set("answer3", 42)
        assert cache.get("answer3") is None
        assert cache.get("answer3", version=2) == 42
        v2.set("answer4", 42, version=1)
        assert cache.get("answer4") == 42
        assert v2.get("answer4") is None
        assert v2.get("answer4", version=1) == 42

    def test_cache_versioning_add(self, cache: RedisClusterCache) -> None:
        v2 = caches["v2"]
        assert cache.add("answer1", 42, version=2) is True
        assert cache.get("answer1", version=1) is None
        assert cache.get("answer1", version=2) == 42
        assert cache.add("answer1", 37, version=2) is False
        assert cache.add("answer1", 37, version=1) is True
        assert cache.get("answer1", version=1) == 37
        assert v2.add("answer2", 42) is True
        assert v2.add("answer2", 37) is False
        assert v2.add("answer2", 37, version=1) is True
        assert cache.get("answer2", version=1) == 37
        assert cache.get("answer2", version=2) == 42

    def test_cache_versioning_has_key(self, cache: RedisClusterCache) -> None:
        cache.set("answer1", 42)
        assert cache.has_key("answer1") is True
        assert cache.has_key("answer1", version=1) is True
        assert cache.has_key("answer1", version=2) is False
        assert caches["v2"].has_key("answer1") is False
        assert caches["v2"].has_key("answer1", version=1) is True

    def test_cache_versioning_delete(self, cache: RedisClusterCache) -> None:
        cache.set("answer1", 37, version=1)
        cache.set("answer1", 42, version=2)
        assert cache.delete("answer1") is True
        assert cache.get("answer1", version=1) is None
        assert cache.get("answer1", version=2) == 42
        cache.set("answer2", 37, version=1)
        cache.set("answer2", 42, version=2)
        assert cache.delete("answer2", version=2) is True
        assert cache.get("answer2", version=1) == 37
        assert cache.get("answer2", version=2) is None
        cache.set("answer3", 37, version=1)
        cache.set("answer3", 42, version=2)
        assert caches["v2"].delete("answer3") is True
        assert cache.get("answer3", version=1) == 37
        assert cache.get("answer3", version=2) is None

    def test_cache_versioning_incr_decr(self, cache: RedisClusterCache) -> None:
        cache.set("answer1", 37, version=1)
        cache.set("answer1", 42, version=2)
        assert cache.incr("answer1") == 38
        assert cache.get("answer1", version=2) == 42
        assert cache.decr("answer1") == 37
        assert caches["v2"].incr("answer1") == 43
        assert cache.get("answer1", version=1) == 37
        assert caches["v2"].decr("answer1", version=1) == 36

    def test_cache_versioning_get_set_many(self, cache: RedisClusterCache) -> None:
        v2 = caches["v2"]
        cache.set_many({"ford1": 37, "arthur1": 42})
        assert cache.get_many(["ford1", "arthur1"]) == {"ford1": 37, "arthur1": 42}
        assert cache.get_many(["ford1", "arthur1"], version=2) == {}
        assert v2.get_many(["ford1", "arthur1"]) == {}
        assert v2.get_many(["ford1", "arthur1"], version=1) == {"ford1": 37, "arthur1": 42}
        cache.set_many({"ford2": 37, "arthur2": 42}, version=2)
        assert cache.get_many(["ford2", "arthur2"]) == {}
        assert v2.get_many(["ford2", "arthur2"]) == {"ford2": 37, "arthur2": 42}
        v2.set_many({"ford4": 37, "arthur4": 42}, version=1)
        assert cache.get_many(["ford4", "arthur4"]) == {"ford4": 37, "arthur4": 42}
        assert v2.get_many(["ford4", "arthur4"]) == {}

    def test_incr_version(self, cache: RedisClusterCache) -> None:
        cache.set("answer", 42, version=2)
        assert cache.get("answer") is None
        assert cache.incr_version("answer", version=2) == 3
        assert cache.get("answer", version=2) is None
        assert cache.get("answer", version=3) == 42
        caches["v2"].set("answer2", 42)
        assert caches["v2"].incr_version("answer2") == 3
        assert caches["v2"].get("answer2") is None
        assert caches["v2"].get("answer2", version=3) == 42
        with pytest.raises(ValueError):
            cache.incr_version("does_not_exist")
        cache.set("null", None)
        assert cache.incr_version("null") == 2

    def test_decr_version(self, cache: RedisClusterCache) -> None:
        cache.set("answer", 42, version=2)
        assert cache.decr_version("answer", version=2) == 1
        assert cache.get("answer") == 42
        assert cache.get("answer", version=2) is None
        caches["v2"].set("answer2", 42)
        assert caches["v2"].decr_version("answer2") == 1
        assert caches["v2"].get("answer2") is None
        assert caches["v2"].get("answer2", version=1) == 42
        with pytest.raises(ValueError):
            cache.decr_version("does_not_exist", version=2)

    def test_custom_key_func(self, cache: RedisClusterCache) -> None:
        cache.set("answer1", 42)
        assert cache.get("answer1") == 42
        assert caches["custom_key"].get("answer1") is None
        assert caches["custom_key2"].get("answer1") is None
        caches["custom_key"].set("answer2", 42)
        assert cache.get("answer2") is None
        assert caches["custom_key"].get("answer2") == 42
        assert caches["custom_key2"].get("answer2") == 42

    def test_add_and_set_fail_on_pickleerror(self, cache: RedisClusterCache) -> None:
        with pytest.raises(pickle.PickleError):
            cache.add("unpicklable", Unpicklable())
        with pytest.raises(pickle.PickleError):
            cache.set("unpicklable", Unpicklable())

    def test_get_or_set(self, cache: RedisClusterCache) -> None:
        assert cache.get("projector") is None
        assert cache.get_or_set("projector", 42) == 42
        assert cache.get("projector") == 42
        assert cache.get_or_set("null", None) is None
        assert cache.get("null", "default") is None

    def test_get_or_set_callable(self, cache: RedisClusterCache) -> None:
        assert cache.get_or_set("mykey", lambda: "value") == "value"
        assert cache.get_or_set("mykey", "other") == "value"
        assert cache.get_or_set("null2", lambda: None) is None
        assert cache.get("null2", "default") is None

    def test_get_or_set_version(self, cache: RedisClusterCache) -> None:
        assert cache.get_or_set("brian", 1979, version=2) == 1979
        with pytest.raises(TypeError):
            cache.get_or_set("brian")  # type: ignore[call-arg]
        assert cache.get("brian", version=1) is None
        assert cache.get_or_set("brian", 42, version=1) == 42
        assert cache.get_or_set("brian", 1979, version=2) == 1979
        assert cache.get("brian", version=3) is None

    def test_serializer_stores_ints_as_numbers(self, cache: RedisClusterCache,
                                               client: redis.RedisCluster) -> None:
        cache.set("n", 12)
        cache.set("b", True)
        assert client.get(cache.make_key("n")) == b"12"
        assert pickle.loads(client.get(cache.make_key("b"))) is True
        assert PickleSerializer().loads(PickleSerializer().dumps([1])) == [1]


@pytest.mark.anyio
class TestAsyncApi:
    async def test_async_variants(self, cache: RedisClusterCache) -> None:
        await cache.aset("a", 1)
        assert await cache.aget("a") == 1
        assert await cache.aadd("a", 2) is False
        assert await cache.aadd("b", 2) is True
        assert await cache.ahas_key("b") is True
        assert await cache.aincr("a", 5) == 6
        assert await cache.adecr("a") == 5
        assert await cache.atouch("a", 100) is True
        assert await cache.aset_many({"c": 3, "d": 4}) == []
        assert await cache.aget_many(["a", "b", "c", "d", "e"]) == {"a": 5, "b": 2, "c": 3,
                                                                     "d": 4}
        await cache.adelete_many(["c", "d"])
        assert await cache.aget_many(["c", "d"]) == {}
        assert await cache.adelete("b") is True
        assert await cache.aget_or_set("g", 7) == 7
        assert await cache.aincr_version("g") == 2
        assert await cache.aget("g", version=2) == 7
        assert await cache.adelete_pattern("*") == 1  # "a"; "g" lives on under version 2
        await cache.aclear()
        assert await cache.aget_many(["a", "g"], version=2) == {}
        await cache.aclose()

    async def test_batched_calls_are_not_looped_per_key(self, cache: RedisClusterCache) -> None:
        assert type(cache).aget_many is not BaseCache.aget_many
        assert type(cache).aset_many is not BaseCache.aset_many
        assert type(cache).adelete_many is not BaseCache.adelete_many


class TestDeletePattern:
    def test_every_slot_every_primary(self, cache: RedisClusterCache,
                                      client: redis.RedisCluster) -> None:
        items = {f"item:{i}": i for i in range(3000)}
        cache.set_many(items)
        cache.set_many({"item:0": "v2"}, version=2)
        caches["prefix"].set_many({"item:1": 1})
        client.set("item:raw", 1)  # not a cache key: no prefix, no version
        slots = {key_slot(cache.make_key(k).encode()) for k in items}
        assert len(slots) > 2000
        assert cache.delete_pattern("item:*") == 3000
        assert cache.get_many(list(items)) == {}
        assert cache.get("item:0", version=2) == "v2"
        assert caches["prefix"].get("item:1") == 1
        assert client.get("item:raw") == b"1"

    def test_version_and_glob_semantics(self, cache: RedisClusterCache) -> None:
        cache.set_many({"user:1": 1, "user:2": 2, "user:10": 10, "users": 0}, version=3)
        assert cache.delete_pattern("user:?", version=3) == 2
        assert cache.get_many(["user:1", "user:2", "user:10", "users"], version=3) == {
            "user:10": 10, "users": 0}
        assert cache.delete_pattern("user:*") == 0  # default version 1

    def test_prefix_metacharacters_are_literal(self, django_caches: dict[str, Any],
                                               cluster_url: str) -> None:
        star = RedisClusterCache(cluster_url, {"KEY_PREFIX": "a*"})
        other = RedisClusterCache(cluster_url, {"KEY_PREFIX": "ab"})
        star.set("k", 1)
        other.set("k", 2)
        assert star.delete_pattern("*") == 1
        assert other.get("k") == 2
        star.set("k", 1)
        star.clear()
        assert (star.get("k"), other.get("k")) == (None, 2)

    def test_metrics_under_the_operation_name(self, django_caches: dict[str, Any],
                                              cluster_url: str) -> None:
        registry = CollectorRegistry()
        backend = RedisClusterCache(cluster_url, {"KEY_PREFIX": "m", "OPTIONS": {
            "operation_name": "catalog", "invalidator": {"registry": registry}}})
        backend.set_many({"p:1": 1, "p:2": 2})
        assert backend.delete_pattern("p:*") == 2
        assert backend.delete_pattern("p:*", operation_name="catalog_again") == 0
        assert registry.get_sample_value("clusterinval_keys_deleted_total",
                                         {"operation": "catalog"}) == 2
        assert registry.get_sample_value("clusterinval_invalidations_total",
                                         {"operation": "catalog_again",
                                          "outcome": "complete"}) == 1


class TestClear:
    def test_clear_removes_only_this_caches_keys(self, cache: RedisClusterCache,
                                                 client: redis.RedisCluster) -> None:
        cache.set_many({f"k{i}": i for i in range(200)})
        cache.set("old", 1, version=7)
        caches["prefix"].set("kept", 1)
        caches["custom_key"].set("kept", 1)
        client.set("not-django", 1)
        assert cache.clear() is True
        assert cache.get_many([f"k{i}" for i in range(200)]) == {}
        assert cache.get("old", version=7) is None
        assert caches["prefix"].get("kept") == 1
        assert caches["custom_key"].get("kept") == 1
        assert client.get("not-django") == b"1"

    def test_flush_mode_empties_every_primary(self, cache: RedisClusterCache, cluster_url: str,
                                              client: redis.RedisCluster) -> None:
        client.mset_nonatomic({f"raw:{i}": i for i in range(100)})
        caches["flush"].set("x", 1)
        assert caches["flush"].clear() is True
        sizes = []
        for host, port in cluster_primaries(cluster_url):
            with redis.Redis(host=host, port=port) as node:
                sizes.append(int(node.dbsize()))
        assert sizes == [0, 0, 0]


class TestConfiguration:
    def test_backend_from_settings(self, cache: RedisClusterCache) -> None:
        assert caches["default"].get_client() is caches["default"].get_client()
        assert isinstance(caches["custom_key"], RedisClusterCache)

    def test_bad_clear_mode_is_refused(self, cluster_url: str,
                                       django_caches: dict[str, Any]) -> None:
        from django.core.exceptions import ImproperlyConfigured

        with pytest.raises(ImproperlyConfigured):
            RedisClusterCache(cluster_url, {"OPTIONS": {"clear": "everything"}})

    def test_several_locations_first_dead(self, cluster_url: str,
                                          django_caches: dict[str, Any]) -> None:
        backend = RedisClusterCache(f"redis://127.0.0.1:1,{cluster_url}", {
            "OPTIONS": {"socket_connect_timeout": 1}})
        backend.set("x", 1)
        assert backend.get("x") == 1

    def test_close_connections_reopens_on_next_use(self, cache: RedisClusterCache) -> None:
        cache.set("x", 1)
        close_connections()
        assert cache.get("x") == 1
