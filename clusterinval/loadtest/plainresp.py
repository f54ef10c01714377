"""A minimal RESP client over plain sockets, for a benchmark's set-up between timed calls.

The small-call benchmark re-creates its keys before every timed call and checks them after. Done
through one of the measured clients, that work would run the client's own code (command packing,
slot routing, pipelines, reply parsing) right before its timed call, and time that client warm
and the other cold. This client shares no code with either: it packs commands by hand, sends
each key to the primary the parent found for it, and reads one-line replies.

Only what the set-up needs: commands with one-line replies (``+OK``, ``:<n>``), ``AUTH`` with
the URL's credentials, TLS for ``rediss://`` (with the URL's ``ssl_ca_certs``, ``ssl_certfile``,
``ssl_keyfile`` and ``ssl_cert_reqs``, read as redis-py reads them). An error reply (``MOVED``
when the cluster changed under the benchmark, ``WRONGPASS``) raises ``PlainRespError``.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream
from redis.connection import parse_url

__all__ = ["PlainRespError", "PlainSetter"]

# The longest one-line reply this client reads (an error line included).
_MAX_LINE = 4096


class PlainRespError(RuntimeError):
    """A node answered a set-up command with an error reply."""


def _pack(*parts: bytes) -> bytes:
    """One command in RESP."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class _Node:
    __slots__ = ("reader", "stream")

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.reader = BufferedByteReceiveStream(stream)

    async def line(self) -> bytes:
        reply = await self.reader.receive_until(b"\r\n", _MAX_LINE)
        if reply[:1] == b"-":
            raise PlainRespError(reply[1:].decode("utf-8", "replace"))
        return reply


class PlainSetter:
    """Runs one-key commands on the keys' owners; connections opened on first use."""

    def __init__(self, url: str, owners: Mapping[str, tuple[str, int]]) -> None:
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self._tls = _tls_context(options) if url.startswith("rediss:") else None
        self._auth: tuple[bytes, ...] = ()
        if options.get("password") is not None:
            self._auth = (str(options.get("username") or "default").encode(),
                          str(options["password"]).encode())
        self._owners = dict(owners)
        self._nodes: dict[tuple[str, int], _Node] = {}

    async def _node(self, addr: tuple[str, int]) -> _Node:
        node = self._nodes.get(addr)
        if node is None:
            stream: ByteStream
            if self._tls is None:
                stream = await anyio.connect_tcp(addr[0], addr[1])
            else:
                # Redis does not answer a TLS close_notify: closing must not wait for one.
                stream = await anyio.connect_tcp(addr[0], addr[1], tls=True,
                                                 ssl_context=self._tls,
                                                 tls_standard_compatible=False)
            node = self._nodes[addr] = _Node(stream)
            if self._auth:
                await stream.send(_pack(b"AUTH", *self._auth))
                await node.line()
        return node

    async def each(self, command: bytes, keys: Sequence[str], *args: bytes) -> int:
        """``command key *args`` for every key, pipelined per owner; the integer replies summed
        (0 for ``+OK``)."""
        by_owner: dict[tuple[str, int], list[str]] = {}
        for key in keys:
            by_owner.setdefault(self._owners[key], []).append(key)
        sent: list[tuple[_Node, int]] = []
        for addr, owned in by_owner.items():
            node = await self._node(addr)
            await node.stream.send(b"".join(_pack(command, k.encode(), *args) for k in owned))
            sent.append((node, len(owned)))
        total = 0
        for node, count in sent:
            for _ in range(count):
                reply = await node.line()
                if reply[:1] == b":":
                    total += int(reply[1:])
        return total

    async def __aenter__(self) -> PlainSetter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection."""
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            await node.stream.aclose()


def _tls_context(options: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    if str(options.get("ssl_cert_reqs", "required")).lower() in ("none", "cert_none"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
