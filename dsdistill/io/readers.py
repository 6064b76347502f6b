"""Readers for the import formats (see :mod:`dsdistill.io.importers` for the formats and options).

Each reader returns a :class:`Found` record of raw tensors; :func:`read_source` dispatches on the
format name and :func:`from_meta` rebuilds a set exported by dsdistill (with ``meta.json``) exactly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dsdistill.errors import ConfigError, SyntheticFileError
from dsdistill.io.interop import EXACT_NAME, read_meta, read_png, safe_load, set_from_meta, uint8_to_space
from dsdistill.synthetic import SyntheticSet

FORMATS = ("dc", "mtt", "datm", "pt", "ddranking", "dcbench", "png")


class Found(dict):
    """What a reader found: ``images``, ``labels`` (hard ``(N,)``, logits ``(N, K)`` or None),
    ``soft``, ``lr``, ``meta``, ``dir``, ``files``, ``zca_copy``, ``pixels`` (uint8 PNGs), ``method``."""


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise SyntheticFileError(f"{path} does not exist ({what})")
    return path


def _tensor(obj: Any, path: Path, what: str) -> Tensor:
    if not isinstance(obj, Tensor):
        raise SyntheticFileError(f"{path} holds {type(obj).__name__}, not a tensor of {what}")
    return obj.detach().cpu()


def _pick(directory: Path, stem: str) -> Path | None:
    """``{stem}_best.pt``, else ``{stem}_{N}.pt`` with the largest N, else None."""
    best = directory / f"{stem}_best.pt"
    if best.is_file():
        return best
    numbered = [(int(m.group(1)), p) for p in directory.glob(f"{stem}_*.pt")
                if (m := re.fullmatch(rf"{stem}_(\d+)\.pt", p.name))]
    return max(numbered)[1] if numbered else None


def _read_dc(src: Path) -> Found:
    if src.is_dir():
        hits = sorted(src.glob("res_*.pt"))
        if len(hits) != 1:
            raise SyntheticFileError(f"{src} holds {len(hits)} res_*.pt files; pass the file itself")
        src = hits[0]
    obj = safe_load(src)
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, (list, tuple)) or not data or not isinstance(data[-1], (list, tuple)) or len(data[-1]) < 2:
        raise SyntheticFileError(f"{src} is not a DC result file (expected {{'data': [[images, labels], ...]}})")
    return Found(images=_tensor(data[-1][0], src, "images"), labels=_tensor(data[-1][1], src, "labels"),
                 files=[src.name], dir=src.parent, source=src)


def _read_best(src: Path, fmt: str) -> Found:
    """MTT and DATM folders (or an ``images_*.pt`` file with its siblings)."""
    if src.is_file():
        directory, suffix = src.parent, src.name[len("images"):]
        img, lab, lr = src, directory / f"labels{suffix}", directory / f"lr{suffix}"
    else:
        directory = src / "Normal" if fmt == "datm" and (src / "Normal").is_dir() and _pick(src, "images") is None else src
        img = _pick(directory, "images")
        if img is None:
            raise SyntheticFileError(f"{directory} has no images_best.pt or images_<iteration>.pt")
        suffix = img.name[len("images"):]
        lab, lr = directory / f"labels{suffix}", directory / f"lr{suffix}"
    found = Found(images=_tensor(safe_load(img), img, "images"), dir=directory, files=[img.name])
    found["labels"] = _tensor(safe_load(_need(lab, "labels")), lab, "labels")
    found["files"].append(lab.name)
    if lr.is_file():
        found["lr"] = float(_tensor(safe_load(lr), lr, "the learned lr").reshape(-1)[0])
        found["files"].append(lr.name)
    zca_copy = directory / f"images_zca{suffix}"
    if zca_copy.is_file():
        found["zca_copy"] = _tensor(safe_load(zca_copy), zca_copy, "inverse-ZCA images")
    return found


def _read_tensors(src: Path, fmt: str) -> Found:
    """``pt`` and ``ddranking`` folders (our exports carry meta.json)."""
    if not src.is_dir():
        raise SyntheticFileError(f"{src} is not a directory (the {fmt} format is a folder of .pt files)")
    meta = read_meta(src)
    files = meta["files"] if meta else {}
    img = src / files.get("images", "images.pt")
    found = Found(images=_tensor(safe_load(_need(img, "images")), img, "images"), meta=meta, dir=src,
                  files=[img.name])
    for role, default in (("labels", "labels.pt"), ("soft", "soft_labels.pt"), ("lr", "lr.pt")):
        path = src / files.get({"soft": "soft_labels"}.get(role, role), default)
        if path.is_file():
            found[role] = _tensor(safe_load(path), path, role)
            found["files"].append(path.name)
        elif role == "labels" and fmt == "pt":
            raise SyntheticFileError(f"{path} does not exist (labels)")
    if "lr" in found:
        found["lr"] = float(found["lr"].reshape(-1)[0])
    return found


def _read_png(src: Path) -> Found:
    if not src.is_dir():
        raise SyntheticFileError(f"{src} is not a directory (png expects an ImageFolder)")
    meta = read_meta(src)
    classes = meta.get("class_dirs") if meta else sorted(p.name for p in src.iterdir() if p.is_dir())
    if not classes:
        raise SyntheticFileError(f"{src} has no class folders")
    if meta:
        rels = meta.get("png_order") or []
    else:
        rels = [f"{c}/{p.name}" for c in classes for p in sorted((src / c).iterdir())
                if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")]
    if not rels:
        raise SyntheticFileError(f"{src} holds no images")
    index = {c: i for i, c in enumerate(classes)}
    pixels, labels = [], []
    for rel in rels:  # one decode per file
        path = _need(src / rel, "an image listed in meta.json")
        try:
            pixels.append(read_png(path))
        except Exception as err:
            raise SyntheticFileError(f"{path} is not a readable image: {err}") from None
        labels.append(index[rel.split("/", 1)[0]])
    if len({tuple(p.shape) for p in pixels}) != 1:
        raise SyntheticFileError(f"{src} holds images of different sizes or channel counts")
    found = Found(pixels=torch.stack(pixels), labels=torch.tensor(labels), meta=meta, dir=src,
                  files=[f"{len(rels)} images"], class_names=[re.sub(r"^\d+_", "", c) for c in classes])
    files = meta["files"] if meta else {}
    for role, default in (("exact", EXACT_NAME), ("soft", "soft_labels.pt")):
        path = src / files.get({"exact": "exact_images", "soft": "soft_labels"}[role], default)
        if path.is_file():
            found[role] = _tensor(safe_load(path), path, role)
    return found


def _find_ipc_dir(src: Path, dataset: str | None, ipc: int | None, method: str | None) -> Path:
    from dsdistill.io.export import DCBENCH_METHODS, dcbench_dataset_name

    if any(src.glob("*.pt")) or (src / "meta.json").is_file() or any(src.glob("*.npz")):
        return src
    pattern = f"IPC{ipc}" if ipc else "IPC*"
    hits = [p for p in src.rglob(pattern) if p.is_dir()]
    if dataset:
        hits = [p for p in hits if p.parent.name.lower() == dcbench_dataset_name(dataset).lower()]
    if method:
        want = {method.lower(), DCBENCH_METHODS.get(method.lower(), method).lower()}
        hits = [p for p in hits if p.parent.parent.name.lower() in want]
    if len(hits) != 1:
        listed = ", ".join(str(p.relative_to(src)) for p in hits[:6]) or "none"
        raise SyntheticFileError(f"{src}: expected one DC-BENCH folder {{METHOD}}/{{dataset}}/{pattern}, found "
                                 f"{len(hits)} ({listed}); pass --dataset/--ipc/--method or the folder itself")
    return hits[0]


def _read_dcbench(src: Path, dataset: str | None, ipc: int | None, method: str | None) -> Found:
    d = _find_ipc_dir(src, dataset, ipc, method)
    meta = read_meta(d)
    method_dir = d.parent.parent.name if d.parent.parent != d else ""
    if (d / "images_best.pt").is_file() or (d / "images_best_0.pt").is_file():
        if (d / "images_best_0.pt").is_file():  # DC-BENCH's Tiny IPC50: five parts
            parts = sorted(d.glob("images_best_[0-9]*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
            found = Found(images=torch.cat([_tensor(safe_load(p), p, "images") for p in parts]),
                          labels=torch.cat([_tensor(safe_load(d / p.name.replace("images", "labels")), p, "labels")
                                            for p in parts]), dir=d, files=[p.name for p in parts])
        else:
            found = _read_best(d, "mtt")
    elif res := sorted(d.glob("res_*.pt")):
        found = _read_dc(res[0] if len(res) == 1 else d)
    elif imgs := sorted(d.glob("*_images.pt")):
        lab = Path(str(imgs[0])[: -len("_images.pt")] + "_labels.pt")
        found = Found(images=_tensor(safe_load(imgs[0]), imgs[0], "images"),
                      labels=_tensor(safe_load(_need(lab, "labels")), lab, "labels"), dir=d,
                      files=[imgs[0].name, lab.name])
    elif npz := sorted(d.glob("*.npz")):  # KIP: NHWC images, one-hot labels
        with np.load(npz[0], allow_pickle=False) as z:
            if "images" not in z or "labels" not in z:
                raise SyntheticFileError(f"{npz[0]} has no 'images'/'labels' arrays")
            found = Found(images=torch.from_numpy(np.ascontiguousarray(z["images"].transpose(0, 3, 1, 2))).float(),
                          labels=torch.from_numpy(np.asarray(z["labels"])).float().argmax(1), dir=d,
                          files=[npz[0].name])
    else:
        raise SyntheticFileError(f"{d} holds no DC-BENCH result (res_*.pt, images_best.pt, *_images.pt or *.npz)")
    found["meta"] = meta
    found["method"] = method_dir.lower()
    exact = d / EXACT_NAME
    if meta and exact.is_file():
        found["exact"] = _tensor(safe_load(exact), exact, "exact images")
    if (d / "soft_labels.pt").is_file() and meta:
        found["soft"] = _tensor(safe_load(d / "soft_labels.pt"), d / "soft_labels.pt", "soft labels")
    return found


def from_meta(found: Found, fmt: str) -> SyntheticSet:
    meta = found["meta"]
    labels = found.get("labels")
    if fmt == "png":
        images = found.get("exact")
        labels = found["labels"]
    else:
        images = found.get("exact", found["images"])
    if labels is None or labels.dim() != 1:
        raise SyntheticFileError(f"{found['dir']} has no 1-D labels.pt next to its meta.json")
    n = labels.shape[0]
    if images is not None and images.shape[0] != n:
        raise SyntheticFileError(f"{found['dir']}: {images.shape[0]} images but {n} labels")
    soft = found.get("soft")
    order = meta.get("order")
    if order is not None:  # undo the class-major sort of a ddranking export
        inverse = torch.argsort(torch.as_tensor(order, dtype=torch.int64))
        labels = labels[inverse]
        images = images[inverse] if images is not None else None
        soft = soft[inverse] if soft is not None else None
    if images is None:  # lossless PNGs: rebuild the float images exactly as load_real would
        shell = set_from_meta(meta, torch.zeros((n, *found["pixels"].shape[1:])), labels.long(), found["dir"])
        images = uint8_to_space(found["pixels"], shell)
    return set_from_meta(meta, images.float().contiguous(), labels.long().contiguous(), found["dir"], soft)


def read_source(src: Path, fmt: str, *, dataset: str | None = None, ipc: int | None = None,
                method: str | None = None) -> Found:
    """Read ``src`` in format ``fmt`` (one of :data:`FORMATS`) into a :class:`Found` record."""
    if fmt == "dc":
        return _read_dc(src)
    if fmt in ("mtt", "datm"):
        return _read_best(src, fmt)
    if fmt in ("pt", "ddranking"):
        return _read_tensors(src, fmt)
    if fmt == "png":
        return _read_png(src)
    if fmt == "dcbench":
        if not src.is_dir():
            raise SyntheticFileError(f"{src} is not a directory (dcbench expects distilled_results/ or a folder in it)")
        return _read_dcbench(src, dataset, ipc, method)
    raise ConfigError(f"unknown import format {fmt!r}; choose one of: {', '.join(FORMATS)}")
