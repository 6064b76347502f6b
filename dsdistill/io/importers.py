"""Import published distilled sets (and our own exports) into the dsdistill HDF5 schema.

Formats (``SRC`` is a file or a directory; readers in :mod:`dsdistill.io.readers`):

``dc``         DatasetCondensation ``res_*.pt``: ``{'data': [[images, labels], ...]}``; the last
               entry is taken (DC-BENCH reads it the same way).
``mtt``        ``images_best.pt`` + ``labels_best.pt`` (hard labels), or ``images_{it}.pt`` with the
               highest ``it``; ``images_zca_*.pt`` (MTT's inverse-ZCA copy) is used only to check
               the ZCA refitted here.
``datm``       ``images_best.pt`` + ``labels_best.pt`` (learned logits -> soft labels; hard labels
               are the class-major assignment) + ``lr_best.pt``; a ``Normal/`` folder is entered.
``pt``         ``images.pt`` + ``labels.pt`` (+ ``soft_labels.pt``, ``lr.pt``) as ``export --to pt``.
``ddranking``  ``images.pt`` (class-major) + optional ``labels.pt`` / ``soft_labels.pt`` / ``lr.pt``.
``dcbench``    ``distilled_results/{METHOD}/{dataset}/IPC{k}/`` (or any folder inside it).
``png``        An ImageFolder of 8-bit images (class folders in sorted order).

A directory written by ``dsdistill export`` carries ``meta.json`` and is restored exactly (space,
statistics, ZCA, soft labels, lr, image order). Foreign files cannot say which space their
tensors live in, so ``space`` tells it:

* ``normalized`` (default): ``(x - mean) / std`` with the dataset's statistics from
  :data:`dsdistill.data.specs.SPECS` (``cifar10_stats=True`` for the MTT/DATM/DD-Ranking habit of
  normalising CIFAR-100 with CIFAR-10's), or the training split's own for user data;
* ``zca``: ZCA-whitened pixels; the ZCA (kornia, eps ``zca_eps``) is refitted on the real training
  split, exactly as ``dsdistill evaluate`` does, so the dataset must be on disk;
* ``pixel``: [0, 1] pixels, converted to ``normalized`` here because evaluators train there.

PNG folders always hold pixels; ``space`` then picks the stored space (``zca`` or normalised).
Only ``torch.load(weights_only=True)`` is used: nothing is unpickled.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from dsdistill.errors import ConfigError, SyntheticFileError
from dsdistill.io.interop import pixels_to_space
from dsdistill.io.readers import FORMATS, Found, from_meta, read_source
from dsdistill.synthetic import SoftLabels, SyntheticSet

IMPORT_SPACES = ("normalized", "zca", "pixel")
_DEFAULT_METHOD = {"dc": "dc", "mtt": "mtt", "datm": "datm"}
_PROTOCOL = {"dc": "dc", "mtt": "tm", "datm": "tm"}


def _check_options(fmt: str, space: str, ipc: int | None) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown import format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if space not in IMPORT_SPACES:
        raise ConfigError(f"unknown space {space!r}; choose one of: {', '.join(IMPORT_SPACES)}")
    if ipc is not None and ipc <= 0:
        raise ConfigError(f"--ipc must be a positive integer, got {ipc}")


def _hard_labels(found: Found, fmt: str, n: int, k: int, notes: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(N,)`` int64 hard labels and optional ``(N, K)`` soft labels from what the reader found."""
    raw, soft = found.get("labels"), found.get("soft")
    class_major = torch.arange(k).repeat_interleave(n // k) if n % k == 0 else None
    if raw is None:
        if class_major is None:
            raise SyntheticFileError(f"{found.get('source', found['dir'])} has no labels.pt and {n} images do not split evenly into "
                                     f"{k} classes (DD-Ranking's implied class-major labels)")
        notes.append("no labels.pt: hard labels are the class-major assignment DD-Ranking implies")
        return class_major, soft
    if raw.dim() == 2:
        if tuple(raw.shape) != (n, k):
            raise SyntheticFileError(f"{found.get('source', found['dir'])}: labels have shape {tuple(raw.shape)}, expected ({n}, {k})")
        soft = raw.float()
        if class_major is not None:
            hard = class_major
            moved = int((soft.argmax(1) != hard).sum())
            notes.append(f"labels are {k}-way logits, stored as soft labels; hard labels are the class-major "
                         f"assignment ({moved} of {n} logits now argmax to another class)")
        else:
            hard = soft.argmax(1)
            notes.append("labels are logits; hard labels are their argmax")
        return hard, soft
    if raw.dim() != 1 or raw.shape[0] != n:
        raise SyntheticFileError(f"{found.get('source', found['dir'])}: labels have shape {tuple(raw.shape)}, expected ({n},)")
    if raw.is_floating_point() and not bool(torch.equal(raw, raw.round())):
        raise SyntheticFileError(f"{found.get('source', found['dir'])}: 1-D labels are not whole numbers")
    return raw.long(), soft


def _stats(key: str, spec: Any, real: Any, cifar10_stats: bool) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    from dsdistill.data.specs import CIFAR10_STATS

    if cifar10_stats:
        if key != "cifar100":
            raise ConfigError("--cifar10-stats only applies to cifar100 (the MTT/DATM quirk)")
        return CIFAR10_STATS[0], CIFAR10_STATS[1], "CIFAR-10 statistics (MTT/DATM/DD-Ranking CIFAR-100 quirk)"
    if spec is not None:
        return spec.mean, spec.std, f"dsdistill.data.specs.SPECS[{key!r}]"
    return tuple(real.mean), tuple(real.std), "the dataset's training split"


def _foreign(found: Found, fmt: str, dataset: str | None, ipc: int | None, space: str, method: str | None,
             zca_eps: float, cifar10_stats: bool, data_root: str | None) -> SyntheticSet:
    from dsdistill.data import SPECS, canonical_name, load_real

    if not dataset:
        raise ConfigError(f"--dataset is required to import {fmt} results (they do not record it)")
    key, notes = canonical_name(dataset), []
    spec = SPECS.get(key)
    if "pixels" in found:
        images, src_space = found["pixels"].float().div(255), "pixel"
    else:
        images, src_space = found["images"].float(), space
    if images.dim() == 3:
        images = images.unsqueeze(1)
        notes.append("images were (N, H, W); a channel axis was added")
    if images.dim() != 4 or images.shape[0] == 0:
        raise SyntheticFileError(f"{found.get('source', found['dir'])}: images have shape {tuple(images.shape)}, expected (N, C, H, W)")
    if not bool(torch.isfinite(images).all()):
        raise SyntheticFileError(f"{found.get('source', found['dir'])}: images contain NaN or Inf")
    if spec is not None and tuple(images.shape[1:]) != tuple(spec.shape):
        raise ConfigError(f"images are {tuple(images.shape[1:])} but {key} images are {spec.shape}; "
                          f"check --dataset")
    real = None
    if spec is None or space == "zca":
        real = load_real(key, data_root, zca=space == "zca", zca_eps=zca_eps)
        if tuple(images.shape[1:]) != tuple(real.image_shape):
            raise ConfigError(f"images are {tuple(images.shape[1:])} but {key} images are {real.image_shape}")
    k = spec.num_classes if spec is not None else real.num_classes
    n = images.shape[0]
    labels, soft = _hard_labels(found, fmt, n, k, notes)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise SyntheticFileError(f"{found.get('source', found['dir'])}: labels outside [0, {k}) for {key}; check --dataset")
    if soft is not None and tuple(soft.shape) != (n, k):
        raise SyntheticFileError(f"{found.get('source', found['dir'])}: soft labels have shape {tuple(soft.shape)}, expected ({n}, {k})")
    perm = torch.argsort(labels, stable=True)
    if not bool(torch.equal(perm, torch.arange(n))):
        images, labels = images[perm], labels[perm]
        soft = soft[perm] if soft is not None else None
        notes.append("images were reordered class-major (stable)")
    counts = torch.bincount(labels, minlength=k)
    even = int(counts.min()) == int(counts.max())
    if ipc is not None and even and int(counts[0]) != ipc:
        raise ConfigError(f"{found.get('source', found['dir'])} holds {int(counts[0])} images per class, not --ipc {ipc}")
    ipc = ipc or int(counts.max())
    mean, std, stats_from = _stats(key, spec, real, cifar10_stats)
    zca = real.zca.state() if space == "zca" else None
    if src_space == "pixel":
        images = pixels_to_space(images, "zca" if space == "zca" else "normalized", mean, std, zca)
        notes.append(f"pixels were mapped to {'zca' if space == 'zca' else 'normalized'} space")
    if "zca_copy" in found:
        if space == "zca":
            from dsdistill.augment.zca import ZCA

            diff = float((ZCA.from_state(zca).inverse(images) - found["zca_copy"].float()).abs().max())
            notes.append(f"inverse ZCA of the images differs from the source's images_zca copy by at most "
                         f"{diff:.3g} (the ZCA here is fitted on the training split minus validation)")
        else:
            notes.append("found images_zca_*.pt, which MTT writes only for ZCA runs: the images are probably "
                         "in ZCA space; pass --space zca")
    lr = found.get("lr")
    if lr is not None and not math.isfinite(lr):
        raise SyntheticFileError(f"{found.get('source', found['dir'])}: the learned lr is {lr}")
    soft_labels = None
    if soft is not None:
        probs = bool((soft >= 0).all()) and bool(torch.allclose(soft.sum(1), torch.ones(n), atol=1e-4))
        soft_labels = SoftLabels(soft.float(), kind="probs" if probs else "logits", source=f"imported {fmt}")
    name = method or found.get("method") or _DEFAULT_METHOD.get(fmt, "imported")
    class_names = list(spec.class_names) if spec is not None and spec.class_names else \
        list(found.get("class_names") or (real.class_names if real is not None else []))
    provenance = {"import": {"source": str(found.get("source", found["dir"])), "format": fmt, "files": found.get("files", []),
                             "source_space": src_space if "pixels" in found else space,
                             "normalization": stats_from, "zca": f"refitted, eps {zca_eps}" if zca else None,
                             "notes": notes}}
    return SyntheticSet(
        images=images.contiguous(), labels=labels.contiguous(), num_classes=k, method=name, dataset=key,
        ipc=ipc, space="zca" if space == "zca" else "normalized", mean=tuple(mean), std=tuple(std), zca=zca,
        soft_labels=soft_labels, lr=lr, class_names=class_names if len(class_names) == k else [],
        provenance=provenance, protocol=_PROTOCOL.get(fmt) or ("tm" if lr is not None or soft is not None else None))


def import_set(src: str | os.PathLike[str], fmt: str, *, dataset: str | None = None, ipc: int | None = None,
               space: str = "normalized", method: str | None = None, zca_eps: float = 0.1,
               cifar10_stats: bool = False, data_root: str | None = None) -> SyntheticSet:
    """Read a distilled set in format ``fmt`` as a :class:`SyntheticSet` (see the module docstring).

    Args:
        src: File or directory.
        fmt: One of :data:`FORMATS`.
        dataset: Catalogue name; required for foreign results, checked against ``meta.json`` otherwise.
        ipc: Images per class; inferred when omitted, checked when given.
        space: Space of foreign tensors: ``normalized``, ``zca`` or ``pixel``.
        method: Name recorded in the set (default: the format's, or DC-BENCH's method folder).
        zca_eps: ZCA regulariser for ``space="zca"``.
        cifar10_stats: Normalisation used CIFAR-10 statistics on CIFAR-100 (MTT/DATM quirk).
        data_root: Dataset folder (for ZCA refits and user datasets).

    Returns:
        The set; ``provenance["import"]`` records the source, the space decision and notes.

    Raises:
        ConfigError: Bad options. SyntheticFileError: unreadable or inconsistent source.
    """
    _check_options(fmt, space, ipc)
    path = Path(src)
    if not path.exists():
        raise SyntheticFileError(f"{path} does not exist")
    found = read_source(path, fmt, dataset=dataset, ipc=ipc, method=method)
    if found.get("meta") is None:
        return _foreign(found, fmt, dataset, ipc, space, method, zca_eps, cifar10_stats, data_root)
    syn = from_meta(found, fmt)
    if dataset:
        from dsdistill.data import canonical_name

        if canonical_name(dataset) != syn.dataset:
            raise ConfigError(f"{path} holds a {syn.dataset} set (meta.json), not --dataset {dataset}")
    if ipc is not None and ipc != syn.ipc:
        raise ConfigError(f"{path} holds an IPC {syn.ipc} set (meta.json), not --ipc {ipc}")
    if method:
        syn.method = method
    syn.provenance = {**syn.provenance, "import": {"source": str(found["dir"]), "format": fmt,
                                                   "exact": True, "notes": []}}
    return syn


def import_file(src: str | os.PathLike[str], fmt: str, output: str | os.PathLike[str], *,
                overwrite: bool = False, **options: Any) -> SyntheticSet:
    """:func:`import_set`, then write the set to ``output`` (HDF5, atomically).

    Output checks run before any reading, so a bad call leaves nothing behind.
    """
    from dsdistill.io import save_synthetic
    from dsdistill.io.atomic import check_overwrite

    check_overwrite(output, overwrite)
    parent = Path(output).parent
    if str(parent) and not parent.is_dir():
        raise ConfigError(f"output directory {parent} does not exist; create it first")
    _check_options(fmt, options.get("space", "normalized"), options.get("ipc"))
    syn = import_set(src, fmt, **options)
    try:
        save_synthetic(syn, output, overwrite=overwrite)
    except ValueError as err:  # the set is inconsistent in a way the writer refuses
        raise SyntheticFileError(f"{src} cannot be stored: {err}") from None
    return syn


__all__ = ["FORMATS", "IMPORT_SPACES", "import_set", "import_file"]
