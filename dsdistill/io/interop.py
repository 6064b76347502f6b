"""Pieces shared by export (:mod:`dsdistill.io.export`) and import (:mod:`dsdistill.io.importers`).

* ``meta.json``: the sidecar every export directory gets. It records what the foreign format
  cannot (space, normalisation statistics, class names, soft-label kind, learned lr, image
  order, provenance), so that ``import(export(file))`` restores the file's images and labels
  exactly, whatever the format.
* Pixel conversion: ``to_uint8`` and ``uint8_to_space`` use the same operations, in the same
  order and dtype, as :func:`dsdistill.data.load_real`, so a set of real images round-trips
  through 8-bit PNG bit for bit.
* ``safe_load``: ``torch.load(weights_only=True)`` only; a file that needs pickle is refused.
* ``atomic_dir``: an export directory appears complete under its final name, or not at all.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import dsdistill
from dsdistill.errors import ConfigError, SyntheticFileError
from dsdistill.synthetic import SPACES, SoftLabels, SyntheticSet

META_NAME = "meta.json"
META_FORMAT = "dsdistill-export"
META_VERSION = 1
EXACT_NAME = "images_exact.pt"  # float32 images in the set's own space, when the format is lossy


# ---- files and directories ----------------------------------------------------------------------
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # directories on some platforms
        pass
    finally:
        os.close(fd)


def check_output_dir(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """Refuse an existing output (unless ``overwrite``) or a missing parent, before any work."""
    final = Path(path)
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise ConfigError(f"output {final} exists; pass --overwrite to replace it")
        if not final.is_dir():
            raise ConfigError(f"output {final} exists and is not a directory")
    parent = final.parent if str(final.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"output directory {parent} does not exist; create it first")
    return final


@contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path``; rename it onto ``path`` on success.

    Every file written inside is fsynced before the rename. On an exception the temporary
    directory is removed and ``path`` is left as it was. With ``overwrite`` an existing
    directory is swapped out (renamed aside, then deleted) only once the new one is complete.

    Raises:
        ConfigError: ``path`` exists and ``overwrite`` is False, or its parent is missing.
    """
    final = check_output_dir(path, overwrite)
    parent = final.parent if str(final.parent) else Path(".")
    tmp = parent / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        for root, _, files in os.walk(tmp):
            for name in files:
                _fsync(Path(root) / name)
        if final.exists():
            old = parent / f".{final.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync(parent)


def save_tensor(obj: Any, path: Path) -> str:
    """``torch.save`` plain tensors / containers of tensors (loadable with ``weights_only=True``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path.name


def safe_load(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors.

    Raises:
        SyntheticFileError: Missing, unreadable, or needs pickle (refused, never executed).
    """
    p = Path(path)
    if not p.is_file():
        raise SyntheticFileError(f"{p} does not exist")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f" (it holds a pickled {found.group(1)})" if found else ""
        raise SyntheticFileError(f"{p} needs pickle to load and was refused{what}: only plain tensors, lists "
                                 f"and dicts are read (torch.load weights_only=True)") from None
    except Exception as err:  # zip/pickle/format errors of every kind
        raise SyntheticFileError(f"{p} is not a readable torch file: {type(err).__name__}: "
                                 f"{str(err).strip()[:160]}") from None


def safe_name(text: str, fallback: str) -> str:
    """A file-system-safe version of ``text`` (letters, digits, ``-_.+``), or ``fallback``."""
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._")
    return name or fallback


# ---- pixels ---------------------------------------------------------------------------------------
_PIL_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def write_png(image: Tensor, path: Path) -> None:
    """Write one uint8 ``(C, H, W)`` image (C in 1..4) as a lossless PNG (Pillow)."""
    from PIL import Image

    c = image.shape[0]
    if c not in _PIL_MODES:
        raise ConfigError(f"PNG holds 1 to 4 channels; these images have {c}; export --to pt instead")
    arr = image.permute(1, 2, 0).contiguous().numpy()
    Image.fromarray(arr[:, :, 0] if c == 1 else arr).save(path, format="PNG")  # mode from the shape


def read_png(path: Path) -> Tensor:
    """Read an 8-bit image file as uint8 ``(C, H, W)`` (channels as stored; palettes expanded)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("L", "LA", "RGB", "RGBA"):
            im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
        arr = np.asarray(im, dtype=np.uint8)
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def to_uint8(pixels: Tensor) -> Tensor:
    """``(N, C, H, W)`` [0, 1] pixels -> uint8, clamped and rounded to the nearest level."""
    return pixels.clamp(0, 1).mul(255).round().to(torch.uint8)


def pixels_to_space(pixels: Tensor, space: str, mean: Any = None, std: Any = None,
                    zca: dict[str, Any] | None = None) -> Tensor:
    """Map ``(N, C, H, W)`` [0, 1] pixels into ``space`` exactly as ``load_real`` does."""
    if space == "normalized":
        if mean is None or std is None:
            raise ConfigError("normalized space needs mean and std")
        m = torch.tensor(tuple(mean)).view(1, -1, 1, 1)
        s = torch.tensor(tuple(std)).view(1, -1, 1, 1)
        return (pixels - m) / s
    if space == "zca":
        from dsdistill.augment.zca import ZCA

        return ZCA.from_state(zca).transform(pixels)
    return pixels


def uint8_to_space(q: Tensor, syn_like: SyntheticSet) -> Tensor:
    """uint8 ``(N, C, H, W)`` -> float32 images in ``syn_like``'s space (``load_real``'s ops)."""
    return pixels_to_space(q.float().div(255), syn_like.space, syn_like.mean, syn_like.std, syn_like.zca)


def is_uint8_exact(syn: SyntheticSet) -> tuple[bool, Tensor]:
    """Whether 8-bit pixels reproduce ``syn.images`` bit for bit.

    Returns:
        ``(exact, q)`` with ``q`` the ``(N, C, H, W)`` uint8 pixels of the set.
    """
    q = to_uint8(syn.to_pixels())
    if syn.space == "zca" or (syn.space == "normalized" and (syn.mean is None or syn.std is None)):
        # ZCA is a matrix product, whose last bits depend on the BLAS and thread count: never
        # promise bit-exactness for it (the elementwise normalisation is IEEE-reproducible)
        return False, q
    return bool(torch.equal(uint8_to_space(q, syn), syn.images.float())), q


# ---- the meta.json sidecar ---------------------------------------------------------------------
def make_meta(syn: SyntheticSet, exported_as: str, files: dict[str, Any], notes: list[str],
              **extra: Any) -> dict[str, Any]:
    """The ``meta.json`` object for an export of ``syn`` (``files`` maps role -> relative path)."""
    sl = syn.soft_labels
    return {
        "format": META_FORMAT, "format_version": META_VERSION, "exported_as": exported_as,
        "created_by": f"dsdistill {dsdistill.__version__}",
        "method": syn.method, "dataset": syn.dataset, "num_classes": int(syn.num_classes),
        "ipc": int(syn.ipc), "num_images": syn.num_images, "image_shape": list(syn.image_shape),
        "space": syn.space,
        "mean": None if syn.mean is None else [float(v) for v in syn.mean],
        "std": None if syn.std is None else [float(v) for v in syn.std],
        "zca_eps": None if syn.zca is None else float(syn.zca.get("eps", 0.1)),
        "class_names": list(syn.class_names), "protocol": syn.protocol,
        "lr": None if syn.lr is None else float(syn.lr),
        "soft_labels": None if sl is None else {"kind": sl.kind, "temperature": float(sl.temperature),
                                                "source": sl.source, "dtype": str(sl.values.dtype)},
        "files": files, "notes": notes, **extra, "provenance": syn.provenance,
    }


def read_meta(directory: Path) -> dict[str, Any] | None:
    """The validated ``meta.json`` in ``directory``, or None when there is none.

    Raises:
        SyntheticFileError: A ``meta.json`` that is not a dsdistill export sidecar.
    """
    path = directory / META_NAME
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise SyntheticFileError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise SyntheticFileError(f"{path} is not a dsdistill export sidecar (no format={META_FORMAT!r})")
    if meta.get("format_version") != META_VERSION:
        raise SyntheticFileError(f"{path} has export format version {meta.get('format_version')!r}; "
                                 f"this dsdistill reads version {META_VERSION}")
    need = {"method": str, "dataset": str, "num_classes": int, "ipc": int, "space": str, "files": dict}
    for key, kind in need.items():
        if not isinstance(meta.get(key), kind):
            raise SyntheticFileError(f"{path} is missing {key!r} (or it is not a {kind.__name__})")
    if meta["space"] not in SPACES:
        raise SyntheticFileError(f"{path} names an unknown space {meta['space']!r}")
    return meta


def set_from_meta(meta: dict[str, Any], images: Tensor, labels: Tensor, directory: Path,
                  soft: Tensor | None = None) -> SyntheticSet:
    """Rebuild the exported :class:`SyntheticSet` from its tensors and ``meta.json``.

    Args:
        meta: The validated sidecar.
        images: ``(N, C, H, W)`` float32 in ``meta["space"]``.
        labels: ``(N,)`` int64.
        directory: Where relative paths in ``meta["files"]`` point (``zca.pt``).
        soft: ``(N, K)`` soft labels if the set had them.
    """
    zca = None
    if meta.get("files", {}).get("zca"):
        state = safe_load(directory / meta["files"]["zca"])
        if not isinstance(state, dict) or not all(isinstance(state.get(k), Tensor) for k in ("mean", "matrix", "inverse")):
            raise SyntheticFileError(f"{directory / meta['files']['zca']} is not a ZCA state (mean, matrix, inverse)")
        zca = {k: state[k].float() for k in ("mean", "matrix", "inverse")}
        zca["eps"] = float(meta.get("zca_eps") or 0.1)
    sl_meta = meta.get("soft_labels")
    soft_labels = None
    if soft is not None and isinstance(sl_meta, dict):
        soft_labels = SoftLabels(soft, kind=sl_meta.get("kind", "logits"),
                                 temperature=float(sl_meta.get("temperature", 1.0)),
                                 source=str(sl_meta.get("source", "")))
    try:
        return SyntheticSet(
            images=images, labels=labels, num_classes=meta["num_classes"], method=meta["method"],
            dataset=meta["dataset"], ipc=meta["ipc"], space=meta["space"],
            mean=None if meta.get("mean") is None else tuple(float(v) for v in meta["mean"]),
            std=None if meta.get("std") is None else tuple(float(v) for v in meta["std"]),
            zca=zca, soft_labels=soft_labels, lr=None if meta.get("lr") is None else float(meta["lr"]),
            class_names=list(meta.get("class_names") or []),
            provenance=dict(meta.get("provenance") or {}), protocol=meta.get("protocol"))
    except ValueError as err:
        raise SyntheticFileError(f"{directory / META_NAME} does not match its tensors: {err}") from None
