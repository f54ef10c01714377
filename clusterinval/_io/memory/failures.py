"""Node failures in the in-memory cluster: failover, kill and revive, freeze, slowness, links."""

from __future__ import annotations

from clusterinval._core.values import NodeAddr
from clusterinval._io.memory.node_state import GONE, PRIMARY, REPLICA
from clusterinval._io.memory.topology import ClusterState

__all__ = [
    "failover",
    "freeze",
    "kill",
    "replication_link",
    "revive",
    "script_support",
    "slow",
    "thaw",
]


def failover(cluster: ClusterState, primary: NodeAddr, keep_keys: bool) -> NodeAddr:
    """Promote a replica of ``primary`` (or a new node, with no live replica); the new primary."""
    nodes = cluster.nodes
    old = cluster.primary_state(primary)
    candidates = [nodes[r] for r in cluster.replicas_of(primary) if not nodes[r].killed]
    if candidates:
        new = candidates[0]  # it keeps what it holds, even if its link was down
        new.role, new.primary, new.link_up = PRIMARY, None, True
    else:
        new = nodes[cluster.new_node(PRIMARY)]
        if keep_keys:
            new.load(old)
    cluster.current_epoch = max([cluster.current_epoch, *(n.epoch for n in nodes.values())])
    cluster.current_epoch += 1
    new.epoch = cluster.current_epoch
    for s, o in enumerate(cluster.owners):
        if o == primary:
            cluster.owners[s] = new.addr
    old.migrating.clear()
    old.importing.clear()
    if candidates:
        old.role, old.primary = REPLICA, new.addr
        if not old.killed:
            old.load(new)
    else:
        old.role, old.primary, old.killed = GONE, None, True
        old.wake()
    for r in nodes.values():
        if r.role == REPLICA and r.primary == primary:
            r.primary = new.addr
            if r.link_up and not r.killed:
                r.load(new)
                r.repl_offset = new.repl_offset
    return new.addr


def kill(cluster: ClusterState, node: NodeAddr) -> None:
    """Stop ``node``: every call to it, also one waiting on it, raises ConnectionError."""
    state = cluster.node_state(node)
    state.killed = True
    state.wake()


def revive(cluster: ClusterState, node: NodeAddr) -> None:
    """Start a killed node again, with the keys it had (a replica resyncs from its primary)."""
    state = cluster.node_state(node)
    if state.role == GONE:
        raise ValueError(f"{node} was replaced and left the cluster")
    state.killed = False
    if state.role == REPLICA and state.primary is not None and state.link_up:
        primary = cluster.nodes[state.primary]
        state.load(primary)
        state.repl_offset = primary.repl_offset


def freeze(cluster: ClusterState, node: NodeAddr) -> None:
    """Make calls to ``node`` wait until ``thaw``; only the caller's own timeouts end them."""
    cluster.node_state(node).frozen = True


def thaw(cluster: ClusterState, node: NodeAddr) -> None:
    """Let a frozen node's calls run."""
    state = cluster.node_state(node)
    state.frozen = False
    state.wake()


def slow(cluster: ClusterState, node: NodeAddr, seconds: float) -> None:
    """Delay every call to ``node`` by ``seconds`` (0: no delay)."""
    cluster.node_state(node).slow_s = seconds


def replication_link(cluster: ClusterState, replica: NodeAddr, up: bool) -> None:
    """Cut or restore a replica's link; restored, it resyncs its primary's keyspace."""
    state = cluster.node_state(replica)
    if state.role != REPLICA or state.primary is None:
        raise ValueError(f"{replica} is not a replica")
    state.link_up = up
    if up:
        primary = cluster.nodes[state.primary]
        state.load(primary)
        state.repl_offset = primary.repl_offset


def script_support(cluster: ClusterState, node: NodeAddr, supported: bool) -> None:
    """Whether ``node`` runs the server-side steps (False: an old server, or an ACL)."""
    cluster.node_state(node).scripts = supported
