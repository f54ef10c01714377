"""clusterinval._core.glob against a real redis-server: for generated patterns and keys, the keys
Redis reports for ``SCAN ... MATCH`` / ``KEYS`` are exactly the keys the library says match."""

from __future__ import annotations

import platform
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clusterinval._core.glob import compile_pattern, escape, redis_glob_match
from clusterinval.errors import InvalidPatternError

# Bytes with a meaning in globs or hash tags, plus newline, NUL and both sides of 0x80.
KEY_BYTES = list(b"ab*?[]^-\\{}\n\x00\xff\x80")
PATTERN_ALPHABET = [bytes([b]) for b in b"ab*?[]^-\\{}\n\x00\xff"]

# The same example runs many times against the fixture's one server, flushed by each example.
LIVE = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

raw_patterns = st.lists(st.sampled_from(PATTERN_ALPHABET), min_size=1, max_size=10).map(b"".join)
random_keys = st.lists(st.lists(st.sampled_from(KEY_BYTES), max_size=8).map(bytes), max_size=12)


@st.composite
def _built_pattern(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A valid pattern from parts (literals, '?', '*', sets) and keys made to match it."""
    parts: list[tuple[bytes, st.SearchStrategy[bytes]]] = []
    one = st.sampled_from(KEY_BYTES)
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["lit", "lit", "any", "star", "set"]))
        if kind == "lit":
            b = draw(one)
            parts.append((escape(bytes([b])), st.just(bytes([b]))))
        elif kind == "any":
            parts.append((b"?", one.map(_byte)))
        elif kind == "star":
            parts.append((b"*", st.lists(one, max_size=3).map(bytes)))
        else:
            chosen = draw(st.lists(one, min_size=1, max_size=3, unique=True))
            negate = draw(st.booleans())
            # Escaping makes each chosen byte a plain member wherever it stands.
            body = b"".join(b"\\" + bytes([b]) if b in b"\\]-^" else bytes([b]) for b in chosen)
            if draw(st.booleans()):
                body += b"a-z" if draw(st.booleans()) else b"\x90-\x80"
            opener = b"[^" if negate else b"["
            members = st.sampled_from(_accepted(body, negate)).map(_byte)
            parts.append((opener + body + b"]", members))
    pattern = b"".join(p for p, _ in parts)
    keys = [b"".join(draw(gen) for _, gen in parts) for _ in range(draw(st.integers(1, 4)))]
    return pattern, keys


def _byte(b: int) -> bytes:
    return bytes([b])


def _accepted(body: bytes, negate: bool) -> list[int]:
    """Bytes accepted by a set body as _built_pattern writes it (escapes and a-z/\\x90-\\x80)."""
    members: set[int] = set()
    i = 0
    while i < len(body):
        if body[i] == 0x5C:
            members.add(body[i + 1])
            i += 2
        elif i + 2 < len(body) and body[i + 1] == 0x2D:
            lo, hi = sorted((body[i], body[i + 2]))
            members.update(range(lo, hi + 1))
            i += 3
        else:
            members.add(body[i])
            i += 1
    if negate:
        members = set(range(256)) - members
    return sorted(members & set(KEY_BYTES)) or sorted(members)


@pytest.fixture
def client(standalone_url: str) -> Iterator[redis.Redis]:
    """A sync client with bytes replies on the shared standalone server."""
    conn = redis.Redis.from_url(standalone_url, decode_responses=False)
    try:
        yield conn
    finally:
        conn.close()


def _store(client: redis.Redis, keys: set[bytes]) -> None:
    client.flushdb()
    if keys:
        client.mset({k: b"1" for k in keys})


def _scan_match(client: redis.Redis, pattern: bytes) -> set[bytes]:
    found: set[bytes] = set()
    cursor = 0
    while True:
        cursor, batch = client.scan(cursor=cursor, match=pattern, count=1000)
        for key in batch:
            assert isinstance(key, bytes)  # decode_responses=False
            found.add(key)
        if cursor == 0:
            return found


class TestGlobMatchAgreesWithRedis:
    @LIVE
    @given(case=_built_pattern(), others=random_keys)
    def test_built_patterns_scan(
        self, client: redis.Redis, case: tuple[bytes, list[bytes]], others: list[bytes]
    ) -> None:
        pattern, built = case
        keys = {*built, *others}
        _store(client, keys)
        glob = compile_pattern(pattern)
        assert _scan_match(client, pattern) == {k for k in keys if glob.match(k)}

    @LIVE
    @given(pattern=raw_patterns, keys=random_keys)
    @example(pattern=b"*", keys=[b"", b"a"])
    @example(pattern=b"**", keys=[b"", b"a"])
    @example(pattern=b"[]a]", keys=[b"]", b"a]", b"xa]"])
    @example(pattern=b"[^]a]", keys=[b"]", b"xa]", b"\na]"])
    @example(pattern=b"[a-]]", keys=[b"]", b"^", b"a", b"-"])
    def test_raw_patterns_scan(
        self, client: redis.Redis, pattern: bytes, keys: list[bytes]
    ) -> None:
        try:
            glob = compile_pattern(pattern)
        except InvalidPatternError:
            return  # refused patterns are covered by the reference test below
        _store(client, set(keys))
        assert _scan_match(client, pattern) == {k for k in keys if glob.match(k)}


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason="the reference models x86-64 Redis, where C char is signed",
)
class TestReferencePortAgreesWithRedis:
    """redis_glob_match, including on patterns validation refuses, against ``KEYS``."""

    @LIVE
    @given(pattern=raw_patterns, keys=random_keys)
    @example(pattern=b"[a-\xff]", keys=[b"\x00", b"\xff", b"b", b"\x80"])
    @example(pattern=b"[ab", keys=[b"a", b"ab", b"["])
    @example(pattern=b"a\\", keys=[b"a\\", b"a"])
    @example(pattern=b"[^", keys=[b"x", b"\n"])
    @example(pattern=b"[a-]", keys=[b"^", b"-", b"a"])
    def test_keys(self, client: redis.Redis, pattern: bytes, keys: list[bytes]) -> None:
        stored = set(keys)
        _store(client, stored)
        expected = {k for k in stored if redis_glob_match(pattern, k)}
        if pattern == b"*":
            expected = stored  # KEYS skips matching for "*", so even "" is reported
        assert set(client.keys(pattern)) == expected


class TestEdgeCasesLive:
    def test_empty_key_only_for_a_lone_star(self, client: redis.Redis) -> None:
        _store(client, {b"", b"a"})
        assert _scan_match(client, b"*") == {b"", b"a"}
        assert compile_pattern(b"*").match(b"")
        assert _scan_match(client, b"**") == {b"a"}
        assert not compile_pattern(b"**").match(b"")

    def test_newline_nul_and_high_bytes(self, client: redis.Redis) -> None:
        keys = {b"k:\n", b"k:\x00", b"k:\xff", b"k:\x80\x81", b"k:\xc3\xa9", b"k:"}
        _store(client, keys)
        for pattern in (b"k:?", b"k:*", b"k:[^a]", b"k:[\x80-\xff]*", b"k:??", b"k:[\n\x00]"):
            glob = compile_pattern(pattern)
            assert _scan_match(client, pattern) == {k for k in keys if glob.match(k)}, pattern
