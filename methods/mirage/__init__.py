"""Mirage (Gupta et al., ICLR 2024): graph distillation by mining frequent computation trees.

Registered in ``GRAPH_CONDENSERS`` as ``mirage``. Modules: :mod:`.trees` (canonical tree ids),
:mod:`.fpgrowth` (frequent itemsets), :mod:`.mine` (per-class mining and selection),
:mod:`.forest` (itemsets -> stored forests), :mod:`.condenser` (the pipeline and the threshold
search). Each module docstring lists where and why it departs from the official code.
"""

from dsdistill.methods.mirage.condenser import Mirage, MirageConfig
from dsdistill.methods.mirage.fpgrowth import TooManyItemsets, fpgrowth
from dsdistill.methods.mirage.trees import TreeIndex, compute_tree_ids, transactions

__all__ = ["Mirage", "MirageConfig", "TooManyItemsets", "TreeIndex", "compute_tree_ids", "fpgrowth", "transactions"]
