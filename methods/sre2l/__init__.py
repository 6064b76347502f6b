"""Decoupled soft-label condensers: ``sre2l`` (Squeeze, Recover, Relabel) and ``cvdd`` (committee voting).

Modules: :mod:`.recover` (BN-statistics inversion pieces), :mod:`.patches` (RDED-style patch
initialisation), :mod:`.condenser` (the recover -> relabel pipeline and ``sre2l``), :mod:`.voting`
(CV-DD voter schedules and prior weights) and :mod:`.cvdd` (the ``cvdd`` condenser). Teachers come
from :mod:`dsdistill.teachers`, labels from :mod:`dsdistill.softlabels`.
"""

from dsdistill.methods.sre2l.condenser import DecoupledCondenser, SRe2L, SRe2LConfig
from dsdistill.methods.sre2l.cvdd import CVDD, CVDDConfig

__all__ = ["CVDD", "CVDDConfig", "DecoupledCondenser", "SRe2L", "SRe2LConfig"]
