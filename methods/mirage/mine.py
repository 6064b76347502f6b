"""Per-class mining of frequent tree sets and the choice of itemsets to keep.

Deviations from Mirage's official code (GRAPH.md section 1.2, step 4), all deliberate:

* Any number of classes. The official scripts hard-code classes {0, 1} (``classwise_trees =
  {0: set(), 1: set()}``, ``dataset_classwise[0] + dataset_classwise[1]``); here every class is
  mined separately and thresholds are per class.
* Thresholds may be relative (a fraction of the class's training graphs, so one number serves
  imbalanced classes) or absolute counts as in the official configs; both use ``>=``.
* The "binary only" overlap filter (drop an itemset frequent in the other class) generalises to
  "frequent in any other class" and is an option (``overlap="drop"``); the official C++ path
  computes it and then disables it (``invalid_tree_idx = {}``), i.e. ``overlap="keep"``. The
  condenser's default ``"auto"`` drops unless that leaves a class empty at that threshold.
* ``max_itemset_size`` and ``max_itemsets_per_class`` (top by support, then smaller, then by id)
  bound the enumeration and the set; the official code keeps every frequent itemset.
"""

from __future__ import annotations

import math

from .fpgrowth import fpgrowth

Itemset = tuple[tuple[int, ...], int, int]  # (tree ids, support, class)


def thresholds_for(min_support: float, class_sizes: list[int]) -> list[int]:
    """Absolute per-class thresholds: ``min_support`` >= 1 is a count, in (0, 1) a fraction."""
    if min_support >= 1:
        return [int(min_support)] * len(class_sizes)
    if not 0 < min_support < 1:
        raise ValueError(f"min_support must be a count >= 1 or a fraction in (0, 1), got {min_support}")
    return [max(1, math.ceil(min_support * n)) for n in class_sizes]


def mine_classes(transactions_by_class: list[list[list[int]]], thresholds: list[int], *, max_size: int,
                 limit: int) -> list[dict[tuple[int, ...], int]]:
    """FP-growth per class: ``[{itemset: support}]`` for every class (may raise TooManyItemsets)."""
    return [fpgrowth(trans, theta, max_size=max_size, limit=limit) if trans else {}
            for trans, theta in zip(transactions_by_class, thresholds)]


def select_itemsets(mined: list[dict[tuple[int, ...], int]], *, overlap: str = "drop", cap: int = 0) -> list[Itemset]:
    """The itemsets to store, class-major.

    Args:
        mined: Per class ``{itemset: support}``.
        overlap: ``"drop"`` itemsets frequent in another class too, or ``"keep"`` them.
        cap: At most this many per class (0 = all), by support, then fewer trees, then ids.
    """
    if overlap not in ("drop", "keep"):
        raise ValueError(f"overlap must be 'drop' or 'keep', got {overlap!r}")
    out: list[Itemset] = []
    for c, patterns in enumerate(mined):
        items = [(p, s) for p, s in patterns.items()
                 if overlap == "keep" or not any(p in other for k, other in enumerate(mined) if k != c)]
        items.sort(key=lambda ps: (-ps[1], len(ps[0]), ps[0]))
        out.extend((p, s, c) for p, s in (items[:cap] if cap else items))
    return out
