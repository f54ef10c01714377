"""Events as values: the wire format round-trips any key exactly, and apply_event removes exactly
what Redis's own glob would match (no server needed)."""

from __future__ import annotations

import json
import threading

import pytest

from clusterinval._core.glob import redis_glob_match
from clusterinval._core.slots import hash_tag
from clusterinval.errors import InvalidInputError
from clusterinval.events import EVENTS_CHANNEL, InvalidationEvent, apply_event


class TestPayload:
    def test_round_trip_of_binary_keys_and_patterns(self) -> None:
        ev = InvalidationEvent(
            operation="user",
            keys=(b"user:1", b"\x00\xff\xfe raw", "caf\u00e9".encode(), b""),
            patterns=(b"user:1:*", b"a[\\]]?\x80*"),
            deleted=7,
            complete=False,
            published_at=1700000000.25,
        )
        back = InvalidationEvent.from_payload(ev.to_payload())
        assert back == ev
        assert not back.resync

    def test_payload_is_compact_json_with_base64(self) -> None:
        payload = InvalidationEvent("op", keys=(b"k",), patterns=(b"p*",), deleted=1).to_payload()
        assert b" " not in payload
        data = json.loads(payload)
        assert data == {"v": 1, "operation": "op", "keys": ["aw=="], "patterns": ["cCo="],
                        "deleted": 1, "complete": True, "at": None}

    @pytest.mark.parametrize("payload", [
        b"not json", b"[]", b'{"v": 2}', b'{"v": 1}',
        b'{"v":1,"operation":"o","keys":["!!"],"patterns":[],"deleted":0,"complete":true}',
        b'{"v":1,"operation":"o","keys":[],"patterns":[],"deleted":"1","complete":true}',
        b'{"v":1,"operation":"o","keys":[1],"patterns":[],"deleted":1,"complete":true}',
    ])
    def test_malformed_payloads_are_refused(self, payload: bytes) -> None:
        with pytest.raises(InvalidInputError):
            InvalidationEvent.from_payload(payload)

    def test_resync_events_are_never_published(self) -> None:
        ev = InvalidationEvent.resync_event("reconnected")
        assert ev.resync and ev.operation == "resync" and ev.reason == "reconnected"
        with pytest.raises(InvalidInputError):
            ev.to_payload()

    def test_channel_is_hash_tagged(self) -> None:
        assert hash_tag(EVENTS_CHANNEL) == b"events"


class TestApplyEvent:
    def test_exact_keys_only(self) -> None:
        cache: dict[object, int] = {"user:1": 1, b"user:2": 2, "user:3": 3, ("tuple",): 4}
        ev = InvalidationEvent("user", keys=(b"user:1", b"user:2", b"absent"))
        assert apply_event(cache, ev) == 2
        assert cache == {"user:3": 3, ("tuple",): 4}

    def test_patterns_use_redis_glob_semantics(self) -> None:
        keys = ["user:1", "user:10", "user:1:profile", "USER:1", "user:a", "user:[1]",
                "user:*", "x\nuser:1", "caf\u00e9:1"]
        patterns = [b"user:?", b"user:\\*", b"caf\xc3\xa9:[0-9]", b"user:[^a0-9]*"]
        cache = dict.fromkeys(keys, 0)
        removed = apply_event(cache, InvalidationEvent("p", patterns=tuple(patterns)))
        expected_gone = {k for k in keys
                         if any(redis_glob_match(p, k.encode()) for p in patterns)}
        assert expected_gone == {"user:1", "user:a", "user:*", "user:[1]", "caf\u00e9:1"}
        assert removed == len(expected_gone)
        assert set(cache) == set(keys) - expected_gone

    def test_binary_keys_match_byte_for_byte(self) -> None:
        cache = {b"k:\xff\x00": 1, b"k:\xfe": 2, "k:\u00ff": 3}
        assert apply_event(cache, InvalidationEvent("b", patterns=(b"k:\xff*",))) == 1
        assert set(cache) == {b"k:\xfe", "k:\u00ff"}

    def test_keys_and_patterns_together(self) -> None:
        cache = dict.fromkeys(["a:1", "a:2", "b:1", "c"], 0)
        ev = InvalidationEvent("m", keys=(b"c",), patterns=(b"a:*",))
        assert apply_event(cache, ev) == 3
        assert set(cache) == {"b:1"}

    def test_resync_clears_everything(self) -> None:
        cache = {"a": 1, ("not", "a", "key"): 2}
        assert apply_event(cache, InvalidationEvent.resync_event("reconnected")) == 2
        assert cache == {}

    def test_a_pattern_it_cannot_read_clears_everything(self) -> None:
        cache = {"a": 1, "b": 2}
        assert apply_event(cache, InvalidationEvent("x", patterns=(b"broken[",))) == 2
        assert cache == {}

    def test_concurrent_writers_do_not_break_it(self) -> None:
        cache: dict[str, int] = {f"k:{i}": i for i in range(20_000)}
        stop = threading.Event()

        def churn() -> None:
            i = 0
            while not stop.is_set():
                cache[f"other:{i % 500}"] = i
                cache.pop(f"k:{i % 20_000}", None)
                i += 1

        t = threading.Thread(target=churn)
        t.start()
        try:
            apply_event(cache, InvalidationEvent("k", patterns=(b"k:*",)))
        finally:
            stop.set()
            t.join(10)
        assert not any(k.startswith("k:") for k in list(cache))
