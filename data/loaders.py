"""Readers that turn dataset files into raw uint8 tensors.

Each reader returns :class:`RawSplits` (``(N, C, H, W)`` uint8 train/test images, int64 labels,
class names). torchvision's own layouts and dataset classes are used wherever they exist
(MNIST/FashionMNIST raw idx files, ``cifar-10-batches-py``, ``cifar-100-python``, SVHN ``.mat``).
Two layouts torchvision lacks are read here: the *array layout* (``train_images.npy[.xz]``,
``train_labels.npy``, ``test_images.npy[.xz]``, ``test_labels.npy``, optional ``classes.txt``;
how ``shared/data/CIFAR10-npy-xz`` stores CIFAR-10, and a handy format for users' own data) and
any ImageFolder tree (``train/<class>/*``, ``test/<class>/*`` or ``val/<class>/*``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dsdistill.data.paths import EMBEDDED_ROOT, cache_dir, decompress_to
from dsdistill.data.specs import SPECS
from dsdistill.errors import DataNotFoundError

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


@dataclass
class RawSplits:
    """Official train/test splits as loaded from disk.

    Attributes:
        train_x: ``(N, C, H, W)`` uint8.
        train_y: ``(N,)`` int64.
        test_x: ``(M, C, H, W)`` uint8.
        test_y: ``(M,)`` int64.
        class_names: Length-K names.
        source: Where the data came from (for provenance).
    """

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    class_names: list[str]
    source: str


def _missing(name: str, root: Path, detail: str) -> DataNotFoundError:
    how = SPECS[name].how_to_get.replace("DATA_ROOT", str(root)) if name in SPECS else ""
    return DataNotFoundError(f"{SPECS[name].title if name in SPECS else name} not found under {root} "
                             f"({detail}); {how}")


def _from_torchvision(dataset_cls, root: Path, download: bool, **kwargs) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    train = dataset_cls(str(root), download=download, **kwargs["train"])
    test = dataset_cls(str(root), download=download, **kwargs["test"])

    def arrays(ds) -> tuple[Tensor, Tensor]:
        data = ds.data
        x = torch.as_tensor(np.asarray(data))
        labels = getattr(ds, "targets", None)
        if labels is None:
            labels = ds.labels
        if x.dim() == 3:  # MNIST: (N, H, W)
            x = x.unsqueeze(1)
        elif x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # CIFAR: (N, H, W, C)
            x = x.permute(0, 3, 1, 2)
        return x.contiguous().to(torch.uint8), torch.as_tensor(np.asarray(labels), dtype=torch.int64)

    return (*arrays(train), *arrays(test))


def load_idx(name: str, root: Path, download: bool) -> RawSplits:
    """MNIST or FashionMNIST from torchvision's raw layout (``ROOT/<Folder>/raw``, plain or .gz).

    Gzipped files are decompressed into the cache (the data root is never written to); MNIST falls
    back to the copy embedded in the package.
    """
    import torchvision.datasets as tvd

    folder = {"mnist": "MNIST", "fashionmnist": "FashionMNIST"}[name]
    cls = {"mnist": tvd.MNIST, "fashionmnist": tvd.FashionMNIST}[name]
    candidates = [root / folder / "raw"] + ([EMBEDDED_ROOT / folder / "raw"] if name == "mnist" else [])
    for raw in candidates:
        if all((raw / f).exists() for f in MNIST_FILES):
            tv_root, source = raw.parent.parent, str(raw)
            break
        if all((raw / f).exists() or (raw / f"{f}.gz").exists() for f in MNIST_FILES):
            tv_root = cache_dir("torchvision")
            target = tv_root / folder / "raw"
            target.mkdir(parents=True, exist_ok=True)
            for f in MNIST_FILES:
                if not (target / f).exists():
                    src = raw / f if (raw / f).exists() else raw / f"{f}.gz"
                    if src.suffix == ".gz":
                        decompress_to(src, target / f)
                    else:  # copy under a temporary name: a killed copy must not pass for the file
                        tmp = target / f".{f}.tmp-{os.getpid()}"
                        tmp.write_bytes(src.read_bytes())
                        os.replace(tmp, target / f)
            source = str(raw)
            break
    else:
        if not download:
            found = [f.name for f in (root / folder / "raw").glob("*")] if (root / folder / "raw").is_dir() else []
            detail = f"expected {', '.join(MNIST_FILES)} (.gz allowed) in {root / folder / 'raw'}"
            if found:
                detail += f"; found only {', '.join(sorted(found))}"
            raise _missing(name, root, detail)
        tv_root, source = cache_dir("torchvision"), "torchvision download"
    splits = _from_torchvision(cls, tv_root, download, train={"train": True}, test={"train": False})
    return RawSplits(*splits, list(SPECS[name].class_names), source)


def _load_npy(path: Path) -> np.ndarray:
    if path.suffix == ".xz":
        key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        path = decompress_to(path, cache_dir("arrays", key) / path.stem)
    return np.load(path, allow_pickle=False)


def _find(directory: Path, stem: str) -> Path | None:
    for suffix in (".npy", ".npy.xz"):
        if (directory / f"{stem}{suffix}").exists():
            return directory / f"{stem}{suffix}"
    return None


def _to_uint8_nchw(x: np.ndarray, path: Path) -> Tensor:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataNotFoundError(f"{path} must hold (N, H, W, C) or (N, C, H, W) images, got shape {x.shape}")
    t = torch.from_numpy(np.ascontiguousarray(x))
    if t.shape[-1] in (1, 3) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2)
    if t.dtype != torch.uint8:
        t = (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return t.contiguous()


def load_arrays(directory: Path, name: str = "arrays") -> RawSplits:
    """Read the array layout described in the module docstring."""
    paths = {stem: _find(directory, stem) for stem in ("train_images", "train_labels", "test_images", "test_labels")}
    missing = [stem for stem, p in paths.items() if p is None]
    if missing:
        detail = f"missing {', '.join(s + '.npy[.xz]' for s in missing)} in {directory}"
        if name in SPECS:
            raise _missing(name, directory.parent, detail)
        raise DataNotFoundError(f"array dataset not found: {detail}")
    train_x = _to_uint8_nchw(_load_npy(paths["train_images"]), paths["train_images"])
    test_x = _to_uint8_nchw(_load_npy(paths["test_images"]), paths["test_images"])
    train_y = torch.from_numpy(_load_npy(paths["train_labels"]).astype(np.int64))
    test_y = torch.from_numpy(_load_npy(paths["test_labels"]).astype(np.int64))
    classes_file = directory / "classes.txt"
    if classes_file.exists():
        names = [line.strip() for line in classes_file.read_text().splitlines() if line.strip()]
    else:
        names = [str(i) for i in range(int(train_y.max()) + 1)]
    return RawSplits(train_x, train_y, test_x, test_y, names, str(directory))


def load_cifar(name: str, root: Path, download: bool) -> RawSplits:
    """CIFAR-10/100: torchvision's pickles when present, else the array layout (CIFAR-10)."""
    import torchvision.datasets as tvd

    folder, cls = {"cifar10": ("cifar-10-batches-py", tvd.CIFAR10), "cifar100": ("cifar-100-python", tvd.CIFAR100)}[name]
    if (root / folder).is_dir():
        tv_root, source = root, str(root / folder)
    elif name == "cifar10" and (root / "CIFAR10-npy-xz").is_dir():
        return load_arrays(root / "CIFAR10-npy-xz", name)
    elif download:
        tv_root, source = cache_dir("torchvision"), "torchvision download"
    else:
        raise _missing(name, root, f"no {root / folder}" + (" or CIFAR10-npy-xz" if name == "cifar10" else ""))
    splits = _from_torchvision(cls, tv_root, download, train={"train": True}, test={"train": False})
    ds_classes = cls(str(tv_root), train=False, download=False).classes
    return RawSplits(*splits, list(ds_classes), source)


def load_svhn(root: Path, download: bool) -> RawSplits:
    """SVHN cropped digits through torchvision (``ROOT/SVHN/{train,test}_32x32.mat``)."""
    import torchvision.datasets as tvd

    folder = root / "SVHN"
    if not (folder / "train_32x32.mat").exists() and not download:
        raise _missing("svhn", root, f"no {folder / 'train_32x32.mat'}")
    tv_root = folder if (folder / "train_32x32.mat").exists() else cache_dir("torchvision", "SVHN")
    splits = _from_torchvision(tvd.SVHN, tv_root, download, train={"split": "train"}, test={"split": "test"})
    return RawSplits(*splits, list(SPECS["svhn"].class_names), str(tv_root))


def load_image_folder(directory: Path) -> RawSplits:
    """An ImageFolder tree with ``train/`` and ``test/`` (or ``val/``) class subfolders.

    All images must share one size (resize them beforehand, e.g. Tiny-ImageNet is 64x64 already).
    """
    import torchvision.datasets as tvd
    from torchvision.transforms.functional import pil_to_tensor

    test_dir = next((directory / d for d in ("test", "val") if (directory / d).is_dir()), None)
    if not (directory / "train").is_dir() or test_dir is None:
        raise DataNotFoundError(f"ImageFolder dataset not found: {directory} needs train/<class>/ and "
                                f"test/<class>/ (or val/<class>/) subfolders")

    def read(split_dir: Path, classes: list[str] | None) -> tuple[Tensor, Tensor, list[str]]:
        ds = tvd.ImageFolder(str(split_dir))
        if classes is not None and ds.classes != classes:
            raise DataNotFoundError(f"{split_dir} has classes {ds.classes[:5]}..., unlike train/")
        images = [pil_to_tensor(ds.loader(path)) for path, _ in ds.samples]
        shapes = {tuple(img.shape) for img in images}
        if len(shapes) != 1:
            raise DataNotFoundError(f"images in {split_dir} differ in size or mode ({sorted(shapes)[:3]}...); "
                                    f"resize them to one size first")
        return torch.stack(images), torch.tensor(ds.targets, dtype=torch.int64), ds.classes

    train_x, train_y, classes = read(directory / "train", None)
    test_x, test_y, _ = read(test_dir, classes)
    return RawSplits(train_x, train_y, test_x, test_y, classes, str(directory))
