"""Computation trees of depth L, identified level by level with a collision-free canonical code.

The depth-L computation tree of node ``v`` is the message-passing unrolling: ``v`` at the root, one
child per in-edge ``u -> v`` (every neighbour, *including* the one the walk came from), recursively
until depth L. Two nodes get the same id iff their trees are isomorphic as rooted, node- and
edge-labelled trees. Ids are computed bottom-up, Weisfeiler-Lehman style, without ever
materialising a tree::

    id_0(v) = intern_0((label(v), ()))
    id_d(v) = intern_d((label(v), sorted(edge_label(u->v) * n_{d-1} + id_{d-1}(u) for u -> v)))

``intern_d`` is a dict from the tuple to a dense integer (hash-consing; equal tuples, equal ids,
and different tuples never share an id because the dict compares whole tuples). ``n_{d-1}`` is the
number of level-(d-1) ids, so ``edge_label * n_{d-1} + id`` is a bijection onto pairs (mixed-radix,
exact in int64), never a digit concatenation. Cost: O(L * (|V| + |E| log |E|)).

Deviations from Mirage's official code (idea-iitd/Mirage, see shared/papers/GRAPH.md section 1.2):

* The Python scripts (NCI1, IMDB-B, molbbbp, molbace) encode a tree as the integer
  ``int('1' + str(label + 2) + ''.join(sorted(child codes)) + '0')``. Labels >= 8 produce the
  digits 1 and 0 that double as brackets, so different trees collide (root 0 with child 10 and
  root 19 with child 0 both give ``12112020``; 1,592 collisions among 78k NCI1-sized trees).
  The tuple interning here cannot collide (``tests/graph/test_trees.py`` checks that exact pair).
* Both official paths skip single-node trees, i.e. drop isolated nodes. Here an isolated node has
  the one-node tree ``(label, ())`` like any other node, so a graph's transaction is the set of
  the trees of *all* its nodes and pooling over the roots matches pooling over the real graph.

Degrees (for GCN). A tree id fixes every internal node's degree (its number of children) but not
a leaf's: two occurrences of the same depth-L tree can have leaves of different degrees in their
graphs. :meth:`TreeIndex.occurrence` materialises a tree from its *representative occurrence* --
the first node (in training-split order) with that id -- by unrolling the real graph around it,
and returns every tree node's degree in that graph; the stored set keeps those degrees. Making the
leaf degree part of the tree identity instead (level-0 code ``(label, degree)``) was measured and
rejected: at the default depths it multiplies the number of distinct trees (training splits, depth 2
unless noted: MUTAG 240 -> 457, PROTEINS 17,379 -> 27,105, NCI1 3,693 -> 11,083, DD depth 1 with 8
labels 43,172 -> 236,913; IMDB-BINARY unchanged, its labels are degrees), which splits the
supports FP-growth counts for GIN/GAT students that never read degrees.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TreeIndex:
    """Tree ids of every node and the interning tables needed to rebuild any tree.

    Attributes:
        depth: L.
        levels: ``levels[d][i] = (node_label, child_codes)`` for level-d id ``i``; a child code is
            ``edge_label * len(levels[d - 1]) + child_id``.
        node_tree: ``(N,)`` int64 level-L id of every node.
        graph: ``(node_label (N,), in_ptr (N + 1,), in_src (E,), in_edge_label (E,))``: the graph the
            ids were computed on, in-edges grouped by target, for :meth:`occurrence`.
    """

    depth: int
    levels: list[list[tuple[int, tuple[int, ...]]]]
    node_tree: Tensor
    graph: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    @property
    def num_trees(self) -> int:
        return len(self.levels[self.depth])

    def tree(self, tree_id: int) -> tuple[list[int], list[tuple[int, int]], list[int]]:
        """Materialise level-L tree ``tree_id`` breadth-first (root = node 0).

        Returns:
            ``(node_labels, edges, edge_labels)``: labels of the ``n`` nodes, ``(child, parent)``
            local index pairs (child -> parent, so messages flow to the root) and their labels.
        """
        labels: list[int] = []
        edges: list[tuple[int, int]] = []
        edge_labels: list[int] = []
        queue = deque([(self.depth, tree_id, -1, 0)])
        while queue:
            d, t, parent, edge_label = queue.popleft()
            me = len(labels)
            label, children = self.levels[d][t]
            labels.append(label)
            if parent >= 0:
                edges.append((me, parent))
                edge_labels.append(edge_label)
            if children:
                radix = len(self.levels[d - 1])
                for code in children:
                    e, child = divmod(code, radix)
                    queue.append((d - 1, child, me, e))
        return labels, edges, edge_labels

    def representative(self, tree_id: int) -> int:
        """The first node whose level-L tree is ``tree_id``."""
        return int(torch.nonzero(self.node_tree == tree_id)[0, 0])

    def occurrence(self, tree_id: int) -> tuple[list[int], list[tuple[int, int]], list[int], list[int]]:
        """Tree ``tree_id`` unrolled around its representative node, with original degrees.

        Same tree as :meth:`tree` (up to the order of siblings), plus every tree node's degree
        (in-degree) in the graph; leaves carry the representative occurrence's degrees.

        Returns:
            ``(node_labels, edges, edge_labels, degrees)``; ``edges`` are ``(child, parent)``
            local pairs, node 0 is the root.
        """
        if self.graph is None:
            raise ValueError("this TreeIndex was built without its graph; use compute_tree_ids")
        node_label, in_ptr, in_src, in_label = self.graph
        v0 = self.representative(tree_id)
        labels, edges, edge_labels, degrees = [], [], [], []
        queue = deque([(v0, self.depth, -1, 0)])
        while queue:
            v, d, parent, edge_label = queue.popleft()
            me = len(labels)
            start, stop = int(in_ptr[v]), int(in_ptr[v + 1])
            labels.append(int(node_label[v]))
            degrees.append(stop - start)
            if parent >= 0:
                edges.append((me, parent))
                edge_labels.append(edge_label)
            if d:
                queue.extend((int(u), d - 1, me, int(e)) for u, e in zip(in_src[start:stop], in_label[start:stop]))
        return labels, edges, edge_labels, degrees

    def tree_size(self, tree_id: int) -> tuple[int, int]:
        """``(nodes, edges)`` of level-L tree ``tree_id`` without materialising it."""
        memo: list[dict[int, int]] = [dict() for _ in range(self.depth + 1)]

        def count(d: int, t: int) -> int:
            if t not in memo[d]:
                children = self.levels[d][t][1]
                radix = len(self.levels[d - 1]) if d else 1
                memo[d][t] = 1 + sum(count(d - 1, code % radix) for code in children)
            return memo[d][t]

        n = count(self.depth, tree_id)
        return n, n - 1


def compute_tree_ids(node_label: Tensor, edge_index: Tensor, edge_label: Tensor | None, depth: int) -> TreeIndex:
    """Canonical ids of the depth-``depth`` computation trees of all nodes (see module docstring).

    Args:
        node_label: ``(N,)`` int64 categorical node labels.
        edge_index: ``(2, E)`` int64; node ``v``'s children are the sources of edges ``u -> v``.
        edge_label: ``(E,)`` int64 categorical edge labels, or None (all 0).
        depth: L >= 0.

    Returns:
        A :class:`TreeIndex`; ids are dense per level and depend on the order nodes are seen.
    """
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    n = int(node_label.shape[0])
    labels = node_label.tolist()
    table: dict[tuple[int, tuple[int, ...]], int] = {}
    ids = [table.setdefault((lab, ()), len(table)) for lab in labels]
    levels = [list(table)]
    src, dst = edge_index[0].to(torch.int64), edge_index[1].to(torch.int64)
    e_label = torch.zeros_like(src) if edge_label is None else edge_label.to(torch.int64)
    counts = torch.bincount(dst, minlength=n)
    ptr = [0, *torch.cumsum(counts, 0).tolist()]
    for _ in range(depth):
        prev = torch.tensor(ids, dtype=torch.int64)
        radix = len(levels[-1])
        code = e_label * radix + prev[src]
        key_max = int(code.max()) + 1 if code.numel() else 1
        order = torch.argsort(dst * key_max + code)  # by target node, then child code
        codes = code[order].tolist()
        table = {}
        ids = [table.setdefault((labels[v], tuple(codes[ptr[v]:ptr[v + 1]])), len(table)) for v in range(n)]
        levels.append(list(table))
    by_target = torch.argsort(dst, stable=True)
    graph = (node_label.to(torch.int64), torch.tensor(ptr, dtype=torch.int64), src[by_target], e_label[by_target])
    return TreeIndex(depth=depth, levels=levels, node_tree=torch.tensor(ids, dtype=torch.int64), graph=graph)


def transactions(node_tree: Tensor, node_ptr: Tensor) -> list[list[int]]:
    """The set of tree ids of every graph (Mirage's transactions; multiplicity is dropped).

    Args:
        node_tree: ``(N,)`` tree id of every node.
        node_ptr: ``(G + 1,)`` node offsets of the graphs.

    Returns:
        ``G`` sorted lists of distinct tree ids.
    """
    g = int(node_ptr.shape[0]) - 1
    owner = torch.arange(g).repeat_interleave(node_ptr[1:] - node_ptr[:-1])
    radix = int(node_tree.max()) + 1 if node_tree.numel() else 1
    pairs = torch.unique(owner * radix + node_tree)  # sorted: by graph, then tree
    graph_of, tree_of = (pairs // radix).tolist(), (pairs % radix).tolist()
    out: list[list[int]] = [[] for _ in range(g)]
    for graph, tree in zip(graph_of, tree_of):
        out[graph].append(tree)
    return out


def coarsen_labels(node_label: Tensor, node_vocab: Tensor, top: int) -> tuple[Tensor, Tensor]:
    """Keep the ``top`` most frequent node labels, merge the rest into one "other" label.

    Mirage's DD config does this with 16 hand-picked labels (every other label becomes 0), because
    with DD's 89 labels almost every 1-hop tree is unique. Here the kept labels are the most
    frequent ones of the training split, and "other" gets the frequency-weighted mean feature of
    the labels it merges, so a student's first (linear) layer sees their average on trees.

    Args:
        node_label: ``(N,)`` int64 training node labels.
        node_vocab: ``(V, F)`` features by label.
        top: Labels to keep (>= 1).

    Returns:
        ``(coarse (N,) int64 in [0, top], coarse_vocab (top + 1, F) or (top, F))``.
    """
    counts = torch.bincount(node_label, minlength=node_vocab.shape[0])
    order = torch.argsort(-counts, stable=True)
    keep = order[:top][counts[order[:top]] > 0]
    rest = order[top:][counts[order[top:]] > 0]
    mapping = torch.full((node_vocab.shape[0],), len(keep), dtype=torch.int64)
    mapping[keep] = torch.arange(len(keep))
    rows = [node_vocab[keep].float()]
    if len(rest):
        w = counts[rest].double() / counts[rest].sum()
        rows.append((w[:, None] * node_vocab[rest].double()).sum(0, keepdim=True).float())
    return mapping[node_label], torch.cat(rows)
