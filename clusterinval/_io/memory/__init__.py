"""An in-memory Redis Cluster behind the same seam as ``redis_io``, with faults a test can inject.

``MemoryCluster`` implements ``ClusterIO``; its nodes (``MemoryNode``) implement ``NodeIO``. It
models what the engine relies on, the way Redis 7.0 does it (``cluster.c`` ``getNodeByQuery``,
``SETSLOT``, failover, the Lua steps of ``lua.py``), and nothing else:

* every node has a keyspace, a config epoch (distinct per node at the start, like
  ``LocalCluster``), its own MIGRATING/IMPORTING slots and a role; replicas mirror their primary
  (every write is applied to them too and advances a replication offset);
* one owner table for the whole cluster: gossip is instant, so every node agrees on who owns a
  slot the moment a ``SETSLOT``, ``ADDSLOTS``/``DELSLOTS`` or failover changes it;
* ``SCAN`` walks a per-node order that no write disturbs, so every key present for the whole
  iteration is returned, once (``scan_repeat=True`` also returns some keys twice, as Redis may);
* key commands get the replies Redis gives: ``CROSSSLOT``, ``MOVED``, ``ASK``, ``TRYAGAIN``,
  ``CLUSTERDOWN``; the Lua steps see the same checks through ``pcall``;
* errors are the instances redis-py's parser makes from the server's error text.

Where it knowingly differs from Redis: a killed node is never marked failed (the cluster acts as
it does within ``cluster-node-timeout``: other nodes keep serving); nothing expires or is evicted;
``COUNT`` is exactly the keys a ``SCAN`` call examines; a call cancelled while its node is frozen
or slow never runs (on a real server a command already sent still runs when the node wakes);
``READONLY`` connections to replicas are not modelled (every key command on a replica is MOVED).

Test controls are plain (synchronous) methods on ``MemoryCluster``; ``on_call`` hooks run before
every node operation, so a test can change the cluster at an exact point of a run.

The modules, from the bottom up:

* ``errors``: the error replies; ``node_state``: one node's keyspace and condition;
* ``topology``: ``ClusterState``, the nodes and the slot-owner table they all share;
* ``controls``: the call log, hooks and injected faults;
* ``commands``: routing checks, key commands and SCAN; ``steps``: the server-side steps;
* ``migration`` and ``failures``: what the test controls of those names do;
* ``node``: ``MemoryNode``; ``cluster``: ``MemoryCluster``.
"""

from clusterinval._io.memory.cluster import MemoryCluster
from clusterinval._io.memory.controls import OPERATIONS, CallHook
from clusterinval._io.memory.errors import redis_error
from clusterinval._io.memory.node import MemoryNode

__all__ = ["OPERATIONS", "CallHook", "MemoryCluster", "MemoryNode", "redis_error"]
