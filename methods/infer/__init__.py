"""INFER (Inter-class Feature Compensator, ICLR'25): the ``infer`` condenser.

Modules: :mod:`.ufc` (budget split, layout, one compensator's optimisation) and :mod:`.condenser`
(the ``infer`` condenser and :func:`~.condenser.infer_parts`, the checked reader used by the
``infer`` evaluation protocol in :mod:`dsdistill.evaluators.infer`).
"""

from dsdistill.methods.infer.condenser import Infer, InferConfig, InferParts, infer_parts
from dsdistill.methods.infer.ufc import budget_split, expand, expanded_labels

__all__ = ["Infer", "InferConfig", "InferParts", "budget_split", "expand", "expanded_labels", "infer_parts"]
