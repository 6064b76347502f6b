"""GNN students for graph classification: GCN, GIN and GAT (PyG layers), with root-mask pooling.

Every student maps node features ``(N, F)`` through ``layers`` message-passing layers (ReLU
between them, no normalisation layers: batch statistics of small forests would differ from those of
real graphs), pools node embeddings per graph, and classifies with a linear (or MLP) head. When a
``pool_mask`` is given only the masked nodes (the roots of computation trees) are pooled; on
real graphs every node is. With ``layers <= L`` a GIN, GAT or GCN root embedding in a depth-L
computation tree equals the node's embedding in its graph, so "mean over roots" on a Mirage forest
and "mean over nodes" on a real graph are the same function.

GCN needs every node's degree in its *original* graph: symmetric normalisation weighs the message
``u -> v`` by ``1 / sqrt((d_u + 1)(d_v + 1))``, and a computation tree's leaves have in-degree 0
in the tree although their real degree is not 0 (PyG's ``GCNConv`` would use 0 and is then exact
only for ``L >= layers + 1``, GRAPH.md section 1.6). The GCN student therefore uses
``GCNConv(normalize=False)`` with edge weights computed here from a degree vector: the stored
original degrees of tree nodes (:attr:`GraphSyntheticSet.node_degree`), or, when none is given,
the in-degree in ``edge_index`` (real graphs; identical to PyG's own ``gcn_norm`` with self loops).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dsdistill.errors import ConfigError, UnknownNameError

STUDENTS = ("gcn", "gin", "gat")


def _pyg():
    try:
        import torch_geometric.nn as gnn
    except ImportError:
        raise ConfigError("graph students need torch_geometric; install it with pip install "
                          "'dsdistill[graph]'") from None
    return gnn


def pool(h: Tensor, batch: Tensor, num_graphs: int, mask: Tensor | None, how: str) -> Tensor:
    """Pool ``(N, H)`` node embeddings to ``(B, H)`` over the nodes in ``mask`` (all if None).

    Args:
        how: ``"mean"``, ``"sum"`` or ``"max"``.
    """
    if mask is not None:
        h, batch = h[mask], batch[mask]
    reduce = {"mean": "mean", "sum": "sum", "max": "amax"}[how]
    out = torch.zeros(num_graphs, h.shape[1], dtype=h.dtype, device=h.device)
    index = batch.view(-1, 1).expand_as(h)
    return out.scatter_reduce(0, index, h, reduce=reduce, include_self=False)


class GraphStudent(nn.Module):
    """A message-passing classifier.

    Args:
        kind: ``"gcn"``, ``"gin"`` or ``"gat"``.
        in_dim: Node feature size F.
        num_classes: K.
        hidden: Embedding width (GAT: 4 heads of ``hidden // 4``, concatenated).
        layers: Number of message-passing layers.
        dropout: Dropout before the last linear layer.
        pooling: ``"mean"``, ``"sum"`` or ``"max"`` readout.
        head: ``"linear"`` (pooled embedding -> logits) or ``"mlp"`` (one hidden ReLU layer).
    """

    def __init__(self, kind: str, in_dim: int, num_classes: int, hidden: int = 64, layers: int = 2,
                 dropout: float = 0.0, pooling: str = "mean", head: str = "linear") -> None:
        super().__init__()
        gnn = _pyg()
        if kind not in STUDENTS:
            raise UnknownNameError(f"unknown graph model '{kind}'; choose one of: {', '.join(STUDENTS)}")
        if layers < 1 or pooling not in ("mean", "sum", "max"):
            raise ConfigError(f"graph students need layers >= 1 and pooling mean/sum/max, got {layers}, {pooling}")
        self.kind, self.pooling = kind, pooling
        self.convs = nn.ModuleList()
        for i in range(layers):
            d_in = in_dim if i == 0 else hidden
            if kind == "gcn":
                conv = gnn.GCNConv(d_in, hidden, normalize=False)
            elif kind == "gin":
                conv = gnn.GINConv(nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden)))
            else:
                heads = 4 if hidden % 4 == 0 else 1
                conv = gnn.GATConv(d_in, hidden // heads, heads=heads)
            self.convs.append(conv)
        if head not in ("linear", "mlp"):
            raise ConfigError(f"graph student head must be 'linear' or 'mlp', got {head!r}")
        self.head = (nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes)) if head == "linear" else
                     nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                                   nn.Linear(hidden, num_classes)))

    def node_embed(self, x: Tensor, edge_index: Tensor, degree: Tensor | None = None) -> Tensor:
        """``(N, F)`` features -> ``(N, hidden)`` embeddings (ReLU between layers, not after the last).

        Args:
            x: ``(N, F)`` node features.
            edge_index: ``(2, E)``; messages flow ``edge_index[0] -> edge_index[1]``.
            degree: ``(N,)`` original-graph degrees (GCN only; None = in-degree in ``edge_index``).
        """
        weight = None
        if self.kind == "gcn":
            edge_index, weight = gcn_edges(edge_index, x.shape[0], degree, x.dtype)
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index) if weight is None else conv(x, edge_index, weight)
            if i < len(self.convs) - 1:
                x = torch.relu(x)
        return x

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor, num_graphs: int,
                pool_mask: Tensor | None = None, degree: Tensor | None = None) -> Tensor:
        """Logits ``(B, K)``.

        Args:
            x: ``(N, F)`` node features.
            edge_index: ``(2, E)``; messages flow ``edge_index[0] -> edge_index[1]``.
            batch: ``(N,)`` graph of each node.
            num_graphs: B.
            pool_mask: ``(N,)`` bool nodes to pool, or None for all.
            degree: ``(N,)`` original-graph degrees of tree nodes (GCN), or None.
        """
        h = self.node_embed(x, edge_index, degree)
        return self.head(pool(h, batch, num_graphs, pool_mask, self.pooling))


def gcn_edges(edge_index: Tensor, num_nodes: int, degree: Tensor | None, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Edges plus self loops with symmetric GCN weights from a degree vector.

    Args:
        edge_index: ``(2, E)`` int64 without self loops.
        num_nodes: N.
        degree: ``(N,)`` degrees, or None for the in-degree in ``edge_index``.
        dtype: Weight dtype.

    Returns:
        ``((2, E + N) edge_index, (E + N,) weights)``; edge ``u -> v`` weighs
        ``1 / sqrt((d_u + 1)(d_v + 1))``, the self loop of ``v`` ``1 / (d_v + 1)``.
    """
    if degree is None:
        degree = torch.bincount(edge_index[1], minlength=num_nodes)
    inv = (degree.to(dtype) + 1).rsqrt()
    loops = torch.arange(num_nodes, device=edge_index.device).expand(2, -1)
    weight = torch.cat([inv[edge_index[0]] * inv[edge_index[1]], inv * inv])
    return torch.cat([edge_index, loops], 1), weight


def build_graph_student(kind: str, in_dim: int, num_classes: int, *, seed: int, **kwargs) -> GraphStudent:
    """A :class:`GraphStudent` whose initial weights depend only on ``seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        return GraphStudent(kind.lower(), in_dim, num_classes, **kwargs)
