"""Augmentation parameters of replay labels: drawing them, and applying them exactly.

One epoch's parameters for ``n`` samples (:class:`AugParams`) are a RandomResizedCrop box, a
horizontal flip flag and (for CutMix) a partner index and a box, drawn in a fixed order from an
explicit generator (:func:`draw_params`) and applied by :func:`augment`.

Interpolation: a crop is resampled bilinearly at the output pixel centres, ``x_src = left +
(j + 0.5) * width / W - 0.5`` (the ``align_corners=False`` convention of ``F.interpolate`` and
torchvision's ``resized_crop`` with ``antialias=False``), through ``F.grid_sample`` with border
padding. The sampling grid is built with elementwise ops only, so every sample's result is
independent of which other samples share its batch (bitwise; kornia's ``crop_and_resize`` solves a
batched 3x3 system per box, which gives no such guarantee). Unlike torchvision, a crop edge blends
with the source pixels just outside the box instead of repeating the edge pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class AugParams:
    """Augmentation parameters of one epoch for ``n`` samples (all on the CPU).

    Attributes:
        crops: ``(n, 4)`` int64 ``(top, left, height, width)``.
        flips: ``(n,)`` bool.
        partners: ``(n,)`` int64 CutMix partner, or None without mixing.
        mix_boxes: ``(n, 4)`` int64 ``(y1, x1, y2, x2)``, or None without mixing.
    """

    crops: Tensor
    flips: Tensor
    partners: Tensor | None = None
    mix_boxes: Tensor | None = None

    def cutmix(self, idx: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """CutMix ``(lam, partner)`` of samples ``idx`` (:func:`cutmix_weights`)."""
        return cutmix_weights(self.partners, self.mix_boxes, idx, size)


def sample_crops(n: int, src: tuple[int, int], generator: torch.Generator,
                 scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Tensor:
    """Vectorised ``torchvision.transforms.RandomResizedCrop.get_params`` for ``n`` samples.

    Ten attempts per sample (area ~ U(scale) * H * W, log aspect ~ U(log ratio)); the first that
    fits is used, else the torchvision fallback (central crop, aspect clamped to ``ratio``).

    Returns:
        ``(n, 4)`` int64 ``(top, left, height, width)``.
    """
    h, w = src
    area = h * w
    tries = 10
    u = torch.rand(n, tries, 4, generator=generator, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[..., 1]
    aspect = torch.exp(logr)
    cw = torch.round(torch.sqrt(target * aspect)).long()
    ch = torch.round(torch.sqrt(target / aspect)).long()
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.zeros(n, dtype=torch.long))
    rows = torch.arange(n)
    ch, cw = ch[rows, first], cw[rows, first]
    top = torch.floor(u[rows, first, 2] * (h - ch + 1).clamp(min=1)).long()
    left = torch.floor(u[rows, first, 3] * (w - cw + 1).clamp(min=1)).long()
    # torchvision's fallback: the largest central crop with the aspect clamped into ``ratio``
    in_ratio = w / h
    if in_ratio < min(ratio):
        fw, fh = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = h, int(round(h * max(ratio)))
    else:
        fw, fh = w, h
    bad = ~ok.any(1)
    ch = torch.where(bad, torch.full_like(ch, fh), ch)
    cw = torch.where(bad, torch.full_like(cw, fw), cw)
    top = torch.where(bad, torch.full_like(top, (h - fh) // 2), top)
    left = torch.where(bad, torch.full_like(left, (w - fw) // 2), left)
    return torch.stack([top, left, ch, cw], 1)


def sample_cutmix(n: int, size: tuple[int, int], generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """CutMix partners and boxes for ``n`` samples (SRe2L's ``rand_bbox`` with lam ~ Beta(1, 1)).

    Returns:
        ``partners`` ``(n,)`` int64 (a random permutation of the set) and ``boxes`` ``(n, 4)``
        int64 ``(y1, x1, y2, x2)``, end-exclusive, clipped to the image.
    """
    h, w = size
    partners = torch.randperm(n, generator=generator)
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    cut = torch.sqrt(1.0 - u[:, 0])
    cut_h, cut_w = (h * cut).long(), (w * cut).long()
    cy, cx = (u[:, 1] * h).long().clamp(max=h - 1), (u[:, 2] * w).long().clamp(max=w - 1)
    boxes = torch.stack([(cy - cut_h // 2).clamp(0, h), (cx - cut_w // 2).clamp(0, w),
                         (cy + cut_h // 2).clamp(0, h), (cx + cut_w // 2).clamp(0, w)], 1)
    return partners, boxes


def draw_params(n: int, src: tuple[int, int], size: tuple[int, int], generator: torch.Generator, *,
                scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                flip: bool = True, mix: str = "cutmix") -> AugParams:
    """One epoch of parameters for ``n`` samples, drawn in a fixed order from ``generator``."""
    crops = sample_crops(n, src, generator, scale, ratio)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    if mix == "none":
        return AugParams(crops, flips)
    if mix != "cutmix":
        raise ValueError(f"mix must be 'cutmix' or 'none', got {mix!r}")
    return AugParams(crops, flips, *sample_cutmix(n, size, generator))


def resized_crop(images: Tensor, crops: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear crop-and-resize of each image to ``size`` (see the module docstring).

    Args:
        images: ``(B, C, H, W)`` float.
        crops: ``(B, 4)`` ``(top, left, height, width)`` in pixels of ``images``.
        size: Output ``(h, w)``.

    Returns:
        ``(B, C, h, w)``.
    """
    b, _, sh, sw = images.shape
    oh, ow = size
    c = crops.to(images.device, torch.float64)
    ys = torch.arange(oh, device=images.device, dtype=torch.float64) + 0.5
    xs = torch.arange(ow, device=images.device, dtype=torch.float64) + 0.5
    py = c[:, 0:1] + ys[None] * (c[:, 2:3] / oh)  # (B, oh) source pixel coordinate + 0.5
    px = c[:, 1:2] + xs[None] * (c[:, 3:4] / ow)
    gy = (2 * py / sh - 1).to(images.dtype)
    gx = (2 * px / sw - 1).to(images.dtype)
    grid = torch.stack([gx[:, None, :].expand(b, oh, ow), gy[:, :, None].expand(b, oh, ow)], -1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def cutmix_weights(partners: Tensor | None, mix_boxes: Tensor | None, idx: Tensor,
                   size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """CutMix ``(lam, partner)`` of samples ``idx``: ``lam = 1 - box_area / (h w)`` is the weight of a
    sample's own label, the partner's takes ``1 - lam`` (``lam = 1`` and partner = self without mixing).

    Args:
        partners: ``(n,)`` partner of every sample of one epoch, or None without mixing.
        mix_boxes: ``(n, 4)`` ``(y1, x1, y2, x2)`` pasted boxes, or None.
        idx: ``(B,)`` sample indices.
        size: Output ``(h, w)``.

    Returns:
        ``(B,)`` float32 ``lam`` and ``(B,)`` int64 partners.
    """
    idx = idx.cpu().long()
    if partners is None:
        return torch.ones(len(idx)), idx
    box = mix_boxes[idx].double()
    area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
    return (1 - area / (size[0] * size[1])).float(), partners[idx].long()


def augment(images: Tensor, params: AugParams, idx: Tensor, size: tuple[int, int]) -> Tensor:
    """The augmented (cropped, flipped, CutMix'd) inputs of samples ``idx``.

    Args:
        images: ``(N, C, H, W)`` the whole set (partners index into it).
        params: Parameters for all ``N`` samples of one epoch.
        idx: ``(B,)`` int64 sample indices.
        size: Output ``(h, w)``.

    Returns:
        ``(B, C, h, w)``.
    """
    idx = idx.cpu()
    if params.partners is None:
        both = idx
    else:
        both = torch.cat([idx, params.partners[idx]])
    x = resized_crop(images[both.to(images.device)], params.crops[both], size)
    flip = params.flips[both].to(x.device).view(-1, 1, 1, 1)
    x = torch.where(flip, x.flip(-1), x)
    if params.partners is None:
        return x
    own, other = x[: len(idx)], x[len(idx):]
    box = params.mix_boxes[idx].to(x.device)
    ys = torch.arange(size[0], device=x.device).view(1, -1, 1)
    xs = torch.arange(size[1], device=x.device).view(1, 1, -1)
    inside = ((ys >= box[:, 0, None, None]) & (ys < box[:, 2, None, None])
              & (xs >= box[:, 1, None, None]) & (xs < box[:, 3, None, None]))
    return torch.where(inside[:, None], other, own)
