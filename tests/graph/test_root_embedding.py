"""Root embedding of a depth-L computation tree == the node's embedding in its graph (GIN, GAT, and
GCN when the tree carries its nodes' original degrees), and why GCN needs those degrees."""

from __future__ import annotations

import pytest
import torch

from dsdistill.methods.mirage.trees import compute_tree_ids

pytest.importorskip("torch_geometric")
from dsdistill.evaluators.graph_models import build_graph_student  # noqa: E402


@pytest.fixture(scope="module")
def graph(graph_tools):
    """A 9-node graph with a cycle, a triangle, a pendant path and an isolated node."""
    pairs = [(0, 1), (1, 2), (2, 3), (3, 0), (1, 4), (4, 5), (5, 1), (5, 6), (6, 7)]
    return torch.tensor([0, 1, 2, 1, 0, 2, 1, 0, 2]), graph_tools["undirected"](pairs)


def root_and_node_embeddings(kind: str, layers: int, depth: int, labels, edge_index, degrees: bool = True):
    """Embeddings of every node in the graph and of the root of its tree (with or without stored degrees).

    Each node's tree is unrolled around that node itself (not the representative), so the leaves'
    degrees are that node's own; ``test_representative_degrees_are_exact_for_the_representative``
    covers the stored forest.
    """
    vocab = torch.eye(3)
    model = build_graph_student(kind, 3, 2, seed=3, layers=layers, hidden=16)
    with torch.no_grad():
        node = model.node_embed(vocab[labels], edge_index)
        roots = []
        for v in range(len(labels)):
            tl, edges, _, deg = unroll(labels, edge_index, v, depth)
            e = torch.tensor(edges, dtype=torch.int64).reshape(-1, 2).t()
            roots.append(model.node_embed(vocab[torch.tensor(tl)], e, torch.tensor(deg) if degrees else None)[0])
    return node, torch.stack(roots)


def unroll(labels, edge_index, v: int, depth: int):
    """Node ``v``'s own computation tree: relabel so ``v`` is node 0 and reuse the index's unrolling."""
    perm = torch.arange(len(labels))
    perm[0], perm[v] = v, 0  # swap v and 0: v becomes the first node, hence its id's representative
    inverse = torch.argsort(perm)
    index = compute_tree_ids(labels[perm], inverse[edge_index], None, depth)
    return index.occurrence(int(index.node_tree[0]))


@pytest.mark.parametrize("kind", ["gin", "gat"])
@pytest.mark.parametrize("layers,depth", [(2, 2), (1, 2), (2, 3)])
def test_root_embedding_equals_node_embedding(kind, layers, depth, graph):
    node, roots = root_and_node_embeddings(kind, layers, depth, *graph)
    assert torch.allclose(node, roots, atol=1e-5)


def test_more_layers_than_depth_is_not_exact(graph):
    node, roots = root_and_node_embeddings("gin", 3, 2, *graph)
    assert not torch.allclose(node, roots, atol=1e-3)


@pytest.mark.parametrize("layers,depth", [(2, 2), (1, 1), (3, 3), (1, 2)])
def test_gcn_root_embedding_equals_node_embedding_with_original_degrees(layers, depth, graph):
    node, roots = root_and_node_embeddings("gcn", layers, depth, *graph)
    assert torch.allclose(node, roots, atol=1e-5)


def test_gcn_without_degrees_is_exact_only_one_hop_deeper(graph):
    """What the stored degrees fix: with the tree's own in-degrees (leaves 0) GCN needs L >= layers + 1."""
    node, roots = root_and_node_embeddings("gcn", 2, 2, *graph, degrees=False)
    assert not torch.allclose(node, roots, atol=1e-3)
    node, roots = root_and_node_embeddings("gcn", 2, 3, *graph, degrees=False)
    assert torch.allclose(node, roots, atol=1e-5)


def test_gcn_student_matches_pyg_normalisation_on_real_graphs(graph):
    """Without a degree vector the GCN student is PyG's normalised GCNConv (self loops, in-degree)."""
    from torch_geometric.nn import GCNConv

    labels, edge_index = graph
    model = build_graph_student("gcn", 3, 2, seed=1, layers=1, hidden=8)
    reference = GCNConv(3, 8)
    reference.load_state_dict(model.convs[0].state_dict())
    x = torch.eye(3)[labels]
    with torch.no_grad():
        assert torch.allclose(model.node_embed(x, edge_index), reference(x, edge_index), atol=1e-6)


def test_representative_degrees_are_exact_for_the_representative(graph):
    """A stored tree (unrolled around the first node with its id) gives that node's GCN embedding."""
    labels, edge_index = graph
    vocab = torch.eye(3)
    model = build_graph_student("gcn", 3, 2, seed=5, layers=2, hidden=16)
    index = compute_tree_ids(labels, edge_index, None, 2)
    with torch.no_grad():
        node = model.node_embed(vocab[labels], edge_index)
        for t in range(index.num_trees):
            tl, edges, _, deg = index.occurrence(t)
            e = torch.tensor(edges, dtype=torch.int64).reshape(-1, 2).t()
            root = model.node_embed(vocab[torch.tensor(tl)], e, torch.tensor(deg))[0]
            assert torch.allclose(root, node[index.representative(t)], atol=1e-5)


def test_pooling_roots_of_a_forest_equals_pooling_the_graph(graph):
    """Mean over the roots of every node's tree (one forest) == mean over the graph's nodes."""
    labels, edge_index = graph
    vocab = torch.eye(3)
    model = build_graph_student("gin", 3, 2, seed=0, layers=2, hidden=16)
    index = compute_tree_ids(labels, edge_index, None, 2)
    nodes, edges, mask, offset = [], [], [], 0
    for v in range(len(labels)):
        tl, e, _, _ = index.occurrence(int(index.node_tree[v]))
        nodes += tl
        edges += [(a + offset, b + offset) for a, b in e]
        mask += [True] + [False] * (len(tl) - 1)
        offset += len(tl)
    e = torch.tensor(edges).t()
    with torch.no_grad():
        forest = model(vocab[torch.tensor(nodes)], e, torch.zeros(len(nodes), dtype=torch.int64), 1, torch.tensor(mask))
        real = model(vocab[labels], edge_index, torch.zeros(len(labels), dtype=torch.int64), 1)
    assert torch.allclose(forest, real, atol=1e-5)
