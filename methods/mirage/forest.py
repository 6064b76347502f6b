"""Mined itemsets -> a :class:`GraphSyntheticSet` of computation-tree forests.

Only the trees some itemset uses are materialised (breadth-first, root = local node 0, edges
child -> parent), each exactly once; itemsets refer to them by position. Tree ``i`` of the set is
the ``i``-th distinct tree id in order of first use. Trees are unrolled around their
representative node (:meth:`.trees.TreeIndex.occurrence`), which also gives every tree node's
degree in its training graph (stored as ``node_degree``, read by GCN students).
"""

from __future__ import annotations

import torch

from dsdistill.graphset import INT_BYTES, GraphSyntheticSet

from .trees import TreeIndex


def forest_bytes(index: TreeIndex, itemsets: list[tuple[tuple[int, ...], int, int]],
                 sizes: dict[int, tuple[int, int]], vocab_bytes: int = 0) -> int:
    """``storage_bytes()["total"]`` of :func:`build_forest_set` without materialising anything.

    Args:
        index: The tree index.
        itemsets: ``(tree ids, support, label)`` triples.
        sizes: Cache ``tree id -> (nodes, edges)``, filled as needed.
        vocab_bytes: Bytes of the vocabularies when they are the set's own, else 0.
    """
    used = {t for items, _, _ in itemsets for t in items}
    nodes = edges = 0
    for t in used:
        if t not in sizes:
            sizes[t] = index.tree_size(t)
        nodes, edges = nodes + sizes[t][0], edges + sizes[t][1]
    refs = sum(len(items) for items, _, _ in itemsets)
    return INT_BYTES * (2 * nodes + 3 * edges + len(used) + 1 + refs + 3 * len(itemsets) + 1) + vocab_bytes


def build_forest_set(index: TreeIndex, itemsets: list[tuple[tuple[int, ...], int, int]], *, node_vocab: torch.Tensor,
                     edge_vocab: torch.Tensor, num_classes: int, method: str, dataset: str,
                     class_names: list[str] | None = None, provenance: dict | None = None,
                     vocab_kind: str = "dataset") -> GraphSyntheticSet:
    """Materialise the trees of ``itemsets`` and wrap everything as a roots-pooled set.

    Args:
        index: Tree ids and interning tables of the training split.
        itemsets: ``(tree ids, support, label)`` triples, in the order to store them.
        node_vocab: ``(V, F)`` float32 node features by label id.
        edge_vocab: ``(Ve, Fe)`` float32 edge features by label id.
        vocab_kind: ``"set"`` when ``node_vocab`` is the set's own (coarsened labels).
    """
    position: dict[int, int] = {}
    labels, edges, edge_labels, degrees, ptr = [], [], [], [], [0]
    for items, _, _ in itemsets:
        for t in items:
            if t in position:
                continue
            position[t] = len(position)
            lab, e, el, deg = index.occurrence(t)
            offset = ptr[-1]
            labels.extend(lab)
            degrees.extend(deg)
            edges.extend((a + offset, b + offset) for a, b in e)
            edge_labels.extend(el)
            ptr.append(offset + len(lab))
    tree_ids = [position[t] for items, _, _ in itemsets for t in items]
    counts = torch.tensor([len(items) for items, _, _ in itemsets], dtype=torch.int64)
    item_labels = torch.tensor([c for _, _, c in itemsets], dtype=torch.int64)
    per_class = torch.bincount(item_labels, minlength=num_classes)
    return GraphSyntheticSet(
        node_labels=torch.tensor(labels, dtype=torch.int64),
        edge_index=torch.tensor(edges, dtype=torch.int64).reshape(-1, 2).t().contiguous(),
        edge_labels=torch.tensor(edge_labels, dtype=torch.int64), tree_ptr=torch.tensor(ptr, dtype=torch.int64),
        itemset_trees=torch.tensor(tree_ids, dtype=torch.int64),
        itemset_ptr=torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]),
        support=torch.tensor([s for _, s, _ in itemsets], dtype=torch.int64), labels=item_labels,
        node_vocab=node_vocab.float(), edge_vocab=edge_vocab.float(), num_classes=num_classes, method=method,
        dataset=dataset, ipc=max(1, int(per_class.max()) if len(per_class) else 1), pooling="roots",
        depth=index.depth, vocab_kind=vocab_kind, class_names=list(class_names or []),
        provenance=dict(provenance or {}), node_degree=torch.tensor(degrees, dtype=torch.int64))
