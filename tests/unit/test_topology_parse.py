"""Parsing what nodes say about slots."""

from __future__ import annotations

from clusterinval._core.cluster_text import parse_cluster_slots, parse_myself_line
from clusterinval._core.values import NodeAddr

NODES = """\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [5461->-b2] [7000-<-c3]
b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master - 0 0 3 connected 10923-16383 42
"""


def test_myself_line() -> None:
    own = parse_myself_line(NODES)
    assert own.owned.ranges() == [(0, 5460)]
    assert list(own.migrating) == [5461] and list(own.importing) == [7000]
    assert own.stable.ranges() == [(0, 5460)]


def test_myself_migrating_owned_slot_not_stable() -> None:
    text = NODES.replace("[5461->-b2]", "[100->-b2]")
    own = parse_myself_line(text)
    assert 100 in own.owned and 100 not in own.stable


def test_raw_cluster_slots() -> None:
    reply = [
        [0, 8191, [b"127.0.0.1", 7000, b"id1"], [b"127.0.0.1", 7003, b"id4"]],
        [8192, 16383, [b"", 7001, b"id2"]],
    ]
    view = parse_cluster_slots(reply, NodeAddr("10.9.9.9", 7001))
    assert view is not None
    assert view.owner(0) == NodeAddr("127.0.0.1", 7000)
    assert view.owner(16383) == NodeAddr("10.9.9.9", 7001)  # empty host: the node we asked
    assert view.replicas[NodeAddr("127.0.0.1", 7000)] == (NodeAddr("127.0.0.1", 7003),)
    assert len(view.slots_of(NodeAddr("127.0.0.1", 7000))) == 8192
    assert len(view.unowned()) == 0 and len(view.primaries) == 2


def test_partial_cluster_slots_leaves_unowned() -> None:
    view = parse_cluster_slots([[0, 99, [b"h", 1, b"x"]]], NodeAddr("h", 1))
    assert view is not None and len(view.unowned()) == 16384 - 100


def test_empty_reply_means_ask_another_node() -> None:
    assert parse_cluster_slots([], NodeAddr("h", 1)) is None
