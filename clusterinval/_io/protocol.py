"""The engine's only door to a node, and to the set of nodes of a cluster.

Two implementations: ``redis_io`` on redis-py (the real thing) and ``memory`` (an in-memory
cluster with injectable faults, for fast, deterministic engine tests; a contract test holds it to
what a real server does).

Errors are redis-py's exception types, raised or returned exactly where a real server would put
them: ``MovedError``/``AskError``/``TryAgainError`` as per-command replies of a pipeline,
``ConnectionError``/``TimeoutError`` raised for a node that is gone or silent,
``ClusterDownError`` and friends raised for a command the node refuses. Each call is one round
trip unless it says otherwise; none retries and none times out on its own: retrying and the
deadline of each call are the engine's policy, not the seam's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from clusterinval._core.values import (
    ClusterView,
    NodeAddr,
    NodeOwnership,
    Replication,
    ScanStep,
    SlotBatch,
    SlotWalkStep,
    TagTake,
)

__all__ = [
    "ClusterIO", "KeyCommand", "NodeIO", "OnReply", "PendingReplies", "ScriptName",
    "StagedKeyCommands", "TagStore", "TakesInFlight", "WalkStepHandler",
]

# The server-side steps a node may run (see ``lua.py``).
ScriptName = Literal["batch", "scan_step", "slot_walk"]
# UNLINK deletes; EXISTS counts what a dry run would delete, through the same routing.
KeyCommand = Literal["UNLINK", "EXISTS"]
# Told each reply of a pipelined call as it is read: its index and the reply (or error) itself.
OnReply = Callable[[int, Any], None]
# Told each slot-walk call's figures, with the slot range it went over.
WalkStepHandler = Callable[[int, int, SlotWalkStep], None]


class TagStore(Protocol):
    """A node's side of the tag index: the member sets of the tags whose slot it serves.

    Every call names keys of one slot (a tag's index keys share its hash tag) and raises the
    node's refusal (MOVED, ASK, TRYAGAIN, CLUSTERDOWN...) as redis-py's exception, like a real
    server; the engine routes and retries.
    """

    async def add(self, set_key: bytes, members: Sequence[bytes], ttl_ms: int | None) -> int:
        """Add ``members`` to a member set, whose TTL becomes at least ``ttl_ms`` (None: the
        set must not expire); the number of members that were new."""
        ...

    async def take(self, set_key: bytes, takes_key: bytes, taken_key: bytes, *, keep_ms: int,
                   inline: int) -> TagTake:
        """Atomically move a member set to ``taken_key`` (kept ``keep_ms`` at most) and register
        it in ``takes_key``; the members come back when there are at most ``inline``."""
        ...

    async def done(self, takes_key: bytes, taken_key: bytes) -> None:
        """Drop a taken set whose members are all gone, and its registration."""
        ...

    async def take_many(self, takes: Sequence[tuple[bytes, bytes, bytes]],
                        finished: Sequence[tuple[bytes, bytes]], *, keep_ms: int, inline: int
                        ) -> list[TagTake | BaseException]:
        """In one exchange: drop the ``finished`` taken sets (``(takes_key, taken_key)`` each, as
        ``done``; a failure leaves that set registered), then ``take`` each ``(set_key,
        takes_key, taken_key)``; per take, its result or the error it met."""
        ...

    async def begin_take_many(self, takes: Sequence[tuple[bytes, bytes, bytes]],
                              finished: Sequence[tuple[bytes, bytes]], *, keep_ms: int,
                              inline: int) -> TakesInFlight:
        """``take_many`` sent now and read later, so one task can keep several nodes busy."""
        ...

    async def scan(self, key: bytes, cursor: int, count: int) -> tuple[int, list[bytes]]:
        """One ``SSCAN key cursor COUNT count``."""
        ...

    async def restore(self, set_key: bytes, members: Sequence[bytes]) -> int:
        """Put members back into a member set (SADD); the number that were new."""
        ...

    async def remove(self, set_key: bytes, members: Sequence[bytes]) -> int:
        """Remove members from a member set (SREM); the number removed."""
        ...


class TakesInFlight(Protocol):
    """A ``take_many`` exchange whose replies are still to be read."""

    async def results(self) -> list[TagTake | BaseException]:
        """Per take, its result or the error it met (the connection goes back)."""
        ...

    async def abandon(self) -> None:
        """Give the connection back without the results (read briefly, or dropped)."""
        ...


class NodeIO(Protocol):
    """One node of the cluster, as the engine uses it."""

    @property
    def addr(self) -> NodeAddr:
        """The node's address."""
        ...

    @property
    def tags(self) -> TagStore:
        """The node's side of the tag index."""
        ...

    async def ttls(self, keys: Sequence[bytes]) -> list[Any]:
        """``PTTL`` of each key, pipelined: an int, or the error instance the node answered."""
        ...

    async def write(self, key: bytes, value: bytes, ttl_ms: int | None) -> Any:
        """``SET key value [PX ttl_ms]``: the reply, or the error instance the node answered."""
        ...

    async def cluster_view(self) -> ClusterView | None:
        """Slot ownership as this node sees it (CLUSTER SLOTS).

        A standalone server answers with a view in which it owns every slot (``standalone``);
        None when the node knows no slots yet.
        """
        ...

    async def ownership(self) -> NodeOwnership:
        """What the node itself serves, in migration, and its config epoch (CLUSTER NODES)."""
        ...

    async def dbsize(self) -> int:
        """Keys the node holds."""
        ...

    async def scan(self, cursor: int, match: bytes, count: int) -> tuple[int, list[bytes]]:
        """One ``SCAN cursor MATCH match COUNT count``."""
        ...

    async def keys_in_slot(self, slot: int, limit: int) -> list[bytes]:
        """``CLUSTER GETKEYSINSLOT slot limit``."""
        ...

    async def replication(self) -> Replication:
        """The node's replication offset (a replica: applied offset and link state)."""
        ...

    async def key_commands(
        self, command: KeyCommand, key_lists: Sequence[Sequence[bytes]], *, window: int,
        on_reply: OnReply | None = None,
    ) -> list[Any]:
        """One ``command`` per key list, pipelined with at most ``window`` in flight.

        Each reply is an int, or the error instance the node answered (MOVED, ASK, TRYAGAIN...).
        ``on_reply`` sees each reply as it is read, so a call cut short (deadline, lost
        connection) still tells which commands the node confirmed.
        """
        ...

    async def asking(self, command: KeyCommand, keys: Sequence[bytes]) -> Any:
        """``ASKING`` then ``command keys``: the reply (an int) or the error instance."""
        ...

    async def script_ready(self, name: ScriptName) -> bool:
        """Whether the node runs the named server-side step (loaded on first ask).

        False where the server refuses it (older than 7.0, ACL without scripting), never an
        error; the engine then takes the plain path.
        """
        ...

    async def batch_calls(
        self, calls: Sequence[Sequence[SlotBatch]], *, window: int,
        on_reply: OnReply | None = None,
    ) -> list[Any]:
        """Run the per-slot UNLINK batch step once per call, pipelined.

        Each reply is ``(removed, failed)``, ``failed`` being the indexes (into the call) of the
        batches the node could not delete (slot not served), or the error instance.
        """
        ...

    async def scan_step(self, cursor: int, match: bytes, count: int, *,
                        on_late: Callable[[ScanStep], None] | None = None,
                        prefixes: Sequence[bytes] = (), empty_key: bool = False) -> ScanStep:
        """One server-side SCAN step that unlinks what it finds.

        With ``prefixes``, MATCH only narrows the SCAN and the keys that start with one of the
        prefixes are deleted (``empty_key``: the empty key counts for an empty prefix), counted
        per prefix like a slot walk. When the call is cancelled after the node ran the step,
        ``on_late`` still gets its figures (read briefly after the cancellation), so the
        deletions are counted.
        """
        ...

    async def slot_walk(
        self, prefixes: Sequence[bytes], ranges: deque[tuple[int, int]], *, budget: int,
        cap: int, on_step: WalkStepHandler, max_calls: int, empty_key: bool, probe: bytes = b"",
    ) -> None:
        """Walk slot ranges server-side, deleting keys by prefix; at most ``max_calls`` calls.

        Each call reads whole slots until about ``budget`` keys, skipping slots over ``cap``
        keys (reported big) and slots the node does not serve or is migrating (unproven: the
        check and the read are one atomic step). ``ranges`` always holds what is left, also when
        this raises, so a retry resumes where the walk stopped; a call cancelled after the node
        ran it is still read and handed to ``on_step``. ``empty_key``: whether the empty key
        matches (the pattern "*" alone). ``probe``: for a call of one slot, a key of that slot
        that does not exist, by which the node proves it serves the slot more cheaply.
        """
        ...


class PendingReplies(Protocol):
    """Commands a node was sent and whose replies are still to be read."""

    async def replies(self) -> list[Any]:
        """Every reply in order (a value or the error instance), each also told to the
        ``on_reply`` given when they were sent; the connection is given back."""
        ...

    async def abandon(self) -> None:
        """Stop without reading on: replies already in flight are read briefly (and told to
        ``on_reply``), so what the node did is counted; the connection is given back."""
        ...


@runtime_checkable
class StagedKeyCommands(Protocol):
    """An optional capability of a node: send key commands now, read their replies later.

    One task can then send to several nodes and wait for all of them at once, with no task per
    node; what a call gets from it is exactly what ``key_commands`` would give.
    """

    def can_begin(self) -> bool:
        """Whether ``begin_key_commands`` would find a connection ready now: no connecting and
        no waiting for one, so a node that does not answer cannot hold up the others."""
        ...

    async def begin_key_commands(
        self, command: KeyCommand, key_lists: Sequence[Sequence[bytes]], *,
        on_reply: OnReply | None = None,
    ) -> PendingReplies:
        """Send one ``command`` per key list, all at once (one write)."""
        ...


class ClusterIO(Protocol):
    """The connections to a cluster's nodes."""

    def node(self, addr: NodeAddr) -> NodeIO:
        """The node at ``addr`` (connected lazily)."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...
