"""NRR-DD (non-critical region refinement) and its distance-based representative (DBR) labels.

Registers the ``nrr`` condenser; the ``dbr`` evaluation protocol lives in
:mod:`dsdistill.evaluators.nrr`.
"""

from dsdistill.methods.nrr.condenser import NRR, NRRConfig  # noqa: F401  (registers "nrr")

__all__ = ["NRR", "NRRConfig"]
