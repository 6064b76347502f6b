"""Expert-trajectory files: one HDF5 file per expert, and :class:`ExpertStore` to read a directory.

Layout of ``DIR/expert_00003.h5`` (format ``dsdistill-experts`` version 1; every string is
fixed-length UTF-8, no pickle, no variable-length data):

    root attrs   format, format_version, created_by, model, dataset, recipe, space,
                 num_classes, channels, height, width, expert, seed, epochs (trained),
                 test_accuracy, val_accuracy (fractions in [0, 1], after the last epoch),
                 model_kwargs (JSON object of ``build_model`` options, e.g. ``{"width": 64}``)
    /snapshots   (T, P) float32 or float16: the flat parameters after each stored epoch
                 (row t is epoch ``/epochs[t]``; epoch 0 is the initialisation)
    /epochs      (T,) int64, strictly increasing, within [0, epochs]
    /param_names (n,) strings, ``named_parameters()`` order
    /param_shapes (n, 8) int64, each shape padded with -1
    /history     group: train_loss, train_accuracy (epochs,) float64 [optional]
    /config_json scalar string: the recipe and run settings [optional]

The files hold nothing that depends on the wall clock, so two runs with the same seed write
bitwise-identical files; times go to ``expert_00003.timing.json`` beside them and to the
directory's ``experts.json`` manifest. The reader checks every shape, dtype and size from metadata
before reading data (a forged header cannot make it allocate), and every problem is one
:class:`~dsdistill.errors.SyntheticFileError`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

import dsdistill
from dsdistill.errors import ConfigError, DataNotFoundError, SyntheticFileError
from dsdistill.io.atomic import atomic_path
from dsdistill.io.validate import MAX_CLASSES, MAX_ELEMENTS, Checker, open_h5

EXPERT_FORMAT = "dsdistill-experts"
EXPERT_FORMAT_VERSION = 1
RECIPE_NAMES = ("mtt", "ftd", "ast")
SPACES = ("normalized", "zca")
MAX_NDIM = 8
MAX_PARAMS_TENSORS = 100_000
MAX_EPOCHS = 1_000_000
FILE_RE = re.compile(r"^expert_(\d{5,})\.h5$")

__all__ = ["ExpertStore", "write_expert", "read_expert_header", "expert_path", "EXPERT_FORMAT"]


def expert_path(directory: str | Path, index: int) -> Path:
    """``DIR/expert_00003.h5`` for expert 3."""
    return Path(directory) / f"expert_{index:05d}.h5"


def _text(value: str | list[str]) -> np.ndarray:
    raw = [str(v).encode("utf-8") for v in value] if isinstance(value, list) else str(value).encode("utf-8")
    longest = max((len(r) for r in raw), default=1) if isinstance(raw, list) else len(raw)
    return np.array(raw, dtype=h5py.string_dtype("utf-8", max(1, longest)))


_CHECKED = {"fletcher32": True, "track_times": False}


def write_expert(path: str | Path, snapshots: Tensor, epochs: list[int], meta: dict[str, Any], *,
                 dtype: str = "float32", history: dict[str, list[float]] | None = None,
                 config: dict[str, Any] | None = None) -> None:
    """Write one expert's trajectory atomically (temporary file, fsync, rename).

    Args:
        path: Destination ``.h5``.
        snapshots: ``(T, P)`` float32 flat parameters, row t after epoch ``epochs[t]``.
        epochs: The T stored epoch numbers (0 = initialisation), strictly increasing.
        meta: ``model, dataset, recipe, space, num_classes, image_shape (C, H, W), param_names,
            param_shapes, expert, seed, epochs_trained, test_accuracy, val_accuracy`` and optionally
            ``model_kwargs`` (dict of ``build_model`` options).
        dtype: ``"float32"`` or ``"float16"`` storage of the snapshots.
        history: Optional per-epoch ``train_loss`` / ``train_accuracy`` lists.
        config: Optional JSON-serialisable settings stored as ``/config_json``.
    """
    if dtype not in ("float32", "float16"):
        raise ConfigError(f"--dtype must be float32 or float16, got {dtype!r}")
    names, shapes = list(meta["param_names"]), [tuple(s) for s in meta["param_shapes"]]
    num_params = sum(math.prod(s) for s in shapes)
    if snapshots.dim() != 2 or snapshots.shape != (len(epochs), num_params):
        raise ValueError(f"snapshots must be ({len(epochs)}, {num_params}), got {tuple(snapshots.shape)}")
    if any(b <= a for a, b in zip(epochs, epochs[1:])):
        raise ValueError("stored epochs must be strictly increasing")
    padded = np.full((len(shapes), MAX_NDIM), -1, dtype=np.int64)
    for i, s in enumerate(shapes):
        padded[i, : len(s)] = s
    data = snapshots.detach().cpu().float().numpy().astype(np.float16 if dtype == "float16" else np.float32)
    if dtype == "float16" and not np.isfinite(data).all():
        raise ValueError("parameters overflow float16; store with --dtype float32")
    c, h, w = (int(v) for v in meta["image_shape"])
    with atomic_path(path, overwrite=True) as tmp:
        # libver v110: object headers and the superblock carry checksums; fletcher32 checksums
        # every data chunk, so a flipped bit anywhere reads as a corrupt file, never as other weights
        with h5py.File(tmp, "w", libver=("v110", "v110"), track_order=False) as f:
            for key, value in (("format", EXPERT_FORMAT), ("created_by", f"dsdistill {dsdistill.__version__}"),
                               ("model", meta["model"]), ("dataset", meta["dataset"]),
                               ("recipe", meta["recipe"]), ("space", meta["space"]),
                               ("model_kwargs", json.dumps(meta.get("model_kwargs") or {}, sort_keys=True))):
                f.attrs[key] = _text(value)
            for key, value in (("format_version", EXPERT_FORMAT_VERSION), ("num_classes", meta["num_classes"]),
                               ("channels", c), ("height", h), ("width", w), ("expert", meta["expert"]),
                               ("seed", meta["seed"]), ("epochs", meta["epochs_trained"])):
                f.attrs[key] = np.int64(value)
            f.attrs["test_accuracy"] = np.float64(meta["test_accuracy"])
            f.attrs["val_accuracy"] = np.float64(meta["val_accuracy"])
            f.create_dataset("snapshots", data=data, chunks=(1, max(1, num_params)), **_CHECKED)
            f.create_dataset("epochs", data=np.asarray(epochs, dtype=np.int64), **_CHECKED)
            f.create_dataset("param_names", data=_text(names), **_CHECKED)
            f.create_dataset("param_shapes", data=padded, **_CHECKED)
            if history:
                g = f.create_group("history")
                for key, values in history.items():
                    g.create_dataset(key, data=np.asarray(values, dtype=np.float64), **_CHECKED)
            if config is not None:
                f.create_dataset("config_json", data=_text(json.dumps(config, sort_keys=True)), track_times=False)


def _read_header(f: h5py.File, chk: Checker) -> dict[str, Any]:
    root = f["/"]
    try:
        fmt = chk.attr(root, "format", "S")
    except (SyntheticFileError, UnicodeDecodeError):
        fmt = None
    if fmt != EXPERT_FORMAT:
        raise SyntheticFileError(f"{chk.path} is not a dsdistill expert file (its root has no "
                                 f"format='{EXPERT_FORMAT}' attribute)")
    version = chk.attr_int(root, "format_version", 0, 2**62)
    if version > EXPERT_FORMAT_VERSION:
        raise SyntheticFileError(f"{chk.path} was written by a newer dsdistill (expert format version "
                                 f"{version}); upgrade dsdistill")
    if version < 1:
        raise chk.fail(f"format_version {version} is unknown")
    h: dict[str, Any] = {"path": chk.path}
    for key in ("model", "dataset", "recipe", "space"):
        h[key] = chk.attr_str(root, key)
    if h["recipe"] not in RECIPE_NAMES:
        raise chk.fail(f"recipe {h['recipe']!r} is not one of {RECIPE_NAMES}")
    if h["space"] not in SPACES:
        raise chk.fail(f"space {h['space']!r} is not one of {SPACES}")
    try:
        h["model_kwargs"] = json.loads(chk.attr_str(root, "model_kwargs", "{}"))
    except ValueError:
        raise chk.fail("attribute 'model_kwargs' is not JSON") from None
    if not isinstance(h["model_kwargs"], dict):
        raise chk.fail("attribute 'model_kwargs' is not a JSON object")
    h["num_classes"] = chk.attr_int(root, "num_classes", 1, MAX_CLASSES)
    h["image_shape"] = tuple(chk.attr_int(root, k, 1, 1 << 16) for k in ("channels", "height", "width"))
    h["expert"] = chk.attr_int(root, "expert", 0, 10**9)
    h["seed"] = chk.attr_int(root, "seed", -(2**63), 2**63 - 1)
    h["epochs"] = chk.attr_int(root, "epochs", 0, MAX_EPOCHS)
    for key in ("test_accuracy", "val_accuracy"):
        value = chk.attr_float(root, key)
        if not 0.0 <= value <= 1.0:
            raise chk.fail(f"attribute {key!r} is {value}, not a fraction in [0, 1]")
        h[key] = value
    names_ds = chk.dataset(f, "param_names", kinds="S", ndim=1)
    n = names_ds.shape[0]
    if not 1 <= n <= MAX_PARAMS_TENSORS:
        raise chk.fail(f"/param_names has {n} entries")
    shapes_ds = chk.dataset(f, "param_shapes", kinds="iu", shape=(n, MAX_NDIM))
    names = chk.text(names_ds)
    if len(set(names)) != n:
        raise chk.fail("/param_names has duplicates")
    raw = np.asarray(shapes_ds[()], dtype=np.int64)
    shapes = []
    for i, row in enumerate(raw):
        ndim = int((row >= 0).sum())
        if (row[:ndim] < 1).any() or (row[ndim:] != -1).any():
            raise chk.fail(f"/param_shapes row {i} ({row.tolist()}) is not a shape padded with -1")
        shapes.append(tuple(int(v) for v in row[:ndim]))
    num_params = sum(math.prod(s) for s in shapes)
    if num_params > MAX_ELEMENTS:
        raise chk.fail(f"the parameter shapes add up to {num_params} elements")
    epochs_ds = chk.dataset(f, "epochs", kinds="iu", ndim=1)
    t = epochs_ds.shape[0]
    if not 1 <= t <= MAX_EPOCHS + 1:
        raise chk.fail(f"/epochs has {t} entries")
    epochs = np.asarray(epochs_ds[()], dtype=np.int64)
    if (np.diff(epochs) <= 0).any() or epochs[0] < 0 or epochs[-1] > h["epochs"]:
        raise chk.fail(f"/epochs must increase strictly within [0, {h['epochs']}]")
    snaps = chk.dataset(f, "snapshots", kinds="f", shape=(t, num_params))
    if snaps.dtype.itemsize not in (2, 4):
        raise chk.fail(f"/snapshots is {snaps.dtype}; expected float16 or float32")
    h.update(param_names=names, param_shapes=shapes, num_params=num_params,
             stored_epochs=[int(e) for e in epochs], dtype=str(snaps.dtype))
    return h


def read_expert_header(path: str | Path) -> dict[str, Any]:
    """Validate one expert file from its metadata and return its header (no snapshot is read).

    Raises:
        SyntheticFileError: Missing, truncated, foreign, forged or inconsistent file.
    """
    with open_h5(path) as (f, chk):
        return _read_header(f, chk)


class ExpertStore:
    """A validated directory of expert files (use :meth:`open`).

    Experts are addressed by position ``0 .. num_experts - 1`` in file-name order; ``infos[i]["expert"]``
    is the index the file was trained as (they differ only if some experts are missing).

    Attributes:
        directory, model, model_kwargs, dataset, recipe, space, num_classes, image_shape, num_experts, epochs,
        stored_epochs, param_names, param_shapes, num_params, dtype, files, infos.
    """

    def __init__(self, directory: Path, headers: list[dict[str, Any]]) -> None:
        first = headers[0]
        self.directory = directory
        self.files = [h["path"] for h in headers]
        self.model: str = first["model"]
        self.model_kwargs: dict[str, Any] = dict(first["model_kwargs"])
        self.dataset: str = first["dataset"]
        self.recipe: str = first["recipe"]
        self.space: str = first["space"]
        self.num_classes: int = first["num_classes"]
        self.image_shape: tuple[int, int, int] = first["image_shape"]
        self.num_experts = len(headers)
        self.epochs: int = first["epochs"]
        self.stored_epochs: list[int] = list(first["stored_epochs"])
        self.param_names: list[str] = list(first["param_names"])
        self.param_shapes: list[tuple[int, ...]] = list(first["param_shapes"])
        self.num_params: int = first["num_params"]
        self.dtype: str = first["dtype"]
        self.infos = [{"expert": h["expert"], "seed": h["seed"], "test_accuracy": h["test_accuracy"],
                       "val_accuracy": h["val_accuracy"], "file": str(h["path"])} for h in headers]
        self._row = {e: i for i, e in enumerate(self.stored_epochs)}

    @classmethod
    def open(cls, directory: str | Path) -> "ExpertStore":
        """Validate every ``expert_*.h5`` in ``directory`` and their mutual consistency.

        Raises:
            DataNotFoundError: ``directory`` is missing or holds no expert file.
            SyntheticFileError: A file is corrupt or foreign, or the files disagree (model,
                dataset, recipe, space, parameter layout, stored epochs).
        """
        d = Path(directory)
        if not d.is_dir():
            raise DataNotFoundError(f"expert directory {d} does not exist; create it with `dsdistill experts`")
        files = sorted(p for p in d.iterdir() if FILE_RE.match(p.name))
        if not files:
            raise DataNotFoundError(f"expert directory {d} holds no expert_*.h5 files; "
                                    f"create them with `dsdistill experts --output {d}`")
        headers = [read_expert_header(p) for p in files]
        first = headers[0]
        for h in headers[1:]:
            for key in ("model", "model_kwargs", "dataset", "recipe", "space", "num_classes", "image_shape", "epochs",
                        "stored_epochs", "param_names", "param_shapes", "dtype"):
                if h[key] != first[key]:
                    raise SyntheticFileError(f"{h['path']} does not match {first['path']} ({key} differs); "
                                             f"an expert directory must hold one consistent run")
        seen = [h["expert"] for h in headers]
        if len(set(seen)) != len(seen):
            raise SyntheticFileError(f"expert directory {d} holds two files for the same expert index")
        return cls(d, headers)

    def __repr__(self) -> str:
        return (f"ExpertStore({str(self.directory)!r}: {self.num_experts} {self.recipe} experts, {self.model} on "
                f"{self.dataset} ({self.space}), epochs {self.stored_epochs[0]}..{self.stored_epochs[-1]} of "
                f"{self.epochs}, {self.num_params} params, {self.dtype})")

    def _check(self, expert: int, epoch: int | None = None) -> None:
        if not isinstance(expert, (int, np.integer)) or not 0 <= expert < self.num_experts:
            raise ConfigError(f"expert {expert} is out of range; {self.directory} holds {self.num_experts} experts")
        if epoch is not None and epoch not in self._row:
            raise ConfigError(f"epoch {epoch} was not stored in {self.directory} (stored epochs: "
                              f"{_ranges(self.stored_epochs)}); regenerate the experts with more epochs kept")

    def _read_rows(self, expert: int, rows: list[int] | None) -> Tensor:
        path = self.files[expert]
        with open_h5(path) as (f, chk):
            h = _read_header(f, chk)
            if h["stored_epochs"] != self.stored_epochs or h["num_params"] != self.num_params:
                raise SyntheticFileError(f"{path} changed since the store was opened")
            ds = f["snapshots"]
            data = ds[()] if rows is None else ds[rows[0]] if len(rows) == 1 else ds[sorted(rows)]
        out = torch.from_numpy(np.asarray(data, dtype=np.float32))
        if not bool(torch.isfinite(out).all()):
            raise SyntheticFileError(f"{path} holds non-finite parameters (corrupt file)")
        return out

    def snapshot(self, expert: int, epoch: int) -> Tensor:
        """``(P,)`` float32 parameters of ``expert`` after ``epoch`` (0 = initialisation)."""
        self._check(expert, epoch)
        return self._read_rows(expert, [self._row[epoch]])

    def snapshots(self, expert: int, epochs: list[int]) -> Tensor:
        """``(len(epochs), P)`` float32 parameters of ``expert`` after each of ``epochs`` (any order)."""
        for e in epochs:
            self._check(expert, e)
        rows = [self._row[e] for e in epochs]
        uniq = sorted(set(rows))
        data = self._read_rows(expert, uniq)
        data = data.view(len(uniq), -1)
        pos = {r: i for i, r in enumerate(uniq)}
        return data[[pos[r] for r in rows]]

    def trajectory(self, expert: int) -> Tensor:
        """``(T, P)`` float32: every stored snapshot of ``expert`` (rows follow ``stored_epochs``)."""
        self._check(expert)
        return self._read_rows(expert, None)

    def build_model(self, seed: int | None = None):
        """A fresh network of the stored architecture (``model`` with ``model_kwargs``; initialised
        from ``seed`` when given), checked against the stored parameter layout."""
        import dsdistill.models  # noqa: F401  (registers the models)
        from dsdistill.experts.params import param_spec
        from dsdistill.models import build_model

        try:
            net = build_model(self.model, self.num_classes, self.image_shape, seed=seed, **self.model_kwargs)
        except (ConfigError, KeyError) as exc:
            raise SyntheticFileError(f"{self.directory}: cannot build model {self.model!r} with "
                                     f"{self.model_kwargs}: {exc}") from None
        names, shapes = param_spec(net)
        if names != self.param_names or shapes != self.param_shapes:
            raise SyntheticFileError(f"the parameters of {self.model!r} in this dsdistill do not match the "
                                     f"layout stored in {self.directory}")
        return net


def _ranges(values: list[int]) -> str:
    if values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ", ".join(map(str, values))
