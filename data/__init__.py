"""Datasets: the catalogue (``load_real``), ``RealData`` splits and file readers.

Importable as ``dsdistill.data`` (the ``data/`` folder is mapped into the namespace).
"""

from dsdistill.data.catalogue import canonical_name, load_raw, load_real
from dsdistill.data.paths import default_data_root, resolve_data_root
from dsdistill.data.real import RealData, stratified_split
from dsdistill.data.specs import SPECS, DatasetSpec

__all__ = ["RealData", "load_real", "load_raw", "canonical_name", "stratified_split", "SPECS", "DatasetSpec",
           "default_data_root", "resolve_data_root"]

from dsdistill.data import graphs as _graphs  # noqa: E402,F401  (registers the graph datasets)
