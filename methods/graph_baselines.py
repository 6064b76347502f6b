"""Graph coreset baselines: random, herding and k-center subsets of real training graphs per class.

Herding and k-center select on a fixed, training-free graph descriptor (standardised over the
training split): the mean one-hot node label, the mean of the summed neighbour labels (one
Weisfeiler-Lehman step), and log node/edge counts. GC-Bench instead pads raw node features to
``max_nodes`` and flattens them, which depends on the arbitrary node order; KiDD ships selected
indices without the code that made them. The selection itself reuses the image coresets'
:func:`~dsdistill.methods.coreset.herding` and :func:`~dsdistill.methods.coreset.k_center`.

Size: ``ipc`` graphs per class, or (``budget_bytes > 0``) as many graphs as fit in that many bytes
of the set's storage (:meth:`GraphSyntheticSet.storage_bytes`), taken round-robin over classes in
selection order; a class stops at its first graph that no longer fits, and every class keeps at
least one graph even if that exceeds the budget (the report shows the bytes actually used).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from dsdistill.condenser import Condenser
from dsdistill.errors import ConfigError
from dsdistill.graphset import GraphSyntheticSet, per_graph_bytes
from dsdistill.graphstore import GraphStore
from dsdistill.methods.coreset import herding, k_center
from dsdistill.registry import GRAPH_CONDENSERS
from dsdistill.rng import make_generator

SELECTORS = ("random", "herding", "k-center")


def graph_features(store: GraphStore, node_vocab: Tensor) -> Tensor:
    """``(G, 2F + 2)`` standardised descriptors (see module docstring)."""
    x = node_vocab[store.node_label]
    owner = store.graph_of_node()
    n = store.nodes_per_graph().clamp(min=1).double().unsqueeze(1)
    agg = torch.zeros_like(x).index_add_(0, store.edge_index[1], x[store.edge_index[0]])
    g = len(store)
    mean_x = torch.zeros(g, x.shape[1], dtype=torch.float64).index_add_(0, owner, x.double()) / n
    mean_agg = torch.zeros(g, x.shape[1], dtype=torch.float64).index_add_(0, owner, agg.double()) / n
    sizes = torch.stack([n.squeeze(1).log1p(), store.edges_per_graph().double().log1p()], 1)
    feats = torch.cat([mean_x, mean_agg, sizes], 1)
    return ((feats - feats.mean(0)) / feats.std(0).clamp(min=1e-8)).float()


def class_orders(store: GraphStore, num_classes: int, selector: str, limit: Tensor, generator: torch.Generator,
                 features: Tensor | None = None) -> list[Tensor]:
    """Per class, the first ``limit[c]`` training graph indices in selection order.

    Args:
        store: Real training graphs.
        selector: ``"random"``, ``"herding"`` or ``"k-center"``.
        limit: ``(K,)`` how many to order per class.
        generator: Drives the random order.
        features: ``(G, D)`` descriptors for herding / k-center.
    """
    orders = []
    for c in range(num_classes):
        idx = store.class_indices(c)
        k = min(int(limit[c]), len(idx))
        if selector == "random":
            pick = torch.randperm(len(idx), generator=generator)[:k]
        elif selector == "herding":
            pick = herding(features[idx], k) if k else idx[:0]
        elif selector == "k-center":
            pick = k_center(features[idx], k) if k else idx[:0]
        else:
            raise ConfigError(f"unknown selector {selector!r}; choose one of {SELECTORS}")
        orders.append(idx[pick])
    return orders


def fill_budget(orders: list[Tensor], cost: Tensor, budget: int) -> Tensor:
    """Round-robin over classes, adding each class's next graph while the total stays within ``budget``.

    Args:
        orders: Per class, graph indices in selection order.
        cost: ``(G,)`` bytes each graph adds.
        budget: Byte budget for the graphs (the set's fixed 16 bytes of offsets are included).

    Returns:
        Selected indices, class-major in selection order.
    """
    taken = [1 if len(o) else 0 for o in orders]  # every class keeps one graph
    total = 16 + sum(int(cost[o[0]]) for o in orders if len(o))
    active = [len(o) > 1 for o in orders]
    while any(active):
        for c, order in enumerate(orders):
            if not active[c]:
                continue
            nxt = int(cost[order[taken[c]]])
            if total + nxt > budget:
                active[c] = False
                continue
            total += nxt
            taken[c] += 1
            active[c] = taken[c] < len(order)
    return torch.cat([o[:t] for o, t in zip(orders, taken)])


def select_subset(store: GraphStore, node_vocab: Tensor, num_classes: int, selector: str, *, ipc: int = 0,
                  budget_bytes: int = 0, generator: torch.Generator) -> Tensor:
    """Indices of a per-class subset of ``store`` by ``ipc`` or by ``budget_bytes`` (see module docstring)."""
    counts = torch.bincount(store.y, minlength=num_classes)
    cost = per_graph_bytes(store)
    if budget_bytes > 0:
        smallest = torch.stack([cost[store.y == c].min() if counts[c] else cost.max() for c in range(num_classes)])
        limit = torch.minimum(counts, budget_bytes // smallest + 1)
    else:
        if ipc < 1:
            raise ConfigError(f"ipc must be a positive integer, got {ipc}")
        limit = torch.full((num_classes,), ipc).minimum(counts)
    feats = graph_features(store, node_vocab) if selector != "random" else None
    orders = class_orders(store, num_classes, selector, limit, generator, feats)
    return fill_budget(orders, cost, budget_bytes) if budget_bytes > 0 else torch.cat(orders)


@dataclass
class SubsetConfig:
    """Settings of the graph subset baselines.

    Attributes:
        budget_bytes: Select by storage bytes instead of ``ipc`` when > 0.
    """

    budget_bytes: int = 0


class _GraphSubset(Condenser):
    Config = SubsetConfig
    protocol = "graph"
    selector = "random"

    def condense(self, data, ipc: int, *, seed: int = 0, device: str = "cpu", progress: bool = True,
                 checkpoint=None) -> GraphSyntheticSet:
        started = time.time()
        smallest = int(data.class_counts().min())
        if self.config.budget_bytes <= 0 and not 1 <= ipc <= smallest:
            raise ConfigError(f"--ipc must be in [1, {smallest}] (the smallest class of {data.name}), got {ipc}")
        idx = select_subset(data.train, data.node_vocab, data.num_classes, self.selector, ipc=ipc,
                            budget_bytes=self.config.budget_bytes, generator=make_generator(seed, self.name, "select"))
        prov = {"method": self.name, "config": vars(self.config), "dataset": data.name, "ipc": ipc, "seed": seed,
                "split": data.split, "dataset_fingerprint": data.fingerprint,
                "selected_indices": data.indices["train"][idx].tolist() if "train" in data.indices else idx.tolist(),
                "elapsed_seconds": round(time.time() - started, 3)}
        return GraphSyntheticSet.from_subset(data.train, idx, data.node_vocab, data.edge_vocab, data.num_classes,
                                             method=self.name, dataset=data.name, class_names=data.class_names,
                                             provenance=prov)


@GRAPH_CONDENSERS.register("random")
class GraphRandom(_GraphSubset):
    """Random real training graphs per class."""

    name, selector = "random", "random"


@GRAPH_CONDENSERS.register("herding")
class GraphHerding(_GraphSubset):
    """Herding on graph descriptors."""

    name, selector = "herding", "herding"


@GRAPH_CONDENSERS.register("k-center")
class GraphKCenter(_GraphSubset):
    """Greedy k-center on graph descriptors."""

    name, selector = "k-center", "k-center"
