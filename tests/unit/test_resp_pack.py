"""RESP packing: the fast paths give byte-for-byte what the protocol says."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clusterinval._io.resp import pack, pack_args, pack_with


def reference(*args: bytes | int | str) -> bytes:
    """RESP as the protocol describes it, one argument at a time."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out += b"$" + str(len(b)).encode() + b"\r\n" + b + b"\r\n"
    return out


arg = st.one_of(st.binary(max_size=40), st.integers(-10**6, 10**6), st.text(max_size=10))


@given(st.lists(arg, min_size=1, max_size=80))
def test_pack_matches_the_protocol(args: list[bytes | int | str]) -> None:
    # Both sides of the short/long threshold, empty values, CRLF and '$' inside values.
    assert pack(*args) == reference(*args)


def test_pack_of_many_keys_with_awkward_bytes() -> None:
    keys = [b"", b"\r\n", b"$3", b"*1", "é".encode(), b"\x00" * 3] * 50
    assert pack(b"UNLINK", *keys) == reference(b"UNLINK", *keys)


@given(st.lists(arg, min_size=1, max_size=30), st.lists(st.binary(max_size=20), max_size=60))
def test_a_tail_packed_once_gives_the_same_command(head: list[bytes | int | str],
                                                  tail: list[bytes]) -> None:
    assert pack_with(pack_args(tail), len(tail), *head) == reference(*head, *tail)
