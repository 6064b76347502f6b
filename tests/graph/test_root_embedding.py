"""Root embedding of a depth-L computation tree == the node's embedding in its graph (GIN, GAT), and
the documented GCN caveat (exact only when L >= layers + 1)."""

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


def root_and_node_embeddings(kind: str, layers: int, depth: int, labels, edge_index):
    vocab = torch.eye(3)
    model = build_graph_student(kind, 3, 2, seed=3, layers=layers, hidden=16)
    index = compute_tree_ids(labels, edge_index, None, depth)
    with torch.no_grad():
        node = model.node_embed(vocab[labels], edge_index)
        roots = []
        for v in range(len(labels)):
            tl, edges, _ = index.tree(int(index.node_tree[v]))
            e = torch.tensor(edges, dtype=torch.int64).reshape(-1, 2).t()
            roots.append(model.node_embed(vocab[torch.tensor(tl)], e)[0])
    return node, torch.stack(roots)


@pytest.mark.parametrize("kind", ["gin", "gat"])
@pytest.mark.parametrize("layers,depth", [(2, 2), (1, 2), (2, 3)])
def test_root_embedding_equals_node_embedding(kind, layers, depth, graph):
    node, roots = root_and_node_embeddings(kind, layers, depth, *graph)
    assert torch.allclose(node, roots, atol=1e-5)


def test_more_layers_than_depth_is_not_exact(graph):
    node, roots = root_and_node_embeddings("gin", 3, 2, *graph)
    assert not torch.allclose(node, roots, atol=1e-3)


def test_gcn_caveat_exact_only_one_hop_deeper(graph):
    node, roots = root_and_node_embeddings("gcn", 2, 2, *graph)
    assert not torch.allclose(node, roots, atol=1e-3)  # leaves have in-degree 0 in the tree
    node, roots = root_and_node_embeddings("gcn", 2, 3, *graph)
    assert torch.allclose(node, roots, atol=1e-5)


def test_pooling_roots_of_a_forest_equals_pooling_the_graph(graph):
    """Mean over the roots of every node's tree (one forest) == mean over the graph's nodes."""
    labels, edge_index = graph
    vocab = torch.eye(3)
    model = build_graph_student("gin", 3, 2, seed=0, layers=2, hidden=16)
    index = compute_tree_ids(labels, edge_index, None, 2)
    nodes, edges, mask, offset = [], [], [], 0
    for v in range(len(labels)):
        tl, e, _ = index.tree(int(index.node_tree[v]))
        nodes += tl
        edges += [(a + offset, b + offset) for a, b in e]
        mask += [True] + [False] * (len(tl) - 1)
        offset += len(tl)
    e = torch.tensor(edges).t()
    with torch.no_grad():
        forest = model(vocab[torch.tensor(nodes)], e, torch.zeros(len(nodes), dtype=torch.int64), 1, torch.tensor(mask))
        real = model(vocab[labels], edge_index, torch.zeros(len(labels), dtype=torch.int64), 1)
    assert torch.allclose(forest, real, atol=1e-5)
