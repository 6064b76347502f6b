"""Fixtures of the graph tests: tiny generated graph datasets (any number of classes) and MUTAG."""

from __future__ import annotations

import pytest
import torch

from dsdistill.data.graphs import graph_data_from_store
from dsdistill.graphstore import GraphStore


def undirected(pairs: list[tuple[int, int]]) -> torch.Tensor:
    """``(2, 2P)`` edge_index with both directions of every pair."""
    if not pairs:
        return torch.zeros(2, 0, dtype=torch.int64)
    e = torch.tensor(pairs, dtype=torch.int64).t()
    return torch.cat([e, e.flip(0)], 1)


def make_tiny(num_classes: int = 3, per_class: int = 20, seed: int = 0, isolated: bool = True):
    """A learnable dataset: class c graphs are paths (c=0), cycles (c=1) or stars (c>=2) with node
    label c except one random node labelled c+1; every third graph gets an isolated node labelled
    num_classes + 1."""
    g = torch.Generator().manual_seed(seed)
    graphs = []
    for c in range(num_classes):
        for i in range(per_class):
            n = int(torch.randint(4, 8, (1,), generator=g))
            if c == 0:
                pairs = [(j, j + 1) for j in range(n - 1)]
            elif c == 1:
                pairs = [(j, (j + 1) % n) for j in range(n)]
            else:
                pairs = [(0, j) for j in range(1, n)]
            labels = torch.full((n,), c)
            labels[int(torch.randint(0, n, (1,), generator=g))] = c + 1
            if isolated and i % 3 == 0:
                labels = torch.cat([labels, torch.tensor([num_classes + 1])])
            graphs.append((labels, undirected(pairs), None, c))
    return GraphStore.from_graphs(graphs)


@pytest.fixture(scope="session")
def tiny3():
    """Three-class tiny GraphData (ENZYMES-like: more than two classes)."""
    store = make_tiny(3, 20)
    return graph_data_from_store("tiny3", store, 3, torch.eye(5))


@pytest.fixture(scope="session")
def mutag():
    """MUTAG (shared root or the copy shipped in the package)."""
    pytest.importorskip("torch_geometric")
    from dsdistill.data.graphs import load_graph_dataset

    return load_graph_dataset("mutag")


FAST_MIRAGE = {"search_epochs": 15, "search_min_steps": 0, "search_runs": 1, "search_grid": [0.5, 0.3, 0.1],
               "budget_ratio": 0.5}


@pytest.fixture(scope="session")
def fast_mirage() -> dict:
    """Mirage settings that keep the threshold search to seconds."""
    return dict(FAST_MIRAGE)


@pytest.fixture(scope="session")
def graph_tools():
    """The helpers above, for test modules (importlib mode cannot import conftest by name)."""
    return {"undirected": undirected, "make_tiny": make_tiny}
