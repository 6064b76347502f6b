"""Reading and writing dsdistill files.

``save_synthetic`` / ``load_synthetic`` store a :class:`~dsdistill.synthetic.SyntheticSet` as one
self-describing HDF5 file (schema v1, see :mod:`dsdistill.io.hdf5`); ``read_header`` and
``describe`` inspect a file without loading it; the ``atomic_*`` helpers write any output so a
crash never leaves a half-written file under the final name.
"""

from dsdistill.io.atomic import atomic_path, atomic_write_json, atomic_write_text
from dsdistill.io.hdf5 import (FORMAT, FORMAT_VERSION, describe, load_synthetic, read_header,
                               save_synthetic)
from dsdistill.io.graph_hdf5 import load_graph_synthetic, save_graph_synthetic  # noqa: E402

__all__ = ["FORMAT", "FORMAT_VERSION", "atomic_path", "atomic_write_json", "atomic_write_text",
           "describe", "load_synthetic", "read_header", "save_synthetic", "load_graph_synthetic",
           "save_graph_synthetic"]
