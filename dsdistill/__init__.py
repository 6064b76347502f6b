"""dsdistill: dataset distillation toolkit.

Condense a labelled dataset into a tiny synthetic set (``dsdistill.methods``), store it as one
self-describing HDF5 file (``dsdistill.io``), and evaluate it under fixed protocols
(``dsdistill.evaluators``).
"""

__version__ = "0.1.0"
