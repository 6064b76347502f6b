"""The dataset catalogue: ``load_real(name)`` and the DATASETS registry.

Names: ``mnist``, ``fashionmnist``, ``cifar10``, ``cifar100``, ``svhn``, and two prefixes for
users' own data: ``arrays:/path/to/dir`` (the array layout of :mod:`dsdistill.data.loaders`) and
``imagefolder:/path/to/dir``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dsdistill.augment.zca import ZCA
from dsdistill.data.loaders import RawSplits, load_arrays, load_cifar, load_idx, load_image_folder, load_svhn
from dsdistill.data.paths import resolve_data_root
from dsdistill.data.real import RealData, fingerprint, stratified_split
from dsdistill.data.specs import CIFAR10_STATS, SPECS
from dsdistill.errors import ConfigError, DataNotFoundError
from dsdistill.registry import DATASETS

for _name in ("mnist", "fashionmnist"):
    DATASETS.register(_name)(lambda root, download, _n=_name: load_idx(_n, root, download))
for _name in ("cifar10", "cifar100"):
    DATASETS.register(_name)(lambda root, download, _n=_name: load_cifar(_n, root, download))
DATASETS.register("svhn")(load_svhn)
DATASETS.register("arrays:PATH")(lambda path, download: load_arrays(Path(path)))
DATASETS.register("imagefolder:PATH")(lambda path, download: load_image_folder(Path(path)))

PREFIXES = ("arrays:", "imagefolder:")


def canonical_name(name: str) -> str:
    """``"CIFAR-10"`` -> ``"cifar10"``; prefixed names keep their path."""
    for prefix in PREFIXES:
        if name.lower().startswith(prefix):
            return prefix + name[len(prefix):]
    return name.strip().lower().replace("-", "").replace("_", "")


def load_raw(name: str, data_root: str | os.PathLike | None = None, download: bool = False) -> RawSplits:
    """Raw uint8 splits of dataset ``name`` (see module docstring for names)."""
    key = canonical_name(name)
    for prefix in PREFIXES:
        if key.startswith(prefix):
            path = Path(key[len(prefix):]).expanduser()
            if not path.is_dir():
                raise DataNotFoundError(f"dataset directory {path} does not exist")
            return DATASETS.get(prefix + "PATH")(path, download)
    loader = DATASETS.get(key)
    root = resolve_data_root(data_root)
    if data_root is not None and not root.is_dir():
        raise DataNotFoundError(f"data root {root} does not exist; pass an existing --data-root directory")
    return loader(root, download)


def load_real(
    name: str,
    data_root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    val_fraction: float = 0.1,
    zca: bool = False,
    zca_eps: float = 0.1,
    cifar100_with_cifar10_stats: bool = False,
) -> RealData:
    """Load a dataset as :class:`RealData`.

    Args:
        name: Catalogue name (``mnist``...) or ``arrays:DIR`` / ``imagefolder:DIR``.
        data_root: Folder holding the datasets (default: see :mod:`dsdistill.data.paths`).
        download: Let torchvision download missing files (needs internet).
        val_fraction: Share of each class of the official training set held out for validation.
        zca: Work in ZCA space (kornia ZCAWhitening fitted on the training split's raw pixels)
            instead of mean/std normalisation.
        zca_eps: ZCA regulariser.
        cifar100_with_cifar10_stats: Reproduce the MTT/DATM quirk of normalising CIFAR-100 with
            CIFAR-10 statistics.

    Returns:
        RealData with float32 images.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    key = canonical_name(name)
    raw = load_raw(key, data_root, download)
    spec = SPECS.get(key)
    num_classes = spec.num_classes if spec else int(raw.train_y.max()) + 1
    if spec is not None:
        mean, std = spec.mean, spec.std
        if key == "cifar100" and cifar100_with_cifar10_stats:
            mean, std = CIFAR10_STATS
    else:  # user data: statistics of its own training split
        pixels = raw.train_x.float() / 255
        mean = tuple(pixels.mean(dim=(0, 2, 3)).tolist())
        std = tuple(pixels.std(dim=(0, 2, 3)).tolist())
    train_idx, val_idx = stratified_split(raw.train_y, val_fraction)
    pixels_train = raw.train_x.float().div_(255)
    pixels_test = raw.test_x.float().div_(255)
    zca_t = None
    if zca:
        zca_t = ZCA(eps=zca_eps).fit(pixels_train[train_idx])
        images_train, images_test = zca_t(pixels_train), zca_t(pixels_test)
    else:
        m = torch.tensor(mean).view(1, -1, 1, 1)
        s = torch.tensor(std).view(1, -1, 1, 1)
        images_train, images_test = (pixels_train - m) / s, (pixels_test - m) / s
    return RealData(
        name=key,
        train_images=images_train[train_idx].contiguous(),
        train_labels=raw.train_y[train_idx],
        val_images=images_train[val_idx].contiguous(),
        val_labels=raw.train_y[val_idx],
        test_images=images_test.contiguous(),
        test_labels=raw.test_y,
        num_classes=num_classes,
        class_names=list(raw.class_names) or [str(i) for i in range(num_classes)],
        mean=tuple(mean),
        std=tuple(std),
        space="zca" if zca else "normalized",
        zca=zca_t,
        fingerprint=fingerprint(raw.train_x, raw.train_y, raw.test_x, raw.test_y),
        source=raw.source,
    )
