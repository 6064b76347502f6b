"""A content checksum over every member of a dsdistill HDF5 file.

HDF5 checksums neither contiguous raw data nor (in the default file-format version) object headers,
so a flipped byte inside ``/labels`` or an attribute loads silently as a different value. The writer
therefore stores ``content_sha256`` on the root: the SHA-256 of every group, dataset and attribute
(names, dtypes, shapes and bytes, in sorted order; the checksum attribute itself excluded), and the
reader recomputes it after all other validation. A mismatch is reported as a corrupt file; files
without the attribute (written before it existed) load unverified.

Only numbers (integers, floats; bools in attributes) and fixed-length strings are digested: any other type
(variable-length data, references, compounds) makes a checksummed file invalid, since reading
such values from a corrupt file can crash libhdf5. Datasets are checked with
:meth:`Checker.dataset` (size budget) and read in bounded slices.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import h5py
import numpy as np

DIGEST_ATTR = "content_sha256"
_SLICE_BYTES = 64 << 20
_ATTR_BYTES = 1 << 20


def _digestible(tid: h5py.h5t.TypeID) -> bool:
    cls = tid.get_class()
    if cls == h5py.h5t.STRING:
        return not tid.is_variable_str()
    if cls == h5py.h5t.ENUM:  # h5py's bool
        return tid.get_size() == 1
    return cls in (h5py.h5t.INTEGER, h5py.h5t.FLOAT)


def _feed(h: "hashlib._Hash", *parts: Any) -> None:
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode("utf-8")
        h.update(len(raw).to_bytes(8, "little") + raw)


def _attrs(h: "hashlib._Hash", obj: h5py.HLObject, chk: Any, skip: str | None) -> None:
    for name in sorted(obj.attrs):
        if name == skip:
            continue
        aid = obj.attrs.get_id(name)
        tid = aid.get_type()
        if not _digestible(tid):
            raise chk.fail(f"attribute {name!r} of {obj.name} has a type that cannot be checksummed")
        if (math.prod(aid.shape) if aid.shape else 1) * tid.get_size() > _ATTR_BYTES:
            raise chk.fail(f"attribute {name!r} of {obj.name} is too large")
        value = np.asarray(obj.attrs[name])
        _feed(h, "attr", name, value.dtype.str, value.shape, np.ascontiguousarray(value).tobytes())


def _dataset(h: "hashlib._Hash", ds: h5py.Dataset, chk: Any, loaded: dict[str, np.ndarray]) -> None:
    is_text = ds.id.get_type().get_class() == h5py.h5t.STRING
    chk.dataset(ds.parent, ds.name.rsplit("/", 1)[1], kinds="S" if is_text else "n")  # type and size budget
    _feed(h, "dataset", ds.name, ds.dtype.str, ds.shape)
    arr = loaded.get(ds.name)
    if arr is not None and arr.dtype == ds.dtype and arr.shape == ds.shape:
        h.update(np.ascontiguousarray(arr).tobytes())
    elif ds.ndim == 0:
        h.update(np.ascontiguousarray(np.asarray(ds[()])).tobytes())
    elif ds.size:
        step = max(1, _SLICE_BYTES // max(1, ds.size // ds.shape[0] * ds.dtype.itemsize))
        for start in range(0, ds.shape[0], step):
            h.update(np.ascontiguousarray(ds[start: start + step]).tobytes())
    _attrs(h, ds, chk, None)


def content_digest(f: h5py.File, chk: Any, loaded: dict[str, np.ndarray] | None = None) -> str:
    """SHA-256 (hex) of all members of ``f`` except the root's ``content_sha256``.

    Args:
        f: An open file (also usable on a file being written).
        chk: A :class:`~dsdistill.io.validate.Checker` for size checks and messages.
        loaded: Arrays already read, by dataset name (``"/images"``), to avoid reading twice; used
            only when dtype and shape match the dataset.

    Raises:
        SyntheticFileError: A member that cannot be checksummed (type, link kind, size).
    """
    h = hashlib.sha256()
    loaded = loaded or {}

    def visit(group: h5py.Group) -> None:
        _attrs(h, group, chk, DIGEST_ATTR if group.name == "/" else None)
        for name in sorted(group):
            if not isinstance(group.get(name, getlink=True), h5py.HardLink):
                raise chk.fail(f"{group.name.rstrip('/')}/{name} is a link; only plain members are allowed")
            obj = group[name]
            if isinstance(obj, h5py.Group):
                _feed(h, "group", obj.name)
                visit(obj)
            elif isinstance(obj, h5py.Dataset):
                _dataset(h, obj, chk, loaded)
            else:
                raise chk.fail(f"{obj.name} is neither a group nor a dataset")

    visit(f["/"])
    return h.hexdigest()


def verify(f: h5py.File, chk: Any, loaded: dict[str, np.ndarray] | None = None) -> bool:
    """Check the stored checksum; False when the file has none (written before it existed).

    Raises:
        SyntheticFileError: The checksum does not match (the file changed after it was written).
    """
    stored = chk.attr(f["/"], DIGEST_ATTR, "S")
    if stored is None:
        return False
    if content_digest(f, chk, loaded) != stored:
        raise chk.fail("its content checksum does not match (the file was modified or corrupted after it was "
                       "written)")
    return True
