"""FKD-style replay labels: per (epoch, sample) augmentation parameters and the teacher's labels.

For every student epoch ``e`` and synthetic sample ``i`` a :class:`ReplayLabels` holds

* the RandomResizedCrop box ``crops[e, i] = (top, left, height, width)`` in source pixels,
* the horizontal flip flag ``flips[e, i]``,
* CutMix parameters: the partner ``partners[e, i]`` (an index into the whole set) and the box
  ``mix_boxes[e, i] = (y1, x1, y2, x2)`` (output pixels, end-exclusive) that is pasted from the
  partner's augmented view into sample ``i``'s; the mixing weight is derived from the box,
  ``lam = 1 - box_area / (H * W)``,
* the soft label the teacher (committee) gave that exact augmented, mixed input: full
  ``(K,)`` logits/probabilities, or FKD top-k quantised ``(values, indices)``,
* for batch-specific labels (CV-DD BSSL) the order the teacher saw the samples in:
  ``order[e]`` is a permutation and consecutive chunks of ``micro_batch`` positions were one
  train-mode BN batch of the teacher.

Everything is keyed by ``(epoch, sample index)``: replay works with any student batch size and
any batch order, and needs no patching of PyTorch (SRe2L stores per-batch files and requires the
relabel batch size). The student input of ``(e, i)`` is built by :meth:`ReplayLabels.inputs`,
the same function :func:`dsdistill.softlabels.relabel` fed to the teacher, so replay is exact.
Crops are resampled bilinearly (:mod:`dsdistill.softlabels.params` states the convention).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from dsdistill.softlabels.params import (AugParams, augment, cutmix_weights, draw_params, resized_crop,  # noqa: F401
                                         sample_crops, sample_cutmix)

Kind = Literal["logits", "probs"]


def expand_topk(values: Tensor, indices: Tensor, num_classes: int) -> Tensor:
    """FKD "marginal smoothing": top-k probabilities back to ``(..., K)`` float32.

    The mass ``1 - sum(values)`` left out of the top k is spread uniformly over the other
    ``K - k`` classes (nothing is spread when ``k == K``).
    """
    v = values.float().clamp(min=0)
    k = v.shape[-1]
    rest = (1.0 - v.sum(-1, keepdim=True)).clamp(min=0)
    fill = rest / (num_classes - k) if num_classes > k else torch.zeros_like(rest)
    out = fill.expand(*v.shape[:-1], num_classes).clone()
    return out.scatter_(-1, indices.long(), v)


@dataclass
class ReplayLabels:
    """Per-epoch, per-sample augmentation parameters and soft labels (module docstring).

    Attributes:
        crops: ``(E, N, 4)`` int16/int32 ``(top, left, height, width)``.
        flips: ``(E, N)`` bool.
        partners: ``(E, N)`` int32 CutMix partner, or None (``mix="none"``).
        mix_boxes: ``(E, N, 4)`` int16/int32 ``(y1, x1, y2, x2)``, or None.
        values: ``(E, N, K)`` labels, or ``(E, N, k)`` top-k probabilities when ``indices`` is set.
        indices: ``(E, N, k)`` int16/int32 class indices of the top-k values, or None.
        kind: ``"logits"`` (weighted mean of the teachers' logits) or ``"probs"`` (weighted mean of
            their probabilities at ``temperature``, or a top-k quantisation of the target).
        temperature: Softmax temperature of the student's loss; for ``probs`` it is already
            applied to the stored values.
        num_classes: K.
        size: Output ``(h, w)`` of the crops.
        order: ``(E, N)`` int32 teacher forward order (batch-specific labels), or None.
        micro_batch: Teacher BN batch size for batch-specific labels (0 = eval-mode teachers).
        settings: How the labels were made (scale, ratio, mix, averaging, weights, teachers...),
            enough to relabel another image set the same way.
    """

    crops: Tensor
    flips: Tensor
    partners: Tensor | None
    mix_boxes: Tensor | None
    values: Tensor
    indices: Tensor | None = None
    kind: Kind = "logits"
    temperature: float = 1.0
    num_classes: int = 0
    size: tuple[int, int] = (0, 0)
    order: Tensor | None = None
    micro_batch: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(f"inconsistent ReplayLabels: {problem}")

    def problem(self, num_images: int | None = None) -> str:
        """Why these labels are inconsistent (with ``num_images`` images), or ``""``."""
        if self.crops.dim() != 3 or self.crops.shape[-1] != 4:
            return f"crops must be (E, N, 4), got {tuple(self.crops.shape)}"
        e, n = self.crops.shape[:2]
        if num_images is not None and n != num_images:
            return f"labels cover {n} samples but the set has {num_images} images"
        if tuple(self.flips.shape) != (e, n):
            return f"flips must be {(e, n)}, got {tuple(self.flips.shape)}"
        if (self.partners is None) != (self.mix_boxes is None):
            return "partners and mix_boxes must both be given or both be None"
        if self.partners is not None and (tuple(self.partners.shape) != (e, n)
                                          or tuple(self.mix_boxes.shape) != (e, n, 4)):
            return "partners must be (E, N) and mix_boxes (E, N, 4)"
        k = self.num_classes
        width = self.values.shape[-1] if self.values.dim() == 3 else -1
        if self.values.dim() != 3 or tuple(self.values.shape[:2]) != (e, n):
            return f"values must be (E, N, *), got {tuple(self.values.shape)}"
        if self.indices is None and width != k:
            return f"values must have K={k} columns, got {width}"
        if self.indices is not None and (tuple(self.indices.shape) != tuple(self.values.shape)
                                         or not 1 <= width <= k or self.kind != "probs"):
            return "top-k labels need indices shaped like values, 1 <= k <= K and kind 'probs'"
        if self.kind not in ("logits", "probs") or not self.temperature > 0:
            return "kind must be 'logits' or 'probs' and temperature positive"
        if self.order is not None and (tuple(self.order.shape) != (e, n) or self.micro_batch < 1):
            return "order must be (E, N) with a positive micro_batch"
        return ""

    def range_problem(self, src: tuple[int, int]) -> str:
        """Why an index or value is out of range for source images of ``src = (H, W)``, or ``""``.

        Checks crops inside the source, mix boxes inside ``size``, partners in ``[0, N)``, top-k
        indices in ``[0, K)``, each ``order[e]`` a permutation, and finite label values.
        """
        n, (h, w), (oh, ow) = self.num_samples, src, self.size
        if not (1 <= oh < 2**15 and 1 <= ow < 2**15):
            return f"output size {self.size} must be positive and below 32768"
        c = self.crops.long()
        if c.numel() and not bool(((c[..., :2] >= 0).all() & (c[..., 2:] >= 1).all()
                                   & (c[..., 0] + c[..., 2] <= h).all() & (c[..., 1] + c[..., 3] <= w).all())):
            return f"a crop box lies outside the {h}x{w} images"
        if self.partners is not None and self.partners.numel():
            p, b = self.partners.long(), self.mix_boxes.long()
            if not bool(((p >= 0) & (p < n)).all()):
                return f"a CutMix partner index lies outside [0, {n})"
            if not bool(((b >= 0).all() & (b[..., 0] <= b[..., 2]).all() & (b[..., 1] <= b[..., 3]).all()
                         & (b[..., 2] <= oh).all() & (b[..., 3] <= ow).all())):
                return f"a CutMix box lies outside the {oh}x{ow} output"
        if self.indices is not None and self.indices.numel():
            i = self.indices.long()
            if not bool(((i >= 0) & (i < self.num_classes)).all()):
                return f"a top-k class index lies outside [0, {self.num_classes})"
        if self.order is not None and n:
            if not torch.equal(self.order.long().sort(dim=1).values,
                               torch.arange(n).expand(self.epochs, n)):
                return "a batch-specific order row is not a permutation of the samples"
        if not bool(torch.isfinite(self.values).all()):
            return "soft label values are not all finite"
        return ""

    @property
    def epochs(self) -> int:
        return int(self.crops.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.crops.shape[1])

    @property
    def top_k(self) -> int | None:
        return None if self.indices is None else int(self.indices.shape[-1])

    def params(self, epoch: int) -> AugParams:
        """The augmentation parameters of ``epoch`` as int64/bool tensors."""
        p, b = self.partners, self.mix_boxes
        return AugParams(self.crops[epoch].long(), self.flips[epoch].bool(),
                         None if p is None else p[epoch].long(), None if b is None else b[epoch].long())

    def inputs(self, images: Tensor, epoch: int, idx: Tensor) -> Tensor:
        """``(B, C, h, w)`` exactly the inputs the teacher labelled for samples ``idx`` at ``epoch``."""
        return augment(images, self.params(epoch), idx, self.size)

    def lam(self, epoch: int, idx: Tensor) -> tuple[Tensor, Tensor]:
        """CutMix ``(lam, partner)`` of samples ``idx``: weight of the sample's own hard label and
        the partner whose label takes ``1 - lam`` (``lam = 1``, partner = self without mixing)."""
        if self.partners is None:
            return cutmix_weights(None, None, idx, self.size)
        return cutmix_weights(self.partners[epoch], self.mix_boxes[epoch], idx, self.size)

    def targets(self, epoch: int, idx: Tensor, temperature: float | None = None) -> Tensor:
        """``(B, K)`` float32 target probabilities for samples ``idx`` at ``epoch``.

        Logits are softened at ``temperature`` (default: the stored one); probabilities are
        returned as stored (top-k expanded by :func:`expand_topk`).
        """
        idx = idx.cpu().long()
        vals = self.values[epoch, idx]
        if self.indices is not None:
            return expand_topk(vals, self.indices[epoch, idx], self.num_classes)
        if self.kind == "probs":
            return vals.float()
        return torch.softmax(vals.float() / (temperature or self.temperature), dim=1)

    def storage_bytes(self) -> dict[str, int]:
        """``{"labels", "params", "total"}``: bytes of the soft labels (values + top-k indices) and
        of the replay parameters (crops, flips as 1 byte, partners, mix boxes, order)."""
        nb = lambda t: 0 if t is None else t.numel() * t.element_size()  # noqa: E731
        labels = nb(self.values) + nb(self.indices)
        params = nb(self.crops) + self.flips.numel() + nb(self.partners) + nb(self.mix_boxes) + nb(self.order)
        return {"labels": labels, "params": params, "total": labels + params}
