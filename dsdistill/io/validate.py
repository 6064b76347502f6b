"""Validation of dsdistill HDF5 files before anything large is read.

Every check ends in :class:`~dsdistill.errors.SyntheticFileError` with one sentence that names the
file. Shapes, dtypes, layouts and declared sizes are checked from metadata only, so a forged
header (a dataset that claims terabytes in a kilobyte file) is refused before any allocation.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from dsdistill.errors import SyntheticFileError
from dsdistill.synthetic import SPACES, SyntheticSet

FORMAT = "dsdistill"
FORMAT_VERSION = 1
ENCODING_TYPE = "dsdistill.synthetic_set"
ENCODING_VERSION = "1.0.0"
MODALITIES = ("image", "graph")
MAX_CLASSES = 100_000
MAX_ELEMENTS = 2**33  # per dataset; ImageNet-1k IPC 50 at 224 px is 7.5e9 elements
MAX_IPC = 10**7
_RATIO_PLAIN = 4  # declared bytes may exceed the file size this much when unfiltered
_RATIO_FILTERED = 1100  # ... and this much when filtered (deflate cannot beat 1032:1)
_SLACK = 1 << 20


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    msg = text[0] if text else ""
    msg = msg[:200].rstrip(". ")
    return f"{type(err).__name__}: {msg}" if msg else type(err).__name__


@contextmanager
def open_h5(path: str | os.PathLike[str]) -> Iterator[tuple[h5py.File, "Checker"]]:
    """Open ``path`` read-only; turn every failure inside the block into SyntheticFileError.

    Yields:
        ``(file, checker)``.

    Raises:
        SyntheticFileError: Missing, unreadable or (inside the block) invalid file.
    """
    p = Path(path)
    if not p.exists():
        raise SyntheticFileError(f"{p} does not exist")
    if not p.is_file():
        raise SyntheticFileError(f"{p} is not a regular file")
    try:
        size = p.stat().st_size
        f = h5py.File(p, "r")
    except Exception as err:
        raise SyntheticFileError(
            f"{p} is not a readable HDF5 file (truncated or corrupt?): {_short(err)}") from None
    try:
        with f:
            yield f, Checker(p, size)
    except SyntheticFileError:
        raise
    except (Exception, RecursionError, MemoryError) as err:
        raise SyntheticFileError(
            f"{p} is not a readable HDF5 file (truncated or corrupt?): {_short(err)}") from None


class Checker:
    """Typed access to attributes and datasets of one open file, failing with one sentence.

    Args:
        path: The file (for messages).
        size: Its size in bytes (bounds what any dataset may declare).
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    def fail(self, detail: str) -> SyntheticFileError:
        """Build the error for an inconsistent file (callers ``raise`` it)."""
        return SyntheticFileError(f"{self.path} is inconsistent: {detail}")

    # ---- attributes -------------------------------------------------------------------------
    def attr(self, obj: h5py.HLObject, name: str, kind: str) -> Any:
        """Read a scalar attribute of HDF5 type ``kind`` (see :func:`type_ok`); None if absent.

        The type is checked from the file's type message before any value is read: reading a
        corrupt variable-length value can crash libhdf5, so only numbers and fixed-length
        strings are ever read.
        """
        if name not in obj.attrs:
            return None
        aid = obj.attrs.get_id(name)
        tid = aid.get_type()
        if not type_ok(tid, kind):
            raise self.fail(f"attribute {name!r} of {obj.name} must be {_WANT[kind]}, "
                            f"got {type_desc(tid)}")
        if aid.shape not in ((), (1,)) or tid.get_size() > 1 << 16:
            raise self.fail(f"attribute {name!r} of {obj.name} must be a scalar")
        value = obj.attrs[name]
        if isinstance(value, np.ndarray):
            value = value.reshape(-1)[0]
        if kind == "S":
            value = bytes(value).decode("utf-8")
        return value

    def attr_str(self, obj: h5py.HLObject, name: str, default: str | None = None) -> str:
        """A fixed-length UTF-8 string attribute; required unless ``default`` is given."""
        value = self.attr(obj, name, "S")
        if value is None:
            if default is None:
                raise self.fail(f"{obj.name} has no attribute {name!r}")
            return default
        return value

    def attr_int(self, obj: h5py.HLObject, name: str, lo: int, hi: int) -> int:
        """A required integer attribute in ``[lo, hi]`` (bools and floats are refused)."""
        value = self.attr(obj, name, "iu")
        if value is None:
            raise self.fail(f"{obj.name} has no attribute {name!r}")
        if not lo <= int(value) <= hi:
            raise self.fail(f"attribute {name!r} of {obj.name} is {int(value)}, outside [{lo}, {hi}]")
        return int(value)

    def attr_float(self, obj: h5py.HLObject, name: str, default: float | None = None,
                   positive: bool = False) -> float:
        """A finite real attribute (int or float); required unless ``default`` is given."""
        value = self.attr(obj, name, "n")
        if value is None:
            if default is None:
                raise self.fail(f"{obj.name} has no attribute {name!r}")
            return default
        value = float(value)
        if not math.isfinite(value) or (positive and value <= 0):
            raise self.fail(f"attribute {name!r} of {obj.name} is {value}, not a "
                            f"{'positive ' if positive else ''}finite number")
        return value

    # ---- strings ----------------------------------------------------------------------------
    def text(self, ds: h5py.Dataset) -> Any:
        """Decode a validated fixed-length string dataset: ``str`` (scalar) or ``list[str]``."""
        raw = ds[()]
        try:
            if isinstance(raw, np.ndarray):
                return [bytes(b).decode("utf-8") for b in raw.reshape(-1)]
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{ds.name} is not valid UTF-8") from None

    def json_object(self, ds: h5py.Dataset) -> dict[str, Any]:
        """Parse a scalar string dataset holding a JSON object."""
        return self.json_text(self.text(ds), ds.name)

    def json_text(self, text: str, where: str) -> dict[str, Any]:
        """Parse ``text`` (from ``where``) as a JSON object."""
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as err:
            raise self.fail(f"{where} is not valid JSON ({_short(err)})") from None
        if not isinstance(value, dict):
            raise self.fail(f"{where} is not a JSON object")
        return value

    # ---- members ----------------------------------------------------------------------------
    def member(self, group: h5py.Group, name: str, kind: type, required: bool = True) -> Any:
        """A hard-linked child of ``group`` of type ``kind`` (h5py.Group or h5py.Dataset)."""
        link = group.get(name, getlink=True)
        where = f"{group.name.rstrip('/')}/{name}"
        if link is None:
            if required:
                raise self.fail(f"it has no {where}")
            return None
        if not isinstance(link, h5py.HardLink):
            raise self.fail(f"{where} is a {type(link).__name__}; only plain members are allowed")
        obj = group[name]
        if not isinstance(obj, kind):
            raise self.fail(f"{where} must be a {kind.__name__.lower()}")
        return obj

    def dataset(self, group: h5py.Group, name: str, *, kinds: str, shape: tuple | None = None,
                ndim: int | None = None, required: bool = True) -> h5py.Dataset | None:
        """A dataset with dtype kind in ``kinds`` (``"f"``, ``"iu"``, ``"S"`` for strings).

        ``shape`` entries that are None are free. Also enforces the size budget: at most
        ``MAX_ELEMENTS`` elements, and declared bytes within a bounded multiple of the file size
        (4x unfiltered, 1100x compressed) so forged shapes never cause large allocations.
        External and virtual storage are refused.
        """
        ds = self.member(group, name, h5py.Dataset, required)
        if ds is None:
            return None
        where = ds.name
        dshape = ds.shape
        if dshape is None:
            raise self.fail(f"{where} has an empty dataspace")
        n = math.prod(dshape)
        if n > MAX_ELEMENTS:
            raise self.fail(f"{where} declares shape {dshape} ({n} elements), more than a "
                            f"dsdistill file may hold ({MAX_ELEMENTS})")
        plist = ds.id.get_create_plist()
        if plist.get_layout() == h5py.h5d.VIRTUAL or plist.get_external_count() > 0:
            raise self.fail(f"{where} keeps its data outside the file (virtual/external storage)")
        ratio = _RATIO_FILTERED if plist.get_nfilters() > 0 else _RATIO_PLAIN
        tid = ds.id.get_type()
        nbytes = n * tid.get_size()
        if nbytes > ratio * self.size + _SLACK:
            raise self.fail(f"{where} declares shape {dshape} ({nbytes} bytes), far more than a "
                            f"{self.size}-byte file can hold (forged or corrupt header)")
        if not type_ok(tid, kinds):
            raise self.fail(f"{where} has type {type_desc(tid)}, expected {_WANT[kinds]}")
        if ndim is not None and len(dshape) != ndim:
            raise self.fail(f"{where} must be {ndim}-D, got shape {dshape}")
        if shape is not None and (len(dshape) != len(shape) or any(
                want is not None and got != want for got, want in zip(dshape, shape))):
            want_s = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise self.fail(f"{where} has shape {dshape}, expected {want_s}")
        return ds


_WANT = {"f": "float16/32/64", "iu": "an integer", "n": "a number",
         "S": "a fixed-length UTF-8 string"}


def type_ok(tid: h5py.h5t.TypeID, kind: str) -> bool:
    """Whether HDF5 type ``tid`` is of ``kind``: ``"f"`` (IEEE float of 2/4/8 bytes), ``"iu"``
    (integer), ``"n"`` (integer or float) or ``"S"`` (fixed-length, ASCII/UTF-8 string)."""
    cls = tid.get_class()
    if kind == "S":
        return cls == h5py.h5t.STRING and not tid.is_variable_str()
    is_float = cls == h5py.h5t.FLOAT and tid.get_size() in (2, 4, 8)
    is_int = cls == h5py.h5t.INTEGER and tid.get_size() in (1, 2, 4, 8)
    return {"f": is_float, "iu": is_int, "n": is_float or is_int}[kind]


def type_desc(tid: h5py.h5t.TypeID) -> str:
    """A short description of an HDF5 type for messages (never reads data)."""
    cls = tid.get_class()
    if cls == h5py.h5t.STRING:
        return "a variable-length string" if tid.is_variable_str() else "a fixed-length string"
    names = {h5py.h5t.INTEGER: "integer", h5py.h5t.FLOAT: "float", h5py.h5t.VLEN:
             "variable-length data", h5py.h5t.ENUM: "enum (e.g. bool)", h5py.h5t.COMPOUND:
             "compound", h5py.h5t.OPAQUE: "opaque", h5py.h5t.ARRAY: "array",
             h5py.h5t.REFERENCE: "reference", h5py.h5t.BITFIELD: "bitfield"}
    return f"{names.get(cls, f'class {cls}')} of {tid.get_size()} bytes"


def check_header(f: h5py.File, chk: Checker) -> dict[str, Any]:
    """Validate the root attributes and return them as plain Python values.

    Returns:
        ``format``, ``format_version``, ``encoding-type``, ``encoding-version``, ``modality``,
        ``method``, ``dataset``, ``num_classes``, ``ipc``, ``created_by`` and, for images,
        ``space`` and ``protocol`` (None when stored as ``""``).
    """
    root = f["/"]
    try:
        fmt = chk.attr(root, "format", "S")
    except (SyntheticFileError, UnicodeDecodeError):
        fmt = None
    if fmt != FORMAT:
        raise SyntheticFileError(f"{chk.path} is not a dsdistill file (foreign HDF5): its root "
                                 f"has no format='{FORMAT}' attribute")
    version = chk.attr_int(root, "format_version", 0, 2**62)
    enc_version = chk.attr_str(root, "encoding-version", "")
    enc_major = enc_version.split(".")[0]
    if version > FORMAT_VERSION or (enc_major.isdigit() and int(enc_major) > FORMAT_VERSION):
        shown = version if version > FORMAT_VERSION else enc_version
        raise SyntheticFileError(f"{chk.path} was written by a newer dsdistill (format version "
                                 f"{shown}); upgrade dsdistill")
    if version < 1:
        raise chk.fail(f"format_version {version} is unknown")
    header: dict[str, Any] = {
        "format": fmt, "format_version": version,
        "encoding-type": chk.attr_str(root, "encoding-type", ""), "encoding-version": enc_version,
        "modality": chk.attr_str(root, "modality"),
    }
    if header["modality"] not in MODALITIES:
        raise chk.fail(f"modality {header['modality']!r} is not one of {MODALITIES}")
    header["method"] = chk.attr_str(root, "method")
    header["dataset"] = chk.attr_str(root, "dataset")
    header["num_classes"] = chk.attr_int(root, "num_classes", 1, MAX_CLASSES)
    header["ipc"] = chk.attr_int(root, "ipc", 1, MAX_IPC)
    header["created_by"] = chk.attr_str(root, "created_by", "")
    if header["modality"] == "image":
        header["space"] = chk.attr_str(root, "space")
        if header["space"] not in SPACES:
            raise chk.fail(f"space {header['space']!r} is not one of {SPACES}")
        header["protocol"] = chk.attr_str(root, "protocol", "") or None
    return header


def inspect_image(f: h5py.File, chk: Checker, header: dict[str, Any]) -> dict[str, Any]:
    """Check the structure of an image file from metadata only (no array data is read).

    Returns:
        A layout dict: ``images``, ``labels`` (datasets), ``soft`` (dataset or None) with
        ``soft_attrs``, ``replay`` (see :func:`inspect_replay`), ``lr``, ``mean``, ``std``, ``zca`` (dict of three datasets or None),
        ``zca_eps``, ``classes``, ``config_json``, ``storage`` (group or None), ``N``, ``CHW``.
    """
    k = header["num_classes"]
    images = chk.dataset(f, "images", kinds="f", ndim=4)
    n, c, h, w = images.shape
    if min(c, h, w) < 1:
        raise chk.fail(f"/images has shape {images.shape}; channels, height and width must be >= 1")
    lay: dict[str, Any] = {"images": images, "N": n, "CHW": (c, h, w)}
    labels = chk.member(f, "labels", h5py.Dataset)
    if labels.ndim == 1 and labels.shape[0] != n:
        raise chk.fail(f"/labels has {labels.shape[0]} entries but /images has {n} (N mismatch)")
    lay["labels"] = chk.dataset(f, "labels", kinds="iu", shape=(n,))

    soft_group = chk.member(f, "soft_labels", h5py.Group, required=False)
    lay["soft"] = lay["soft_attrs"] = None
    if soft_group is not None:
        soft = chk.dataset(soft_group, "static", kinds="f", shape=(n, k), required=False)
        if soft is not None:
            kind = chk.attr_str(soft, "kind")
            if kind not in ("logits", "probs"):
                raise chk.fail(f"/soft_labels/static kind {kind!r} is not 'logits' or 'probs'")
            lay["soft"] = soft
            lay["soft_attrs"] = {"kind": kind,
                                 "temperature": chk.attr_float(soft, "temperature", 1.0, positive=True),
                                 "source": chk.attr_str(soft, "source", "")}
    lay["replay"] = None if soft_group is None else inspect_replay(soft_group, chk, n, k)
    lay["lr"] = chk.dataset(f, "lr", kinds="f", shape=(), required=False)

    pre = chk.member(f, "preprocess", h5py.Group, required=False)
    lay.update(mean=None, std=None, zca=None, zca_eps=None)
    if pre is not None:
        pre_space = chk.attr_str(pre, "space", header["space"])
        if pre_space != header["space"]:
            raise chk.fail(f"/preprocess space {pre_space!r} differs from the root's "
                           f"{header['space']!r}")
        lay["mean"] = chk.dataset(pre, "mean", kinds="f", shape=(c,), required=False)
        lay["std"] = chk.dataset(pre, "std", kinds="f", shape=(c,), required=False)
        d = c * h * w
        want = {"zca_mean": (1, d), "zca_matrix": (d, d), "zca_inverse": (d, d)}
        present = [name for name in want if name in pre]
        if present:
            if len(present) != 3:
                raise chk.fail(f"/preprocess has {present} but ZCA needs all of {list(want)}")
            lay["zca"] = {name: chk.dataset(pre, name, kinds="f", shape=shape)
                          for name, shape in want.items()}
            lay["zca_eps"] = chk.attr_float(pre, "zca_eps", positive=True)
    if header["space"] == "zca" and lay["zca"] is None:
        raise chk.fail("space is 'zca' but /preprocess holds no ZCA matrices")

    lay["classes"] = chk.dataset(f, "classes", kinds="S", shape=(k,), required=False)
    prov = chk.member(f, "provenance", h5py.Group, required=False)
    lay["config_json"] = None if prov is None else chk.dataset(
        prov, "config_json", kinds="S", shape=(), required=False)
    lay["components"] = inspect_components(f, chk)
    lay["storage"] = chk.member(f, "storage", h5py.Group, required=False)
    if lay["storage"] is not None:
        for name in lay["storage"].attrs:
            if name != "description":
                chk.attr_int(lay["storage"], name, 0, 2**62)
    return lay


def inspect_components(f: h5py.File, chk: Checker) -> dict[str, tuple[h5py.Dataset, str, Any]] | None:
    """Check ``/components`` from metadata: ``{name: (dataset, part, meta_json dataset-or-attr)}`` or None."""
    from dsdistill.synthetic import COMPONENT_NAME, COMPONENT_PARTS

    g = chk.member(f, "components", h5py.Group, required=False)
    if g is None:
        return None
    out = {}
    for name in sorted(g):
        if not COMPONENT_NAME.match(name):
            raise chk.fail(f"/components/{name!r} is not a valid component name")
        ds = chk.dataset(g, name, kinds="n")
        part = chk.attr_str(ds, "part")
        if part not in COMPONENT_PARTS:
            raise chk.fail(f"/components/{name} has part {part!r}, expected one of {', '.join(COMPONENT_PARTS)}")
        meta = chk.attr_str(ds, "meta_json", "{}")
        out[name] = (ds, part, meta)
    return out


REPLAY_INT = ("crops", "flips", "partners", "mix_boxes", "indices", "order")


def inspect_replay(group: h5py.Group, chk: Checker, n: int, k: int) -> dict[str, Any] | None:
    """Check ``/soft_labels/replay`` from metadata (shapes, dtypes, attributes); None if absent.

    Returns:
        ``{"datasets": {name: dataset or None}, "attrs": {...}, "settings": dataset or None,
        "epochs": E, "width": k_stored}``. Index ranges are checked after reading, by
        :meth:`dsdistill.softlabels.ReplayLabels.range_problem`.
    """
    g = chk.member(group, "replay", h5py.Group, required=False)
    if g is None:
        return None
    crops = chk.dataset(g, "crops", kinds="iu", ndim=3)
    e = crops.shape[0]
    if e < 1 or crops.shape[1:] != (n, 4):
        raise chk.fail(f"/soft_labels/replay/crops has shape {crops.shape}, expected (E >= 1, {n}, 4)")
    ds: dict[str, Any] = {"crops": crops, "flips": chk.dataset(g, "flips", kinds="iu", shape=(e, n))}
    ds["partners"] = chk.dataset(g, "partners", kinds="iu", shape=(e, n), required=False)
    ds["mix_boxes"] = chk.dataset(g, "mix_boxes", kinds="iu", shape=(e, n, 4), required=False)
    if (ds["partners"] is None) != (ds["mix_boxes"] is None):
        raise chk.fail("/soft_labels/replay needs both partners and mix_boxes, or neither")
    values = chk.dataset(g, "values", kinds="f", ndim=3)
    width = values.shape[2]
    ds["indices"] = chk.dataset(g, "indices", kinds="iu", shape=(e, n, width), required=False)
    if values.shape[:2] != (e, n) or not (1 <= width <= k if ds["indices"] is not None else width == k):
        want = "(E, N, k <= K) with indices" if ds["indices"] is not None else f"({e}, {n}, {k})"
        raise chk.fail(f"/soft_labels/replay/values has shape {values.shape}, expected {want}")
    ds["values"] = values
    ds["order"] = chk.dataset(g, "order", kinds="iu", shape=(e, n), required=False)
    attrs = {"kind": chk.attr_str(g, "kind"), "temperature": chk.attr_float(g, "temperature", positive=True),
             "size": (chk.attr_int(g, "height", 1, 2**15 - 1), chk.attr_int(g, "width", 1, 2**15 - 1)),
             "micro_batch": chk.attr_int(g, "micro_batch", 0, 2**31)}
    if attrs["kind"] not in ("logits", "probs") or (ds["indices"] is not None and attrs["kind"] != "probs"):
        raise chk.fail(f"/soft_labels/replay kind {attrs['kind']!r} is not 'logits' or 'probs' "
                       "(top-k labels must be 'probs')")
    if (ds["order"] is None) != (attrs["micro_batch"] == 0):
        raise chk.fail("/soft_labels/replay has an order without a micro_batch (or the reverse)")
    settings = chk.dataset(g, "settings_json", kinds="S", shape=(), required=False)
    return {"datasets": ds, "attrs": attrs, "settings": settings, "epochs": e, "width": width}


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_savable(syn: SyntheticSet) -> None:
    """Refuse to write a set the reader would reject (ValueError names the field)."""
    n, c, h, w = syn.images.shape
    k = syn.num_classes
    if not _is_int(k) or not 1 <= k <= MAX_CLASSES:
        raise ValueError(f"num_classes must be an int in [1, {MAX_CLASSES}], got {k!r}")
    if not _is_int(syn.ipc) or not 1 <= syn.ipc <= MAX_IPC:
        raise ValueError(f"ipc must be an int in [1, {MAX_IPC}], got {syn.ipc!r}")
    if syn.images.numel() > MAX_ELEMENTS or min(c, h, w) < 1:
        raise ValueError(f"images of shape {tuple(syn.images.shape)} cannot be stored")
    if syn.labels.dtype.is_floating_point or syn.labels.dtype == torch.bool:
        raise ValueError("labels must be an integer tensor")
    if n and (int(syn.labels.min()) < 0 or int(syn.labels.max()) >= k):
        raise ValueError(f"labels must lie in [0, {k})")
    for name, stat in (("mean", syn.mean), ("std", syn.std)):
        if stat is not None and len(stat) != c:
            raise ValueError(f"{name} must have {c} entries (one per channel), got {len(stat)}")
    if syn.space == "zca" and syn.zca is None:
        raise ValueError("space='zca' needs the ZCA state in syn.zca")
    if syn.zca is not None:
        d = c * h * w
        for key, shape in (("mean", (1, d)), ("matrix", (d, d)), ("inverse", (d, d))):
            if torch.as_tensor(syn.zca[key]).numel() != shape[0] * shape[1]:
                raise ValueError(f"zca[{key!r}] must have shape {shape}")
        if not float(syn.zca.get("eps", 0.1)) > 0:
            raise ValueError("zca eps must be positive")
    sl = syn.soft_labels
    if sl is not None:
        if tuple(sl.values.shape) != (n, k):
            raise ValueError(f"soft labels must have shape {(n, k)}, got {tuple(sl.values.shape)}")
        if sl.kind not in ("logits", "probs") or not float(sl.temperature) > 0:
            raise ValueError("soft labels need kind 'logits'/'probs' and a positive temperature")
    if syn.replay is not None:
        problem = syn.replay.problem(n) or syn.replay.range_problem((h, w))
        if not problem and syn.replay.num_classes != k:
            problem = f"replay labels have {syn.replay.num_classes} classes, the set {k}"
        if problem:
            raise ValueError(f"replay labels cannot be stored: {problem}")
    for name, comp in syn.components.items():
        if comp.values.dtype not in (torch.float16, torch.float32, torch.float64, torch.int8, torch.int16,
                                     torch.int32, torch.int64, torch.uint8, torch.bool):
            raise ValueError(f"component {name!r} has dtype {comp.values.dtype}, which cannot be stored")
        if comp.values.numel() > MAX_ELEMENTS:
            raise ValueError(f"component {name!r} is too large to store")
    if syn.class_names and len(syn.class_names) != k:
        raise ValueError(f"class_names must have {k} entries, got {len(syn.class_names)}")
