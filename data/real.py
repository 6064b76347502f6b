"""``RealData``: the real splits of one dataset, preprocessed and indexed per class.

Images are float32 ``(N, C, H, W)`` in the space the condensers work in: normalised with the
field's per-dataset statistics, or ZCA-whitened raw pixels (kornia, eps 0.1, fitted on the
training split). A validation split is carved deterministically (stratified, fixed seed) out of the
official training set; condensers never see it, evaluators select on it, and the official test
split is used for reporting only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from dsdistill.augment.zca import ZCA

VAL_SEED = 20240607  # fixed: the validation split is a property of the dataset, not of a run


@dataclass
class RealData:
    """Real train/validation/test splits.

    Attributes:
        name: Catalogue key.
        train_images: ``(N, C, H, W)`` float32 in ``space`` (the training split minus validation).
        train_labels: ``(N,)`` int64.
        val_images, val_labels: Held-out part of the official training set.
        test_images, test_labels: Official test split.
        num_classes: K.
        class_names: Length-K names.
        mean, std: Normalisation statistics (pixel units) used for ``space="normalized"``.
        space: ``"normalized"`` or ``"zca"``.
        zca: The fitted ZCA when ``space == "zca"``.
        fingerprint: Hash of the raw files' content (train and test pixels and labels).
        source: Where the files were read from.
    """

    name: str
    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor
    val_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    space: str = "normalized"
    zca: ZCA | None = None
    fingerprint: str = ""
    source: str = ""
    _class_index: Tensor | None = field(default=None, repr=False)
    _class_counts: Tensor | None = field(default=None, repr=False)

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return (int(self.train_images.shape[2]), int(self.train_images.shape[3]))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.image_size)

    def _build_index(self) -> None:
        counts = torch.bincount(self.train_labels, minlength=self.num_classes)
        order = torch.argsort(self.train_labels, stable=True)
        index = torch.full((self.num_classes, int(counts.max())), -1, dtype=torch.int64)
        starts = torch.cumsum(counts, 0) - counts
        for c in range(self.num_classes):  # K slices, once
            index[c, : counts[c]] = order[starts[c]: starts[c] + counts[c]]
        self._class_index, self._class_counts = index, counts

    def class_counts(self) -> Tensor:
        """``(K,)`` training images per class."""
        if self._class_counts is None:
            self._build_index()
        return self._class_counts

    def indices_of(self, c: int) -> Tensor:
        """Training-split indices of class ``c``, ascending."""
        if self._class_index is None:
            self._build_index()
        return self._class_index[c, : self._class_counts[c]]

    def sample_indices(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``(K, n)`` training indices, ``n`` distinct random images of every class, in one batched draw.

        Classes with fewer than ``n`` images are sampled without replacement up to their size and
        then repeat (only possible when ``n`` exceeds the class).
        """
        if self._class_index is None:
            self._build_index()
        counts, index = self._class_counts, self._class_index
        scores = torch.rand(index.shape, generator=generator)
        scores[index < 0] = 2.0  # padding sorts last
        take = min(n, index.shape[1])
        picked = scores.topk(take, dim=1, largest=False).indices
        picked = torch.remainder(picked, counts.clamp(min=1)[:, None]) if n > int(counts.min()) else picked
        out = index.gather(1, picked)
        if take < n:
            out = out.repeat(1, -(-n // take))[:, :n]
        return out

    def sample(self, c: int, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``(n, C, H, W)`` random distinct training images of class ``c``."""
        idx = self.indices_of(c)
        pick = torch.randperm(len(idx), generator=generator)[:n]
        return self.train_images[idx[pick]]

    def sample_all(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``(K * n, C, H, W)`` class-major batch: ``n`` random training images of every class."""
        return self.train_images[self.sample_indices(n, generator).reshape(-1)]

    def to_pixels(self, images: Tensor) -> Tensor:
        """Map images in this dataset's space back to [0, 1] pixels (unclamped)."""
        if self.space == "zca":
            return self.zca.inverse(images)
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return images * std + mean

    def preprocess_info(self) -> dict[str, Any]:
        """What a SyntheticSet made from this data must record to be interpreted later."""
        info: dict[str, Any] = {"space": self.space, "mean": tuple(self.mean), "std": tuple(self.std)}
        info["zca"] = self.zca.state() if self.zca is not None else None
        return info


def stratified_split(labels: Tensor, fraction: float, seed: int = VAL_SEED) -> tuple[Tensor, Tensor]:
    """Deterministic per-class split of ``range(len(labels))`` into (train, val) index tensors.

    Each class contributes ``round(fraction * count)`` images to validation (at least 1 when
    ``fraction > 0`` and the class has 2+ images).
    """
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=generator)
    shuffled = labels[perm]
    order = torch.argsort(shuffled, stable=True)
    sorted_idx, sorted_labels = perm[order], shuffled[order]
    counts = torch.bincount(labels)
    n_val = torch.round(counts.double() * fraction).long()
    if fraction > 0:
        n_val = torch.where(counts >= 2, n_val.clamp(min=1), n_val)
    starts = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(len(labels)) - starts[sorted_labels]
    is_val = rank_in_class < n_val[sorted_labels]
    return sorted_idx[~is_val].sort().values, sorted_idx[is_val].sort().values


def fingerprint(*tensors: Tensor) -> str:
    """Short content hash of raw uint8/int64 tensors (provenance)."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
