"""``doscond``: one-step gradient matching for graph classification (DosCond; Jin et al., KDD 2022).

Learned baseline for Mirage, after ``amazon-science/doscond`` (``graph_agent.py``, GRAPH.md 2.1):

* ``ipc`` synthetic graphs per class, each with ``nodes`` nodes (default: the mean node count of
  the training split, capped at ``max_nodes``), dense adjacency logits ``(n, N, N)`` and dense
  node features ``(n, N, F)`` in the real data's feature space;
* ``init="real"``: each starts from a random real training graph of its class (truncated to ``N``
  nodes; padding nodes get zero features), adjacency logits +-5;
* every iteration a **fresh randomly initialised** GCN (``layers`` layers, mean pooling, linear
  head) is built; per class the cross-entropy gradients on ``batch_real`` real graphs and on the
  synthetic graphs are matched with DosCond's normalised squared error
  ``sum (g_syn - g_real)^2 / sum g_real^2``; no inner training (one-step matching);
* the adjacency is symmetrised and relaxed with logistic noise, temperature annealed from 1 to
  0.01 over the first 200 iterations; a sparsity penalty ``beta * relu(mean sigmoid(A) - init
  density)``; Adam on adjacency and features, learning rates x0.1 after 40% of the iterations.

The stored graphs are discrete: ``sigmoid(sym logits) > 0.5``, no self-loops. Their features are
continuous, so they are stored as the set's own node vocabulary (one row per synthetic node) and
counted in its bytes. Deviations: the default 200 iterations (the paper uses 1000) keep it cheap on
CPU; every padding node is kept (isolated nodes are pooled like the others).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dsdistill.condenser import Condenser
from dsdistill.errors import ConfigError
from dsdistill.graphset import GraphSyntheticSet
from dsdistill.registry import GRAPH_CONDENSERS
from dsdistill.rng import make_generator


@dataclass
class DosCondConfig:
    """Settings of :class:`DosCond` (DosCond's MUTAG script: lr_adj 0.1, lr_feat 0.01, 3 convs)."""

    iterations: int = 200
    nodes: int = 0
    max_nodes: int = 64
    lr_adj: float = 0.1
    lr_feat: float = 0.01
    batch_real: int = 256
    hidden: int = 128
    layers: int = 3
    beta: float = 0.1


def gcn_params(in_dim: int, hidden: int, layers: int, num_classes: int, generator: torch.Generator) -> list[Tensor]:
    """Glorot-initialised weights ``[W_1 .. W_L, W_out, b_out]`` of a fresh matching GCN."""
    dims = [in_dim] + [hidden] * layers
    params = []
    for a, b in zip(dims[:-1], dims[1:]):
        params.append((torch.rand(a, b, generator=generator) * 2 - 1) * math.sqrt(6 / (a + b)))
    params.append((torch.rand(hidden, num_classes, generator=generator) * 2 - 1) * math.sqrt(6 / (hidden + num_classes)))
    params.append(torch.zeros(num_classes))
    return [p.requires_grad_(True) for p in params]


def dense_gcn(params: list[Tensor], x: Tensor, adj: Tensor) -> Tensor:
    """Logits ``(B, K)`` of graphs ``x (B, N, F)``, ``adj (B, N, N)`` (mean pooling over nodes)."""
    a = adj + torch.eye(adj.shape[-1])
    d = a.sum(-1).clamp(min=1e-12).rsqrt()
    a = d.unsqueeze(-1) * a * d.unsqueeze(-2)
    h = x
    for w in params[:-2]:
        h = torch.relu(a @ (h @ w))
    return h.mean(1) @ params[-2] + params[-1]


def sparse_gcn(params: list[Tensor], x: Tensor, edge_index: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """The same GCN on a sparse batch: ``x (N, F)``, ``edge_index (2, E)``, ``batch (N,)``."""
    n = x.shape[0]
    loops = torch.arange(n)
    src, dst = torch.cat([edge_index[0], loops]), torch.cat([edge_index[1], loops])
    deg = torch.bincount(dst, minlength=n).double().rsqrt().float()
    norm = (deg[src] * deg[dst]).unsqueeze(1)
    h = x
    for w in params[:-2]:
        hw = h @ w
        h = torch.relu(torch.zeros_like(hw).index_add_(0, dst, hw[src] * norm))
    counts = torch.bincount(batch, minlength=num_graphs).clamp(min=1).unsqueeze(1)
    pooled = torch.zeros(num_graphs, h.shape[1]).index_add_(0, batch, h) / counts
    return pooled @ params[-2] + params[-1]


@GRAPH_CONDENSERS.register("doscond")
class DosCond(Condenser):
    """One-step gradient matching with learnable relaxed adjacency."""

    name = "doscond"
    Config = DosCondConfig
    protocol = "graph"

    def condense(self, data, ipc: int, *, seed: int = 0, device: str = "cpu", progress: bool = True,
                 checkpoint=None) -> GraphSyntheticSet:
        from tqdm.auto import tqdm

        cfg, started = self.config, time.time()
        smallest = int(data.class_counts().min())
        if not 1 <= ipc <= smallest:
            raise ConfigError(f"--ipc must be in [1, {smallest}] (the smallest class of {data.name}), got {ipc}")
        if cfg.iterations < 1 or cfg.layers < 1:
            raise ConfigError("doscond needs iterations >= 1 and layers >= 1")
        train, k, fdim = data.train, data.num_classes, data.feature_dim
        n_nodes = cfg.nodes or min(cfg.max_nodes, max(2, round(float(train.nodes_per_graph().double().mean()))))
        gen = make_generator(seed, self.name)
        labels = torch.arange(k).repeat_interleave(ipc)
        adj0, feat0 = self._init_real(data, labels, n_nodes, gen)
        adj_logits = (adj0 * 10 - 5).requires_grad_(True)
        feat = feat0.clone().requires_grad_(True)
        density = float(adj0.mean())
        opt_adj = torch.optim.Adam([adj_logits], lr=cfg.lr_adj)
        opt_feat = torch.optim.Adam([feat], lr=cfg.lr_feat)
        x_real_vocab = data.node_vocab
        losses = []
        for it in tqdm(range(cfg.iterations), desc="doscond", disable=not progress or None):
            if it == int(0.4 * cfg.iterations):
                for opt in (opt_adj, opt_feat):
                    for group in opt.param_groups:
                        group["lr"] *= 0.1
            tau = max(0.01, 1 - it * (0.99 / 200))
            params = gcn_params(fdim, cfg.hidden, cfg.layers, k, gen)
            adj = self._relaxed(adj_logits, tau, gen)
            loss = torch.zeros(())
            for c in range(k):
                pool = train.class_indices(c)
                pick = pool[torch.randperm(len(pool), generator=gen)[: cfg.batch_real]]
                b = train.batch(pick)
                real_loss = F.cross_entropy(sparse_gcn(params, x_real_vocab[b.node_label], b.edge_index, b.batch,
                                                       b.num_graphs), b.y)
                g_real = [g.detach() for g in torch.autograd.grad(real_loss, params)]
                rows = labels == c
                syn_loss = F.cross_entropy(dense_gcn(params, feat[rows], adj[rows]), labels[rows])
                g_syn = torch.autograd.grad(syn_loss, params, create_graph=True)
                num = sum(((gs - gr) ** 2).sum() for gs, gr in zip(g_syn, g_real))
                loss = loss + num / sum((gr ** 2).sum() for gr in g_real).clamp(min=1e-12)
            loss = loss + cfg.beta * torch.relu(torch.sigmoid(adj_logits).mean() - density)
            opt_adj.zero_grad(set_to_none=True)
            opt_feat.zero_grad(set_to_none=True)
            loss.backward()
            opt_adj.step()
            opt_feat.step()
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                raise ConfigError(f"doscond diverged at iteration {it}; lower lr_adj / lr_feat")
        return self._package(data, adj_logits.detach(), feat.detach(), labels, ipc, seed, started, losses, n_nodes)

    @staticmethod
    def _relaxed(logits: Tensor, tau: float, gen: torch.Generator) -> Tensor:
        """Symmetric, zero-diagonal adjacency relaxed with logistic noise at temperature ``tau``."""
        sym = (logits + logits.transpose(1, 2)) / 2
        u = torch.rand(sym.shape, generator=gen).clamp(1e-6, 1 - 1e-6)
        noise = torch.log(u) - torch.log1p(-u)
        noise = (noise + noise.transpose(1, 2)) / 2
        adj = torch.sigmoid((sym + noise) / tau)
        return adj * (1 - torch.eye(sym.shape[-1]))

    @staticmethod
    def _init_real(data, labels: Tensor, n_nodes: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(adj (n, N, N), feat (n, N, F))`` of random real training graphs of each label, truncated/padded."""
        train = data.train
        adj = torch.zeros(len(labels), n_nodes, n_nodes)
        feat = torch.zeros(len(labels), n_nodes, data.feature_dim)
        for i, c in enumerate(labels.tolist()):
            pool = train.class_indices(c)
            g = int(pool[torch.randint(len(pool), (1,), generator=gen)])
            b = train.batch(torch.tensor([g]))
            n = min(n_nodes, int(b.node_label.shape[0]))
            feat[i, :n] = data.node_vocab[b.node_label[:n]]
            keep = (b.edge_index < n).all(0)
            adj[i, b.edge_index[0, keep], b.edge_index[1, keep]] = 1.0
        return adj, feat

    def _package(self, data, adj_logits: Tensor, feat: Tensor, labels: Tensor, ipc: int, seed: int, started: float,
                 losses: list[float], n_nodes: int) -> GraphSyntheticSet:
        n = len(labels)
        sym = (adj_logits + adj_logits.transpose(1, 2)) / 2
        binary = (torch.sigmoid(sym) > 0.5) & ~torch.eye(n_nodes, dtype=torch.bool)
        graph, src, dst = torch.nonzero(binary, as_tuple=True)  # row-major: grouped by graph
        offset = graph * n_nodes
        prov = {"method": self.name, "config": asdict(self.config), "dataset": data.name, "ipc": ipc, "seed": seed,
                "split": data.split, "dataset_fingerprint": data.fingerprint, "nodes_per_graph": n_nodes,
                "loss_first_last": [losses[0], losses[-1]], "elapsed_seconds": round(time.time() - started, 3)}
        return GraphSyntheticSet(
            node_labels=torch.arange(n * n_nodes), edge_index=torch.stack([src + offset, dst + offset]),
            edge_labels=torch.zeros(len(src), dtype=torch.int64),
            tree_ptr=torch.arange(0, (n + 1) * n_nodes, n_nodes), itemset_trees=torch.arange(n),
            itemset_ptr=torch.arange(n + 1), support=torch.ones(n, dtype=torch.int64), labels=labels,
            node_vocab=feat.reshape(n * n_nodes, -1).contiguous(), edge_vocab=torch.ones(1, 1), num_classes=data.num_classes,
            method=self.name, dataset=data.name, ipc=ipc, pooling="all", depth=0, vocab_kind="set",
            class_names=list(data.class_names), provenance=prov)
