"""FP-growth frequent-itemset mining (Han, Pei & Yin, 2000), dependency-free.

Semantics match ``pyfpgrowth.find_frequent_patterns`` as Mirage uses it: an itemset is frequent
when at least ``min_support`` transactions contain all its items (``>=``, absolute count); every
frequent itemset is returned, singletons included, as ``{sorted tuple of items: support}``.
Added over pyfpgrowth: ``max_size`` bounds the itemset size (and so the recursion), and
``limit`` aborts with :class:`TooManyItemsets` once more itemsets than that are found, so a low
threshold cannot enumerate exponentially many patterns.

Example:
    >>> fpgrowth([[1, 2], [1, 2, 3], [1]], 2)
    {(1,): 3, (2,): 2, (1, 2): 2}
"""

from __future__ import annotations

from collections import Counter


class TooManyItemsets(RuntimeError):
    """More than ``limit`` frequent itemsets: raise the threshold or lower ``max_size``."""


class _Node:
    __slots__ = ("item", "count", "parent", "children")

    def __init__(self, item: int | None, parent: "_Node | None") -> None:
        self.item, self.count, self.parent, self.children = item, 0, parent, {}


def _build(weighted: list[tuple[list[int], int]], min_support: int):
    """FP-tree of weighted transactions: (frequent items by descending support, supports, header)."""
    counts: Counter[int] = Counter()
    for items, weight in weighted:
        for item in items:
            counts[item] += weight
    frequent = {item: c for item, c in counts.items() if c >= min_support}
    order = sorted(frequent, key=lambda item: (-frequent[item], item))
    rank = {item: r for r, item in enumerate(order)}
    root = _Node(None, None)
    header: dict[int, list[_Node]] = {item: [] for item in order}
    for items, weight in weighted:
        node = root
        for item in sorted((i for i in items if i in rank), key=rank.__getitem__):
            child = node.children.get(item)
            if child is None:
                child = node.children[item] = _Node(item, node)
                header[item].append(child)
            child.count += weight
            node = child
    return order, frequent, header


def _mine(weighted, min_support, suffix, max_size, out, limit) -> None:
    order, frequent, header = _build(weighted, min_support)
    for item in reversed(order):  # least frequent first: its conditional base is smallest
        pattern = (item, *suffix)
        out[tuple(sorted(pattern))] = frequent[item]
        if limit and len(out) > limit:
            raise TooManyItemsets(f"more than {limit} frequent itemsets at min_support {min_support}")
        if max_size and len(pattern) >= max_size:
            continue
        base = []
        for node in header[item]:
            path, p = [], node.parent
            while p is not None and p.item is not None:
                path.append(p.item)
                p = p.parent
            if path:
                base.append((path, node.count))
        if base:
            _mine(base, min_support, pattern, max_size, out, limit)


def fpgrowth(transactions: list[list[int]], min_support: int, *, max_size: int = 0,
             limit: int = 0) -> dict[tuple[int, ...], int]:
    """All itemsets contained in at least ``min_support`` transactions.

    Args:
        transactions: Lists of item ids (duplicates within a transaction count once).
        min_support: Absolute threshold, >= 1.
        max_size: Largest itemset size returned (0 = unbounded).
        limit: Raise :class:`TooManyItemsets` past this many itemsets (0 = no limit).

    Returns:
        ``{itemset (ascending tuple): support}``.
    """
    if min_support < 1:
        raise ValueError(f"min_support must be an absolute count >= 1, got {min_support}")
    out: dict[tuple[int, ...], int] = {}
    _mine([(list(set(t)), 1) for t in transactions], int(min_support), (), max_size, out, limit)
    return dict(sorted(out.items(), key=lambda kv: (len(kv[0]), kv[0])))
