"""Requests: validated like invalidate(), encoded losslessly; queue key names share one slot."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterinval import InvalidInputError, InvalidOperationNameError, InvalidPatternError
from clusterinval._core.slots import key_slot
from clusterinval.queue.request import RequestDecodeError, decode, encode, new_request
from clusterinval.queue.spool import Spool
from clusterinval.queue.stream import StreamNames


class TestRequest:
    def test_round_trip_keeps_exact_bytes(self) -> None:
        req = new_request(["a", b"\xffraw", "café"], ["user:1:*", "list"], "project")
        back = decode(encode(req))
        assert back == req
        assert b"\xffraw" in back.keys and "café".encode() in back.keys

    def test_tags_travel_alone_or_with_keys(self) -> None:
        req = new_request(None, None, "user", tags=["user:42", "user:42", b"p:\xff"])
        assert req.tags == (b"user:42", b"p:\xff") and req.keys == () and req.patterns == ()
        assert decode(encode(req)) == req
        with pytest.raises(InvalidInputError):
            new_request(None, None, "user", tags=["bad{tag}"])

    def test_literal_pattern_kept_once(self) -> None:
        req = new_request(["list"], ["list"], "op")
        assert req.patterns == (b"list",) and req.keys == ()

    @pytest.mark.parametrize(("keys", "patterns", "op", "error"), [
        (None, None, "op", InvalidInputError),
        (None, ["user:[1"], "op", InvalidPatternError),
        (None, ["*"], "op", InvalidPatternError),
        ([""], None, "op", InvalidInputError),
        (["k"], None, "bad name!", InvalidOperationNameError),
        ("k", None, "op", InvalidInputError),
    ])
    def test_bad_input_is_refused(self, keys: object, patterns: object, op: str,
                                  error: type[Exception]) -> None:
        with pytest.raises(error):
            new_request(keys, patterns, op)  # type: ignore[arg-type]

    def test_match_all_needs_permission_and_travels(self) -> None:
        req = new_request(None, ["*"], "op", allow_match_all=True)
        assert decode(encode(req)).allow_match_all is True

    def test_ids_are_unique(self) -> None:
        assert len({new_request(["k"], None, "op").id for _ in range(100)}) == 100

    @pytest.mark.parametrize("fields", [
        {}, {b"v": b"9"}, {b"v": b"1", b"id": b"x", b"op": b"op", b"at": b"1", b"body": b"{"},
        {b"v": b"1", b"id": b"x", b"op": b"op", b"at": b"1", b"body": b'{"k":[],"p":[]}'},
        {b"v": b"1", b"id": b"x", b"op": b"no way", b"at": b"1", b"body": b'{"k":["a"]}'},
    ])
    def test_malformed_entries(self, fields: dict[bytes, bytes]) -> None:
        with pytest.raises(RequestDecodeError):
            decode(fields)


class TestNames:
    @pytest.mark.parametrize("stream", ["clusterinval:{queue}", "plain-name", "{t}x"])
    def test_every_key_in_the_stream_slot(self, stream: str) -> None:
        names = StreamNames.of(stream)
        slot = key_slot(stream.encode())
        for key in (names.dead, names.seen("r1"), names.done("r1")):
            assert key_slot(key.encode()) == slot

    @pytest.mark.parametrize("stream", ["", "a{}b"])
    def test_bad_names(self, stream: str) -> None:
        with pytest.raises(InvalidInputError):
            StreamNames.of(stream)


@pytest.mark.anyio
class TestSpool:
    async def test_put_take_remove(self, tmp_path: Path) -> None:
        spool = Spool(tmp_path / "sub" / "q.spool")
        reqs = [new_request([f"k{i}"], None, "op") for i in range(5)]
        for req in reqs:
            await spool.put(req)
        await spool.put(reqs[0])  # the same id twice is stored once
        assert (await spool.stats())[0] == 5
        rows = await spool.take(3)
        assert [r.request for r in rows] == reqs[:3]
        await spool.remove([r.id for r in rows])
        again = Spool(tmp_path / "sub" / "q.spool")  # another opener sees the same file
        count, oldest = await again.stats()
        assert count == 2 and oldest == reqs[3].submitted_at
        spool.close()
        again.close()
