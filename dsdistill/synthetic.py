"""The in-memory form of a distilled image set.

A :class:`SyntheticSet` is what every image condenser returns and what the HDF5 file stores
(``dsdistill.io.hdf5``). Images are kept class-major: the ``ipc`` images of class 0 first, then
class 1, and so on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

if TYPE_CHECKING:
    from dsdistill.softlabels.replay import ReplayLabels

Space = Literal["pixel", "normalized", "zca"]
SPACES = ("pixel", "normalized", "zca")
COMPONENT_PARTS = ("images", "labels", "label_generator")
COMPONENT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_STORAGE_KEY = {"images": "component_images", "labels": "component_labels", "label_generator": "label_generator"}


@dataclass
class Component:
    """A method-specific array stored with the set (INFER compensators, NRR distances, HeLlO adapters).

    Attributes:
        values: Any shape; float16/32/64, int8-64 or uint8 (bool is stored as uint8).
        part: The storage bucket that counts its bytes: ``"images"`` (counted image budget),
            ``"labels"`` (label storage) or ``"label_generator"`` (a model that produces labels).
        meta: Small JSON-serialisable metadata (stored as JSON text).
    """

    values: Tensor
    part: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.part not in COMPONENT_PARTS:
            raise ValueError(f"component part must be one of {COMPONENT_PARTS}, got {self.part!r}")
        if not isinstance(self.values, Tensor):
            raise ValueError("component values must be a tensor")

    @property
    def nbytes(self) -> int:
        return self.values.numel() * (1 if self.values.dtype == torch.bool else self.values.element_size())


@dataclass
class SoftLabels:
    """Static per-instance soft labels.

    Attributes:
        values: ``(N, K)`` float tensor, one row per synthetic image.
        kind: ``"logits"`` or ``"probs"``.
        temperature: Temperature the student loss should use with these labels.
        source: Free text naming what produced them (teacher model, expert ids).
    """

    values: Tensor
    kind: Literal["logits", "probs"] = "logits"
    temperature: float = 1.0
    source: str = ""

    def probabilities(self) -> Tensor:
        """``(N, K)`` target distribution at ``temperature``."""
        if self.kind == "probs":
            return self.values.float()
        return torch.softmax(self.values.float() / self.temperature, dim=1)


@dataclass
class SyntheticSet:
    """A distilled image dataset plus everything needed to train on it.

    Attributes:
        images: ``(N, C, H, W)`` float32, class-major, in ``space``.
        labels: ``(N,)`` int64 hard labels.
        num_classes: Number of classes K.
        method: Registered condenser name that produced the set.
        dataset: Dataset name (catalogue key).
        ipc: Images per class (``N == ipc * num_classes`` for class-balanced sets).
        space: ``"pixel"`` ([0, 1] pixels), ``"normalized"`` ((x - mean) / std) or ``"zca"``
            (ZCA-whitened pixels, see :class:`dsdistill.augment.zca.ZCA`).
        mean: Per-channel normalisation mean (length C), or None.
        std: Per-channel normalisation std (length C), or None.
        zca: ZCA state (``{"mean", "matrix", "inverse"}`` tensors and ``"eps"``) when
            ``space == "zca"``.
        soft_labels: Optional static soft labels.
        lr: Learned student learning rate (trajectory matching), or None.
        class_names: Human-readable class names (length K).
        provenance: Resolved config, seeds, dataset fingerprint, library versions, timings.
        protocol: Evaluation protocol the set was made for (``"dc"``, ``"tm"``, ...), or None.
        replay: Optional FKD-style per-epoch replay labels (augmentation parameters and the
            teacher's labels of each augmented sample), see :mod:`dsdistill.softlabels`.
        components: Method-specific arrays by name (:class:`Component`), e.g. INFER's
            compensators; names match ``[A-Za-z0-9_.-]{1,128}``.
    """

    images: Tensor
    labels: Tensor
    num_classes: int
    method: str
    dataset: str
    ipc: int
    space: Space = "normalized"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    zca: dict[str, Any] | None = None
    soft_labels: SoftLabels | None = None
    lr: float | None = None
    class_names: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    protocol: str | None = None
    replay: "ReplayLabels | None" = None
    components: dict[str, Component] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if self.images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have one entry per image")
        if self.replay is not None and self.replay.num_samples != self.images.shape[0]:
            raise ValueError(f"replay labels cover {self.replay.num_samples} samples, the set has "
                             f"{self.images.shape[0]} images")
        for name, comp in self.components.items():
            if not isinstance(name, str) or not COMPONENT_NAME.match(name):
                raise ValueError(f"component name {name!r} must match [A-Za-z0-9_.-]{{1,128}}")
            if not isinstance(comp, Component):
                raise ValueError(f"component {name!r} must be a Component")

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def to_pixels(self) -> Tensor:
        """Images mapped back to [0, 1] pixel space (undoing ZCA and normalisation), unclamped."""
        x = self.images.detach().float()
        if self.space == "zca":
            from dsdistill.augment.zca import ZCA

            return ZCA.from_state(self.zca).inverse(x)
        if self.space == "normalized" and self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean).view(1, -1, 1, 1)
            std = torch.tensor(self.std).view(1, -1, 1, 1)
            return x * std + mean
        return x

    def storage_bytes(self) -> dict[str, int]:
        """Bytes needed to train on this set, by part (as stored: float32 images, int64 labels).

        Returns:
            ``{"images", "labels", "soft_labels", "lr", "replay_labels", "replay_params",
            "component_images", "component_labels", "label_generator", "total"}`` (replay: the
            per-epoch soft labels, and their crop/flip/mix parameters; component_*: the bytes of
            :attr:`components` in each part).
            Preprocessing (ZCA matrices, normalisation stats) is a property of the dataset,
            reported separately by :func:`dsdistill.io.hdf5.describe`.
        """
        parts = {
            "images": self.images.numel() * 4,
            "labels": self.labels.numel() * 8,
            "soft_labels": 0 if self.soft_labels is None else
            self.soft_labels.values.numel() * self.soft_labels.values.element_size(),
            "lr": 0 if self.lr is None else 4,
            "replay_labels": 0 if self.replay is None else self.replay.storage_bytes()["labels"],
            "replay_params": 0 if self.replay is None else self.replay.storage_bytes()["params"],
            **{key: 0 for key in _STORAGE_KEY.values()},
        }
        for comp in self.components.values():
            parts[_STORAGE_KEY[comp.part]] += comp.nbytes
        parts["total"] = sum(parts.values())
        return parts
