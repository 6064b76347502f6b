"""Condensers (importable as ``dsdistill.methods``); importing registers them in ``CONDENSERS``."""

from dsdistill.methods import coreset, dm  # noqa: F401  (registration side effects)
from dsdistill.methods import sre2l  # noqa: F401,E402  (sre2l, cvdd)
from dsdistill.methods import infer  # noqa: F401,E402  (infer)
from dsdistill.methods import nrr  # noqa: F401,E402  (nrr)
from dsdistill.methods import hello  # noqa: F401,E402  (hello; open_clip imported lazily)
from dsdistill.methods import gradient_matching  # noqa: F401  (dc, dsa)
from dsdistill.methods import trajectory  # noqa: F401  (mtt, ftd, ast, datm)
from dsdistill.methods import doscond, graph_baselines, mirage  # noqa: F401,E402  (GRAPH_CONDENSERS)
from dsdistill.registry import CONDENSERS

__all__ = ["CONDENSERS"]
