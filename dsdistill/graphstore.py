"""``GraphStore``: many small labelled graphs in one flat CSR layout, batched without Python loops.

Real graph splits, the forests a Mirage set expands to, and the subsets the graph baselines select
are all held this way, so one vectorised gather builds any mini-batch (no ``Data`` objects, no
per-graph collate). Node and edge features are categorical ids into a vocabulary (see
:class:`dsdistill.data.graphs.GraphData`); a student turns them into vectors with one lookup.

Example:
    >>> import torch
    >>> s = GraphStore.from_graphs([(torch.tensor([0, 1]), torch.tensor([[0], [1]]), None, 0),
    ...                             (torch.tensor([2]), torch.zeros(2, 0, dtype=torch.long), None, 1)])
    >>> b = s.batch(torch.tensor([1, 0]))
    >>> b.node_label.tolist(), b.edge_index.tolist(), b.batch.tolist()
    ([2, 0, 1], [[1], [2]], [0, 1, 1])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def ranges(starts: Tensor, counts: Tensor) -> Tensor:
    """Concatenation of ``arange(s, s + c)`` for every pair, vectorised.

    Args:
        starts: ``(B,)`` int64 range starts.
        counts: ``(B,)`` int64 range lengths (>= 0).

    Returns:
        ``(counts.sum(),)`` int64.
    """
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.int64)
    offsets = torch.cumsum(counts, 0) - counts
    return torch.arange(total, dtype=torch.int64) + (starts - offsets).repeat_interleave(counts)


@dataclass
class GraphBatch:
    """A disjoint union of graphs ready for a message-passing model.

    Attributes:
        node_label: ``(N,)`` int64 node vocabulary ids.
        edge_index: ``(2, E)`` int64, messages flow ``edge_index[0] -> edge_index[1]``.
        edge_label: ``(E,)`` int64 edge vocabulary ids.
        batch: ``(N,)`` int64 graph of each node.
        num_graphs: B.
        y: ``(B,)`` int64 labels.
        pool_mask: ``(N,)`` bool nodes to pool (tree roots), or None to pool every node.
        weight: ``(B,)`` float per-graph loss weights (itemset supports), or None.
        degree: ``(N,)`` int64 degree of every node in its original graph (computation-tree nodes,
            whose leaves have in-degree 0 in the tree), or None: the in-degree in ``edge_index``.
    """

    node_label: Tensor
    edge_index: Tensor
    edge_label: Tensor
    batch: Tensor
    num_graphs: int
    y: Tensor
    pool_mask: Tensor | None = None
    weight: Tensor | None = None
    degree: Tensor | None = None


@dataclass
class GraphStore:
    """``G`` graphs in CSR form (edges sorted by graph, node ids global within the store).

    Attributes:
        node_label: ``(N,)`` int64.
        edge_index: ``(2, E)`` int64 global node ids; graph ``g`` owns edges
            ``edge_ptr[g]:edge_ptr[g+1]``, whose endpoints lie in ``node_ptr[g]:node_ptr[g+1]``.
        edge_label: ``(E,)`` int64.
        node_ptr: ``(G + 1,)`` int64 node offsets.
        edge_ptr: ``(G + 1,)`` int64 edge offsets.
        y: ``(G,)`` int64 graph labels.
        pool_mask: ``(N,)`` bool or None (None = pool all nodes).
        weight: ``(G,)`` float32 or None.
        node_degree: ``(N,)`` int64 original-graph degrees (computation trees) or None (the
            in-degree in ``edge_index``, as for real graphs).
    """

    node_label: Tensor
    edge_index: Tensor
    edge_label: Tensor
    node_ptr: Tensor
    edge_ptr: Tensor
    y: Tensor
    pool_mask: Tensor | None = None
    weight: Tensor | None = None
    node_degree: Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_nodes(self) -> int:
        return int(self.node_label.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def nodes_per_graph(self) -> Tensor:
        """``(G,)`` node counts."""
        return self.node_ptr[1:] - self.node_ptr[:-1]

    def edges_per_graph(self) -> Tensor:
        """``(G,)`` edge counts."""
        return self.edge_ptr[1:] - self.edge_ptr[:-1]

    def graph_of_node(self) -> Tensor:
        """``(N,)`` graph index of every node."""
        return torch.arange(len(self)).repeat_interleave(self.nodes_per_graph())

    def batch(self, idx: Tensor) -> GraphBatch:
        """The graphs ``idx`` (``(B,)`` int64, any order, repeats allowed) as one :class:`GraphBatch`."""
        idx = idx.to(torch.int64)
        n_counts = self.node_ptr[idx + 1] - self.node_ptr[idx]
        e_counts = self.edge_ptr[idx + 1] - self.edge_ptr[idx]
        nodes = ranges(self.node_ptr[idx], n_counts)
        edges = ranges(self.edge_ptr[idx], e_counts)
        new_start = torch.cumsum(n_counts, 0) - n_counts
        shift = (new_start - self.node_ptr[idx]).repeat_interleave(e_counts)
        return GraphBatch(
            node_label=self.node_label[nodes], edge_index=self.edge_index[:, edges] + shift,
            edge_label=self.edge_label[edges],
            batch=torch.arange(len(idx)).repeat_interleave(n_counts), num_graphs=len(idx), y=self.y[idx],
            pool_mask=None if self.pool_mask is None else self.pool_mask[nodes],
            weight=None if self.weight is None else self.weight[idx],
            degree=None if self.node_degree is None else self.node_degree[nodes])

    def subset(self, idx: Tensor) -> "GraphStore":
        """A new store holding graphs ``idx`` in that order."""
        b = self.batch(idx)
        n_counts = self.node_ptr[idx + 1] - self.node_ptr[idx]
        e_counts = self.edge_ptr[idx + 1] - self.edge_ptr[idx]
        zero = torch.zeros(1, dtype=torch.int64)
        return GraphStore(b.node_label, b.edge_index, b.edge_label, torch.cat([zero, n_counts.cumsum(0)]),
                          torch.cat([zero, e_counts.cumsum(0)]), b.y, b.pool_mask, b.weight, b.degree)

    def all(self) -> GraphBatch:
        """Every graph as one batch (no copy of the node arrays)."""
        return GraphBatch(self.node_label, self.edge_index, self.edge_label, self.graph_of_node(), len(self),
                          self.y, self.pool_mask, self.weight, self.node_degree)

    def class_indices(self, c: int) -> Tensor:
        """Indices of the graphs of class ``c``, ascending."""
        return torch.nonzero(self.y == c).flatten()

    @staticmethod
    def from_graphs(graphs: list[tuple[Tensor, Tensor, Tensor | None, int]]) -> "GraphStore":
        """Build from ``(node_label (n,), edge_index (2, e) local ids, edge_label (e,) or None, y)`` tuples."""
        zero = torch.zeros(1, dtype=torch.int64)
        n_counts = torch.tensor([len(g[0]) for g in graphs], dtype=torch.int64)
        e_counts = torch.tensor([g[1].shape[1] for g in graphs], dtype=torch.int64)
        node_ptr = torch.cat([zero, n_counts.cumsum(0)])
        shift = node_ptr[:-1].repeat_interleave(e_counts)
        edge_index = torch.cat([g[1].to(torch.int64) for g in graphs], 1) if graphs else torch.zeros(2, 0, dtype=torch.int64)
        edge_label = [g[2] if g[2] is not None else torch.zeros(g[1].shape[1], dtype=torch.int64) for g in graphs]
        return GraphStore(
            node_label=torch.cat([g[0].to(torch.int64) for g in graphs]) if graphs else torch.zeros(0, dtype=torch.int64),
            edge_index=(edge_index + shift).to(torch.int64),
            edge_label=torch.cat(edge_label).to(torch.int64) if graphs else torch.zeros(0, dtype=torch.int64),
            node_ptr=node_ptr, edge_ptr=torch.cat([zero, e_counts.cumsum(0)]),
            y=torch.tensor([int(g[3]) for g in graphs], dtype=torch.int64))
