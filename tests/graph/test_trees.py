"""Canonical computation-tree ids: collision-free, isomorphism-exact, isolated nodes kept."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dsdistill.methods.mirage.trees import coarsen_labels, compute_tree_ids, transactions


def mirage_python_code(label: int, children: list[tuple[int, int]]) -> int:
    """The official NCI1/IMDB-B encoding (``get_can_lab_tree``): children are (code, edge label)."""
    if not children:
        return int(f"1{label + 2}0")
    return int("1" + str(label + 2) + "".join(sorted(f"{code}{edge + 2}" for code, edge in children)) + "0")


def brute_force(labels: list[int], adj: list[list[tuple[int, int]]], v: int, depth: int) -> tuple:
    """Unrolled tree of ``v`` as a nested sorted tuple (the definition the ids must match)."""
    if depth == 0:
        return (labels[v], ())
    return (labels[v], tuple(sorted((e, brute_force(labels, adj, u, depth - 1)) for u, e in adj[v])))


def test_trees_that_mirage_digit_codes_conflate_get_different_ids(graph_tools):
    # root 0 with child 10, and root 19 with child 0 (one edge type): GRAPH.md's collision
    official_a = mirage_python_code(0, [(mirage_python_code(10, []), 0)])
    official_b = mirage_python_code(19, [(mirage_python_code(0, []), 0)])
    assert official_a == official_b == 12112020  # the official encoding collides ...
    edge_index = graph_tools["undirected"]([(0, 1), (2, 3)])
    index = compute_tree_ids(torch.tensor([0, 10, 19, 0]), edge_index, None, depth=1)
    assert index.node_tree[0] != index.node_tree[2]  # ... the interned ids do not
    assert index.tree(int(index.node_tree[0]))[0] == [0, 10]
    assert index.tree(int(index.node_tree[2]))[0] == [19, 0]


def test_isolated_nodes_are_kept_as_single_node_trees(graph_tools):
    edge_index = graph_tools["undirected"]([(0, 1)])
    index = compute_tree_ids(torch.tensor([1, 1, 3]), edge_index, None, depth=2)
    trans = transactions(index.node_tree, torch.tensor([0, 3]))
    isolated = int(index.node_tree[2])
    assert isolated in trans[0] and len(trans[0]) == 2
    assert index.tree(isolated) == ([3], [], [])


def test_materialised_tree_is_the_unrolling_with_child_to_parent_edges(graph_tools):
    # triangle 0-1-2 plus pendant 3 on node 0, edge labels differ on the pendant edge
    edge_index = graph_tools["undirected"]([(0, 1), (1, 2), (2, 0), (0, 3)])
    edge_label = torch.tensor([0, 0, 0, 1, 0, 0, 0, 1])
    index = compute_tree_ids(torch.tensor([5, 6, 6, 7]), edge_index, edge_label, depth=2)
    labels, edges, elabels = index.tree(int(index.node_tree[0]))
    assert labels[0] == 5 and len(labels) == 1 + 3 + (2 + 2 + 1)  # root, 3 neighbours, their neighbours
    assert index.tree_size(int(index.node_tree[0])) == (len(labels), len(edges))
    parents = {child: parent for child, parent in edges}
    assert 0 not in parents and len(parents) == len(labels) - 1  # every non-root node has one parent
    assert sorted(elabels).count(1) == 2  # the pendant edge appears at depth 1 and again under node 3's ... root


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 7), st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 1)), max_size=10),
       st.lists(st.integers(0, 11), min_size=7, max_size=7), st.integers(0, 3))
def test_ids_are_equal_exactly_for_isomorphic_unrollings(n, raw_edges, raw_labels, depth):
    pairs = sorted({(min(a, b), max(a, b), e) for a, b, e in raw_edges if a < n and b < n and a != b})
    labels = raw_labels[:n]
    adj: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    src, dst, lab = [], [], []
    for a, b, e in pairs:
        adj[a].append((b, e))
        adj[b].append((a, e))
        src += [a, b]
        dst += [b, a]
        lab += [e, e]
    index = compute_tree_ids(torch.tensor(labels), torch.tensor([src, dst], dtype=torch.int64).reshape(2, -1),
                             torch.tensor(lab, dtype=torch.int64), depth)
    truth = [brute_force(labels, adj, v, depth) for v in range(n)]
    for u in range(n):
        for v in range(n):
            assert (index.node_tree[u] == index.node_tree[v]) == (truth[u] == truth[v])


def test_coarsen_labels_keeps_the_frequent_ones_and_averages_the_rest():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3])
    coarse, vocab = coarsen_labels(labels, torch.eye(4), 2)
    assert coarse.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert torch.allclose(vocab[2], torch.tensor([0, 0, 0.5, 0.5]))


def test_occurrence_is_the_same_tree_with_the_representatives_degrees(graph_tools):
    # nodes 0 and 4 have the same depth-1 tree (label 5 with one label-6 child) but that child has
    # degree 2 under node 0 and degree 1 under node 4: the stored leaf degree is node 0's
    edge_index = graph_tools["undirected"]([(0, 1), (1, 2), (4, 3)])
    index = compute_tree_ids(torch.tensor([5, 6, 7, 6, 5]), edge_index, None, depth=1)
    t = int(index.node_tree[0])
    assert int(index.node_tree[4]) == t and index.representative(t) == 0
    labels, edges, elabels, degrees = index.occurrence(t)
    assert (labels, edges, elabels) == index.tree(t)
    assert degrees == [1, 2]
    for tree in range(index.num_trees):
        labels, edges, _, degrees = index.occurrence(tree)
        canonical = index.tree(tree)
        assert sorted(labels) == sorted(canonical[0]) and len(edges) == len(canonical[1])
        children = [sum(1 for _, p in edges if p == i) for i in range(len(labels))]
        assert all(d == c for d, c in zip(degrees, children) if c)  # internal nodes: degree = children
