"""SRe2L "recover": invert a (committee of) BatchNorm teacher(s) into synthetic images.

For a batch ``x`` of synthetic images with targets ``y`` (one image per class of a class chunk),
every step (SRe2L ``recover/data_synthesis.py``; SOFTLABEL.md section 1):

1. one batch-level augmentation: RandomResizedCrop (scale ``(crop_scale_min, 1)``, torchvision's
   draw) resized back bilinearly, a horizontal flip with p = 0.5, and a random roll of
   ``(U{0..jitter}, U{0..jitter})`` pixels; all images of the batch share the draw;
2. loss ``sum_m w_m * (CE(f_m(x'), y) + r_bn * sum_l c_l (||mu_l(x') - mu_l||_2 + ||var_l(x') - var_l||_2))``
   where ``mu_l, var_l`` are the batch statistics (biased variance) of the input of the teacher's
   l-th BatchNorm2d, compared with its running statistics; ``c_1 = first_bn_multiplier`` (10),
   ``c_l = 1`` otherwise; teachers stay in eval mode;
3. Adam (betas (0.5, 0.9), eps 1e-8) with a cosine learning rate ``lr * 0.5 (1 + cos(pi t / T))``
   (no warmup), then the images are clipped to the valid range of the set's space.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BNStatLoss:
    """Forward hooks on every ``BatchNorm2d`` of a model that record the BN-statistics distance.

    After a forward pass, ``layers[l]`` holds ``||mean(in) - running_mean||_2 + ||var(in) -
    running_var||_2`` of the l-th BN layer (module order), with the batch statistics over
    ``(N, H, W)`` and the biased variance, as SRe2L's ``BNFeatureHook``.
    """

    def __init__(self, model: nn.Module) -> None:
        self.modules = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        self.layers: list[Tensor] = [torch.zeros(())] * len(self.modules)
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.modules)]

    def _hook(self, index: int):
        def hook(module: nn.BatchNorm2d, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            x = inputs[0]
            mean = x.mean(dim=(0, 2, 3))
            var = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1).var(1, unbiased=False)
            self.layers[index] = (torch.linalg.vector_norm(module.running_var - var)
                                  + torch.linalg.vector_norm(module.running_mean - mean))

        return hook

    def total(self, first_bn_multiplier: float) -> Tensor:
        """``sum_l c_l * layers[l]`` with ``c_1 = first_bn_multiplier``; 0 without BN layers."""
        if not self.layers:
            return torch.zeros(())
        return sum(v * (first_bn_multiplier if i == 0 else 1.0) for i, v in enumerate(self.layers))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def committee_loss(x: Tensor, targets: Tensor, teachers: Sequence[nn.Module], hooks: Sequence[BNStatLoss],
                   weights: Sequence[float], r_bn: float, first_bn_multiplier: float) -> tuple[Tensor, list[dict]]:
    """``sum_m w_m (CE_m + r_bn * BN_m)`` and per-teacher parts (floats, for logging)."""
    total, parts = x.new_zeros(()), []
    for teacher, hook, w in zip(teachers, hooks, weights):
        ce = F.cross_entropy(teacher(x), targets)
        bn = hook.total(first_bn_multiplier).to(x)
        total = total + w * (ce + r_bn * bn)
        parts.append({"ce": ce.detach(), "bn": bn.detach()})
    return total, parts


def batch_crop_params(size: tuple[int, int], generator: torch.Generator, scale: tuple[float, float],
                      ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision ``RandomResizedCrop.get_params`` drawn from ``generator``: (top, left, h, w)."""
    h, w = size
    area = h * w
    for _ in range(10):
        u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1])
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(u[2] * (h - ch + 1)), int(u[3] * (w - cw + 1)), ch, cw
    in_ratio = w / h  # torchvision's fallback: central crop
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def batch_augment(x: Tensor, generator: torch.Generator, *, random_crop: bool, crop_scale_min: float, flip: bool,
                  jitter: int) -> Tensor:
    """One augmentation draw applied to the whole ``(B, C, H, W)`` batch (crop, flip, roll)."""
    h, w = x.shape[-2:]
    if random_crop:
        top, left, ch, cw = batch_crop_params((h, w), generator, (crop_scale_min, 1.0))
        x = F.interpolate(x[:, :, top: top + ch, left: left + cw], size=(h, w), mode="bilinear", align_corners=False)
    if flip and float(torch.rand((), generator=generator)) < 0.5:
        x = x.flip(3)
    if jitter > 0:
        off = torch.randint(0, jitter + 1, (2,), generator=generator).tolist()
        x = torch.roll(x, shifts=(off[0], off[1]), dims=(2, 3))
    return x


class ValidRange:
    """Clip images to what real pixels in [0, 1] map to in the set's space.

    ``normalized``: per-channel box ``[(0 - mean) / std, (1 - mean) / std]``; ``pixel``: [0, 1];
    ``zca``: map to pixels with the inverse ZCA, clamp to [0, 1], map back (a projection onto the
    valid set along the whitening, since the valid set is not a box in ZCA space).
    """

    def __init__(self, real) -> None:
        self.space, self.zca = real.space, real.zca
        mean = torch.tensor(real.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(real.std, dtype=torch.float32).view(1, -1, 1, 1)
        self.low, self.high = (0 - mean) / std, (1 - mean) / std

    @torch.no_grad()
    def clip_(self, x: Tensor) -> Tensor:
        if self.space == "normalized":
            x.copy_(torch.maximum(torch.minimum(x, self.high.to(x)), self.low.to(x)))
        elif self.space == "zca":
            x.copy_(self.zca.transform(self.zca.inverse(x).clamp(0, 1)))
        else:
            x.clamp_(0, 1)
        return x


def cosine_lr(base: float, step: int, total: int) -> float:
    """SRe2L ``lr_cosine_policy`` without warmup."""
    return 0.5 * (1 + math.cos(math.pi * step / max(1, total))) * base
