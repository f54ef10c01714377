"""The one-slot listing: a pass fixed to one slot by a hash tag reads that slot with one bounded
``CLUSTER GETKEYSINSLOT``, and the library's own glob decides what matches."""

from __future__ import annotations

from clusterinval._core.planning import ScanPass
from clusterinval._core.values import NodeAddr
from clusterinval._engine.context import RunContext
from clusterinval._engine.keys import KeySink

__all__ = ["SLOT_LIST_LIMIT", "SlotListing"]

# A slot is listed when it holds at most this many keys (one bounded command); a larger slot is
# served by a SCAN of its owner instead.
SLOT_LIST_LIMIT = 5000


class SlotListing:
    """Serves a one-slot pass on the slot's owner."""

    def __init__(self, ctx: RunContext, sink: KeySink) -> None:
        self._ctx = ctx
        self._sink = sink

    async def serve(self, node: NodeAddr, scan_pass: ScanPass, index: int, slot: int) -> bool:
        """List ``slot`` and handle its matches; False when the slot is too big to list."""
        ctx = self._ctx
        io = ctx.topology.node(node)
        # Asking for one key more than the limit tells "too big" without a COUNTKEYSINSLOT.
        keys = await ctx.call(node, lambda: io.keys_in_slot(slot, SLOT_LIST_LIMIT + 1),
                              "CLUSTER GETKEYSINSLOT")
        if len(keys) > SLOT_LIST_LIMIT:
            return False
        tally = ctx.tally.node(node)
        tally.scan_calls += 1
        tally.scanned += len(keys)
        if keys:
            await self._sink.consume(node, scan_pass, index, keys, None)
        return True
