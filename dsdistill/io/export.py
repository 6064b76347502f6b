"""Export a synthetic set to the formats other tools read.

``png``        ImageFolder: ``DIR/{000_classname}/{00000}.png`` in pixel space (8-bit, lossless
               when the set's images are exactly 8-bit levels; otherwise the PNGs are clamped
               and rounded for viewing, and ``images_exact.pt`` keeps the float32 tensor).
``pt``         Plain tensors: ``images.pt`` (N, C, H, W) float32 in the set's space,
               ``labels.pt`` (N,) int64, ``soft_labels.pt`` (N, K), ``lr.pt`` (0-d float32),
               ``zca.pt`` ({mean, matrix, inverse}) when the set lives in ZCA space.
``ddranking``  DD-Ranking inputs: class-major ``images.pt`` (K*IPC, C, H, W), ``labels.pt``
               (K*IPC,) hard labels, ``soft_labels.pt`` for ``soft_label_mode='S'``, ``lr.pt``
               for ``syn_lr``. Refuses sets whose classes have different IPC (DD-Ranking implies
               the hard labels as ``[c] * ipc`` per class).
``dcbench``    DC-BENCH's layout ``DIR/distilled_results/{METHOD}/{dataset}/IPC{k}/``: DC/DSA/DM
               (and any other method) as ``res_{METHOD}_{dataset}_ConvNet_{k}ipc.pt`` =
               ``{'data': [[images, labels]]}``; trajectory matching as ``images_best.pt`` /
               ``labels_best.pt`` (+ ``lr_best.pt``); random as
               ``{dataset}_IPC{k}_normalize_images.pt`` / ``_labels.pt``. DC-BENCH has no ZCA
               path and normalises with the dataset's statistics, so ZCA and pixel sets are
               converted to that space and the exact tensor is kept in ``images_exact.pt``.

Every export directory also holds ``meta.json`` (:mod:`dsdistill.io.interop`), and is written
atomically: it appears complete under its final name, or not at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from dsdistill.errors import ConfigError
from dsdistill.io.atomic import atomic_write_json
from dsdistill.io.interop import (EXACT_NAME, META_NAME, atomic_dir, check_output_dir, is_uint8_exact,
                                  make_meta, pixels_to_space, safe_name, save_tensor, write_png)
from dsdistill.synthetic import SyntheticSet

FORMATS = ("png", "pt", "ddranking", "dcbench")
TM_FAMILY = ("tm", "mtt", "ftd", "datm", "tesla", "pad", "ast")
DCBENCH_METHODS = {"dc": "DC", "dsa": "DSA", "dm": "DM", "kip": "KIP", "random": "random", "kmeans": "kmeans",
                   **{m: "TM" for m in TM_FAMILY}}
DCBENCH_DATASETS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST", "fashionmnist": "FashionMNIST",
                    "svhn": "SVHN", "tinyimagenet": "tinyimagenet"}


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes:
        directory: The output directory.
        files: Paths of the files written, relative to ``directory``.
        notes: Things the user should know (lossy PNGs, missing DC-BENCH support, ...).
    """

    directory: Path
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def class_dir_names(syn: SyntheticSet) -> list[str]:
    """``000_airplane``-style folder names: sorting them alphabetically keeps class order."""
    width = max(3, len(str(syn.num_classes - 1)))
    names = syn.class_names or [str(c) for c in range(syn.num_classes)]
    return [f"{c:0{width}d}_{safe_name(str(n), str(c))}" for c, n in enumerate(names)]


def dcbench_dataset_name(dataset: str) -> str:
    """DC-BENCH's spelling of a dataset (``CIFAR10``); user data keeps its folder name."""
    key = dataset.split(":", 1)[-1].rstrip("/\\")
    return DCBENCH_DATASETS.get(dataset, safe_name(os.path.basename(key) or dataset, "dataset"))


def _class_counts(syn: SyntheticSet) -> torch.Tensor:
    return torch.bincount(syn.labels, minlength=syn.num_classes)


def _write_common(syn: SyntheticSet, d: Path, files: dict[str, str]) -> None:
    """Soft labels, lr and ZCA state next to the images (shared by every format)."""
    if syn.soft_labels is not None:
        files["soft_labels"] = save_tensor(syn.soft_labels.values.clone(), d / "soft_labels.pt")
    if syn.lr is not None:
        files["lr"] = save_tensor(torch.tensor(syn.lr, dtype=torch.float32), d / "lr.pt")
    if syn.zca is not None:
        files["zca"] = save_tensor({k: torch.as_tensor(syn.zca[k]).float().clone()
                                    for k in ("mean", "matrix", "inverse")}, d / "zca.pt")


def _lossy_note(syn: SyntheticSet, what: str) -> str:
    pixels = syn.to_pixels()
    outside = float(((pixels < 0) | (pixels > 1)).float().mean()) * 100
    why = ("ZCA-space images cannot round-trip 8-bit pixels bit for bit (the ZCA is a matrix product)"
           if syn.space == "zca" else f"images ({syn.space} space) are not exactly representable as 8-bit pixels")
    return (f"{why} ({outside:.1f}% of values outside [0, 1] in pixel space); {what}, and {EXACT_NAME} holds "
            f"the exact float32 images so an import restores them bit for bit")


def _export_png(syn: SyntheticSet, d: Path, res: ExportResult) -> dict:
    exact, q = is_uint8_exact(syn)
    names = class_dir_names(syn)
    seen = [0] * syn.num_classes
    order: list[str] = []
    for i, c in enumerate(syn.labels.tolist()):  # one file per image: the loop is the I/O
        rel = f"{names[c]}/{seen[c]:05d}.png"
        seen[c] += 1
        (d / names[c]).mkdir(exist_ok=True)
        write_png(q[i], d / rel)
        order.append(rel)
    for c, name in enumerate(names):  # an empty class still gets its folder (ImageFolder indices)
        (d / name).mkdir(exist_ok=True)
    files: dict[str, str] = {"images": "<class folders>/*.png", "labels": "<class folders>"}
    if not exact:
        files["exact_images"] = save_tensor(syn.images.float().clone(), d / EXACT_NAME)
        res.notes.append(_lossy_note(syn, "the PNGs are clamped to [0, 1] and rounded for viewing"))
    _write_common(syn, d, files)
    return make_meta(syn, "png", files, res.notes, png_order=order, class_dirs=names)


def _export_pt(syn: SyntheticSet, d: Path, res: ExportResult) -> dict:
    files = {"images": save_tensor(syn.images.float().clone(), d / "images.pt"),
             "labels": save_tensor(syn.labels.long().clone(), d / "labels.pt")}
    _write_common(syn, d, files)
    return make_meta(syn, "pt", files, res.notes)


def check_ddranking(syn: SyntheticSet) -> int:
    """The common IPC of every class, or ConfigError when classes differ (DD-Ranking's contract)."""
    counts = _class_counts(syn)
    if int(counts.min()) != int(counts.max()) or int(counts.min()) == 0:
        raise ConfigError(f"DD-Ranking needs the same IPC in every class (it implies hard labels "
                          f"class-major); this set has between {int(counts.min())} and {int(counts.max())} "
                          f"images per class; export it --to pt or --to png instead")
    return int(counts[0])


def _export_ddranking(syn: SyntheticSet, d: Path, res: ExportResult) -> dict:
    ipc = check_ddranking(syn)
    perm = torch.argsort(syn.labels, stable=True)
    identity = bool(torch.equal(perm, torch.arange(syn.num_images)))
    files = {"images": save_tensor(syn.images[perm].float().clone(), d / "images.pt"),
             "labels": save_tensor(syn.labels[perm].long().clone(), d / "labels.pt")}
    sorted_syn = syn if identity else _permuted(syn, perm)
    _write_common(sorted_syn, d, files)
    if syn.image_shape[0] != 3:
        res.notes.append(f"DD-Ranking's models hard-code 3 input channels; this set has {syn.image_shape[0]}")
    if not identity:
        res.notes.append("images were reordered class-major for DD-Ranking; meta.json 'order' restores "
                         "the file's order on import")
    usage = {"compute_metrics": {"image_tensor": "torch.load('images.pt')",
                                 "soft_labels": "torch.load('soft_labels.pt')" if syn.soft_labels is not None else None,
                                 "syn_lr": float(syn.lr) if syn.lr is not None else None},
             "config": {"dataset": dcbench_dataset_name(syn.dataset), "ipc": ipc, "use_zca": syn.space == "zca",
                        "soft_label_mode": "S" if syn.soft_labels is not None else None},
             "space_note": "images are in the set's space (normalised with 'mean'/'std', or ZCA-whitened); "
                           "DD-Ranking refits ZCA (eps 0.1) on the real train set when use_zca=True"}
    extra = {"ddranking": usage}
    if not identity:
        extra["order"] = perm.tolist()  # row i of images.pt is row order[i] of the original file
    return make_meta(syn, "ddranking", files, res.notes, **extra)


def _permuted(syn: SyntheticSet, perm: torch.Tensor) -> SyntheticSet:
    import dataclasses

    soft = syn.soft_labels
    if soft is not None:
        soft = dataclasses.replace(soft, values=soft.values[perm])
    return dataclasses.replace(syn, images=syn.images[perm], labels=syn.labels[perm], soft_labels=soft)


def _export_dcbench(syn: SyntheticSet, d: Path, res: ExportResult) -> dict:
    from dsdistill.data.specs import SPECS

    method = DCBENCH_METHODS.get(syn.method.lower(), safe_name(syn.method, "method"))
    ds = dcbench_dataset_name(syn.dataset)
    rel_dir = Path("distilled_results") / method / ds / f"IPC{syn.ipc}"
    ipc_dir = d / rel_dir
    ipc_dir.mkdir(parents=True)
    images = syn.images.float()
    files: dict[str, str] = {}
    if syn.space != "normalized":
        spec = SPECS.get(syn.dataset)
        mean = syn.mean if syn.mean is not None else (spec.mean if spec else None)
        std = syn.std if syn.std is not None else (spec.std if spec else None)
        if mean is None or std is None:
            raise ConfigError(f"DC-BENCH reads images normalised with the dataset's statistics, and this "
                              f"{syn.space}-space set of {syn.dataset} records none; export it --to pt instead")
        images = pixels_to_space(syn.to_pixels(), "normalized", mean, std)
        files["exact_images"] = save_tensor(syn.images.float().clone(), ipc_dir / EXACT_NAME)
        res.notes.append(f"DC-BENCH has no ZCA path: the {syn.space}-space images were mapped to pixels and "
                         f"normalised with mean {[round(v, 4) for v in mean]} / std {[round(v, 4) for v in std]} for it; {EXACT_NAME} keeps the "
                         f"exact images for import")
    labels = syn.labels.long().clone()
    suffix = "ConvNetD4" if ds == "tinyimagenet" else "ConvNet"
    if method == "TM":
        files["images"] = save_tensor(images.clone(), ipc_dir / "images_best.pt")
        files["labels"] = save_tensor(labels, ipc_dir / "labels_best.pt")
        if syn.lr is not None:
            files["lr_best"] = save_tensor(torch.tensor(syn.lr, dtype=torch.float32), ipc_dir / "lr_best.pt")
    elif method == "random":
        files["images"] = save_tensor(images.clone(), ipc_dir / f"{ds}_IPC{syn.ipc}_normalize_images.pt")
        files["labels"] = save_tensor(labels, ipc_dir / f"{ds}_IPC{syn.ipc}_normalize_labels.pt")
    else:
        name = f"res_{method.upper()}_{ds}_{suffix}_{syn.ipc}ipc.pt"
        files["data"] = save_tensor({"data": [[images.clone(), labels]], "accs_all_exps": {}}, ipc_dir / name)
    _write_common(syn, ipc_dir, files)
    if syn.soft_labels is not None or syn.lr is not None:
        res.notes.append("DC-BENCH trains on hard labels with its own lr; soft labels and the learned lr are "
                         "stored for dsdistill only")
    if syn.image_shape[0] != 3:
        res.notes.append(f"DC-BENCH's networks hard-code 3 input channels; this set has {syn.image_shape[0]}")
    meta = make_meta(syn, "dcbench", files, res.notes, dcbench={"method_dir": method, "dataset_dir": ds,
                                                                 "ipc_dir": str(rel_dir)})
    return {"__dir__": rel_dir, **meta}


_WRITERS = {"png": _export_png, "pt": _export_pt, "ddranking": _export_ddranking, "dcbench": _export_dcbench}


def export_set(syn: SyntheticSet, output: str | os.PathLike[str], to: str, *,
               overwrite: bool = False) -> ExportResult:
    """Write ``syn`` to directory ``output`` in format ``to`` (see the module docstring).

    Args:
        syn: The set.
        output: Directory to create (must not exist unless ``overwrite``).
        to: One of :data:`FORMATS`.
        overwrite: Replace an existing output directory (only once the new one is complete).

    Returns:
        The directory, the files written and notes for the user.

    Raises:
        ConfigError: Unknown format, existing output, or a set the format cannot hold (uneven
            IPC for ``ddranking``).
    """
    if to not in _WRITERS:
        raise ConfigError(f"unknown export format {to!r}; choose one of: {', '.join(FORMATS)}")
    check_output_dir(output, overwrite)
    if to == "ddranking":
        check_ddranking(syn)
    res = ExportResult(Path(output))
    with atomic_dir(output, overwrite=overwrite) as tmp:
        meta = _WRITERS[to](syn, tmp, res)
        meta_dir = tmp / meta.pop("__dir__", "")
        atomic_write_json(meta_dir / META_NAME, meta)
        res.files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
    return res


def export_file(file: str | os.PathLike[str], output: str | os.PathLike[str], to: str, *,
                overwrite: bool = False) -> ExportResult:
    """Load a dsdistill HDF5 file and :func:`export_set` it (checks run before any reading)."""
    from dsdistill.io import load_synthetic

    if to not in _WRITERS:
        raise ConfigError(f"unknown export format {to!r}; choose one of: {', '.join(FORMATS)}")
    check_output_dir(output, overwrite)
    return export_set(load_synthetic(file), output, to, overwrite=overwrite)


__all__ = ["FORMATS", "ExportResult", "export_set", "export_file", "class_dir_names", "dcbench_dataset_name"]
