"""Condensers (importable as ``dsdistill.methods``); importing registers them in ``CONDENSERS``."""

from dsdistill.methods import coreset, dm  # noqa: F401  (registration side effects)
from dsdistill.methods import doscond, graph_baselines, mirage  # noqa: F401,E402  (GRAPH_CONDENSERS)
from dsdistill.registry import CONDENSERS

__all__ = ["CONDENSERS"]
