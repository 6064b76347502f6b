"""Condensers (importable as ``dsdistill.methods``); importing registers them in ``CONDENSERS``."""

from dsdistill.methods import coreset, dm  # noqa: F401  (registration side effects)
from dsdistill.registry import CONDENSERS

__all__ = ["CONDENSERS"]
