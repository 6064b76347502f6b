"""``GraphSyntheticSet``: the in-memory form of a distilled graph dataset (what graph files store).

A set is a bank of small graphs ("trees") stored once in CSR form, and a list of training
samples ("itemsets"), each a list of tree ids with a class label and a support count:

* Mirage: every tree is a computation tree of depth ``depth`` (node 0 of each tree is its root,
  edges point child -> parent), every itemset is a set of trees frequent together in one class,
  and a student pools only the roots (``pooling="roots"``).
* Graph baselines (random / herding / k-center subsets, gradient matching): every "tree" is a
  whole graph, every itemset holds exactly one of them, and students pool every node
  (``pooling="all"``).

Node and edge features are vocabulary rows: node ``i`` has feature ``node_vocab[node_labels[i]]``.
A ``"dataset"`` vocabulary (the one-hot label table of the real data) belongs to the dataset and
is reported apart from the set's own bytes; a ``"set"`` one (gradient matching's learned continuous
features, Mirage's coarsened label table) is part of the set and counted in its bytes.

Example:
    >>> import torch
    >>> from dsdistill.graphstore import GraphStore
    >>> real = GraphStore.from_graphs([(torch.tensor([0, 1]), torch.tensor([[0, 1], [1, 0]]), None, 1)])
    >>> s = GraphSyntheticSet.from_subset(real, torch.tensor([0]), torch.eye(2), torch.ones(1, 1), 2,
    ...                                   method="random", dataset="toy")
    >>> s.num_itemsets, s.to_store().num_nodes
    (1, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from dsdistill.graphstore import GraphStore

POOLINGS = ("roots", "all")
VOCAB_KINDS = ("dataset", "set")
INT_BYTES = 8  # every index array is stored as int64


@dataclass
class GraphSyntheticSet:
    """A distilled graph dataset.

    Attributes:
        node_labels: ``(Nn,)`` int64 vocabulary ids of every tree node.
        edge_index: ``(2, E)`` int64 node ids (global in ``node_labels``), edges grouped by tree
            in tree order; in Mirage trees they point child -> parent.
        edge_labels: ``(E,)`` int64 edge vocabulary ids.
        tree_ptr: ``(T + 1,)`` int64 node offsets; tree ``t`` is nodes ``tree_ptr[t]:tree_ptr[t+1]``,
            its root the first of them.
        itemset_trees: ``(M,)`` int64 tree ids of all itemsets, concatenated.
        itemset_ptr: ``(S + 1,)`` int64 offsets into ``itemset_trees``.
        support: ``(S,)`` int64 number of training graphs of the class containing the itemset.
        labels: ``(S,)`` int64 class of every itemset.
        node_vocab: ``(V, F)`` float32 node features by label id.
        edge_vocab: ``(Ve, Fe)`` float32 edge features by label id.
        num_classes: K.
        method, dataset: Producer and source dataset names.
        ipc: The largest number of itemsets of any class (a header field; Mirage has no IPC).
        pooling: ``"roots"`` or ``"all"``.
        depth: Tree depth L (0 for whole graphs).
        vocab_kind: ``"dataset"`` (the real data's label table) or ``"set"`` (the set's own).
        class_names: Length-K names (optional).
        provenance: JSON-serialisable record of how the set was made.
        protocol: Evaluation protocol the set is meant for.
        node_degree: ``(Nn,)`` int64 degree of every tree node in the training graph it was taken
            from, or None (whole graphs: the in-degree in ``edge_index``). Computation trees need it
            because a leaf has in-degree 0 in the tree but not in its graph, and GCN's symmetric
            normalisation reads it. Internal nodes' degrees equal their in-degree in the tree;
            leaves' degrees come from the tree's representative occurrence (see
            :mod:`dsdistill.methods.mirage.trees`).
    """

    modality: ClassVar[str] = "graph"

    node_labels: Tensor
    edge_index: Tensor
    edge_labels: Tensor
    tree_ptr: Tensor
    itemset_trees: Tensor
    itemset_ptr: Tensor
    support: Tensor
    labels: Tensor
    node_vocab: Tensor
    edge_vocab: Tensor
    num_classes: int
    method: str
    dataset: str
    ipc: int = 1
    pooling: str = "roots"
    depth: int = 0
    vocab_kind: str = "dataset"
    class_names: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    protocol: str = "graph"
    node_degree: Tensor | None = None

    @property
    def num_trees(self) -> int:
        return int(self.tree_ptr.shape[0]) - 1

    @property
    def num_itemsets(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_nodes(self) -> int:
        return int(self.node_labels.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def tree_edge_ptr(self) -> Tensor:
        """``(T + 1,)`` edge offsets per tree (edges are stored grouped by tree)."""
        tree_of_edge = torch.searchsorted(self.tree_ptr, self.edge_index[0], right=True) - 1
        counts = torch.bincount(tree_of_edge, minlength=self.num_trees)
        return torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])

    def itemset_sizes(self) -> Tensor:
        """``(S,)`` trees per itemset."""
        return self.itemset_ptr[1:] - self.itemset_ptr[:-1]

    def has_shared_itemsets(self) -> bool:
        """Whether some itemset (the same trees) is stored under two different classes.

        Mirage keeps such itemsets when its overlap filter is off; they are identical training
        inputs with different labels, told apart only by their supports.
        """
        seen: dict[tuple[int, ...], int] = {}
        trees = self.itemset_trees.tolist()
        ptr = self.itemset_ptr.tolist()
        for s, label in enumerate(self.labels.tolist()):
            key = tuple(sorted(trees[ptr[s]:ptr[s + 1]]))
            if seen.setdefault(key, label) != label:
                return True
        return False

    def class_counts(self) -> Tensor:
        """``(K,)`` itemsets per class."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def tree_store(self) -> GraphStore:
        """The trees themselves as a :class:`GraphStore` (root-only pool mask when pooling roots)."""
        roots = None
        if self.pooling == "roots":
            roots = torch.zeros(self.num_nodes, dtype=torch.bool)
            roots[self.tree_ptr[:-1]] = True
        return GraphStore(self.node_labels, self.edge_index, self.edge_labels, self.tree_ptr,
                          self.tree_edge_ptr(), torch.zeros(self.num_trees, dtype=torch.int64), roots,
                          node_degree=self.node_degree)

    def to_store(self) -> GraphStore:
        """The training samples: itemset ``s`` becomes the disjoint union (forest) of its trees.

        Returns:
            A store of ``S`` graphs with ``y = labels``, ``weight = support`` and, when pooling
            roots, ``pool_mask`` marking each tree's root.
        """
        trees = self.tree_store()
        flat = trees.batch(self.itemset_trees)
        sizes = self.itemset_sizes()
        per_tree_nodes = trees.nodes_per_graph()[self.itemset_trees]
        per_tree_edges = trees.edges_per_graph()[self.itemset_trees]
        owner = torch.arange(self.num_itemsets).repeat_interleave(sizes)
        zero = torch.zeros(1, dtype=torch.int64)
        node_counts = torch.zeros(self.num_itemsets, dtype=torch.int64).index_add_(0, owner, per_tree_nodes)
        edge_counts = torch.zeros(self.num_itemsets, dtype=torch.int64).index_add_(0, owner, per_tree_edges)
        return GraphStore(flat.node_label, flat.edge_index, flat.edge_label, torch.cat([zero, node_counts.cumsum(0)]),
                          torch.cat([zero, edge_counts.cumsum(0)]), self.labels.clone(), flat.pool_mask,
                          self.support.float(), flat.degree)

    def storage_bytes(self) -> dict[str, int]:
        """Bytes by part as stored (int64 indices, float32 vocabularies).

        Trees count node labels, stored degrees (Mirage), edges with their labels and offsets.
        ``total`` is what training on the set needs beyond the dataset's own label vocabulary
        (trees + itemsets, plus the vocabulary when it is the set's own); ``total_with_vocab`` adds the
        vocabularies in every case.
        """
        degrees = self.num_nodes if self.node_degree is not None else 0
        trees = INT_BYTES * (self.num_nodes + degrees + 3 * self.num_edges + self.num_trees + 1)
        itemsets = INT_BYTES * (int(self.itemset_trees.shape[0]) + 3 * self.num_itemsets + 1)
        vocab = 4 * (self.node_vocab.numel() + self.edge_vocab.numel())
        total = trees + itemsets + (vocab if self.vocab_kind == "set" else 0)
        return {"trees": trees, "itemsets": itemsets, "vocab": vocab, "total": total,
                "total_with_vocab": trees + itemsets + vocab}

    def summary(self) -> str:
        """One line: method, dataset, counts and bytes."""
        kib = self.storage_bytes()["total"] / 1024
        seconds = self.provenance.get("elapsed_seconds")
        took = f", {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
        return (f"{self.method} on {self.dataset}, {self.num_itemsets} training graphs "
                f"({', '.join(str(int(c)) for c in self.class_counts())} per class) from {self.num_trees} "
                f"{'trees' if self.pooling == 'roots' else 'graphs'} ({self.num_nodes} nodes, {self.num_edges} "
                f"edges), {kib:.1f} KiB{took}")

    @classmethod
    def from_subset(cls, store: GraphStore, idx: Tensor, node_vocab: Tensor, edge_vocab: Tensor,
                    num_classes: int, *, method: str, dataset: str, vocab_kind: str = "dataset",
                    class_names: list[str] | None = None, provenance: dict[str, Any] | None = None
                    ) -> "GraphSyntheticSet":
        """Whole graphs ``idx`` of ``store`` as a set (one graph per itemset, pooling all nodes)."""
        sub = store.subset(idx.to(torch.int64))
        n = len(sub)
        counts = torch.bincount(sub.y, minlength=num_classes) if n else torch.zeros(num_classes)
        return cls(node_labels=sub.node_label, edge_index=sub.edge_index, edge_labels=sub.edge_label,
                   tree_ptr=sub.node_ptr, itemset_trees=torch.arange(n), itemset_ptr=torch.arange(n + 1),
                   support=torch.ones(n, dtype=torch.int64), labels=sub.y, node_vocab=node_vocab.float(),
                   edge_vocab=edge_vocab.float(), num_classes=num_classes, method=method, dataset=dataset,
                   ipc=max(1, int(counts.max())), pooling="all", depth=0, vocab_kind=vocab_kind,
                   class_names=list(class_names or []), provenance=dict(provenance or {}))


def subset_bytes(store: GraphStore, idx: Tensor | None = None) -> int:
    """``storage_bytes()["total"]`` of :meth:`GraphSyntheticSet.from_subset` without building it.

    Args:
        store: Real graphs.
        idx: ``(B,)`` graph indices (None = all).
    """
    n_nodes = store.nodes_per_graph()
    n_edges = store.edges_per_graph()
    if idx is not None:
        n_nodes, n_edges = n_nodes[idx], n_edges[idx]
    g = int(n_nodes.shape[0])
    return INT_BYTES * (int(n_nodes.sum()) + 3 * int(n_edges.sum()) + g + 1 + g + 3 * g + 1)


def per_graph_bytes(store: GraphStore) -> Tensor:
    """``(G,)`` bytes one more graph adds to a subset set (nodes, edges, offsets, itemset entry)."""
    return INT_BYTES * (store.nodes_per_graph() + 3 * store.edges_per_graph() + 1 + 4)
