"""Differentiable Siamese Augmentation (DSA) with the exact semantics of
``DatasetCondensation/utils.py`` (``DiffAugment``, mode ``'S'``): one op group per call, applied to
unclamped normalised or ZCA tensors.

Randomness only goes through an explicit ``torch.Generator`` (never a reseeded global RNG), and the
Siamese case (real and synthetic batches sharing parameters) is one call on the concatenation with
``same_on_batch=True``. Parameters are drawn on the generator's device (CPU by default) and moved to
the input's device, so a seeded CPU generator gives bitwise-identical draws on any accelerator.

What runs on kornia, and why the rest does not (kornia 0.9.0, torch 2.14):

* ``flip`` is ``kornia.geometry.transform.hflip`` (bitwise exact), selected per sample by the mask.
* ``scale`` and ``rotate`` are ``kornia.geometry.transform.warp_affine`` (bilinear, zero padding,
  ``align_corners`` as configured). DSA's ``theta`` is ``F.affine_grid``'s map from normalised output
  to normalised input coordinates; ``warp_affine`` takes the source-to-destination *pixel* matrix, so
  ``theta`` is inverted (``invert_affine_transform``) and de-normalised with the same
  ``align_corners`` (``denormalize_homography``). ``warp_affine`` normalises and inverts it back and
  samples at ``theta`` applied to the ``affine_grid`` base grid: the reference's positions. A shared
  ``(1, 2, 3)`` matrix (``same_on_batch``) gives one grid, expanded over the batch. In exact
  arithmetic ``align_corners`` only changes ``rotate`` on non-square images: DSA's ``theta`` has no
  translation, and the per-axis normalisation then commutes with a diagonal one, or with any when H == W.
  ``homography_warp`` takes the 3x3 ``theta`` directly and is as exact, but it builds the grid through
  ``transform_points`` (a batched matmul plus homogeneous division), one grid per image even for a
  shared matrix. At 2560x3x32x32 on CPU it took 2.4-2.9x the reference time per sample and 4-8x shared.
  ``warp_affine`` does no more arithmetic than the reference (user time 0.85-1.05x), and shared calls
  take 1.0-1.07x the CPU time. Per-sample calls allocate several grid-sized temporaries, and under
  glibc's default heap trimming that costs about 20k page faults per call: 1.2-1.9x the CPU time on
  one thread, and more on two loaded cores. Without the trimming they run at 0.85-1.05x.
* Float32 rounding: ``warp_affine`` matches the reference to < 1e-13 in float64, so the semantics
  are exact. In float32, kornia's grid construction (the pixel/normalised round trip, a closed-form
  3x3 inverse, its own base grid) rounds differently from ``F.affine_grid``. The outputs then differ
  by ~1e-5 to 3e-5, so the golden tests use 1e-10 in float64 and 1e-4 in float32.
* ``brightness`` stays in the fused colour closed form as ``+ b`` on the per-sample mean.
  ``kornia.enhance.adjust_brightness(x, b, clip_output=False)`` is exact, but as an op on the image
  it costs one more full-size pass, which makes colour calls about 15-30% slower at 2560x3x32x32.
* ``saturation`` and ``contrast`` are hand-written: kornia's saturation works in HSV and clamps, and
  its contrast is ``x * factor``. DSA's versions are mean-centred affine maps on unclamped tensors.
  ``crop`` (integer shift, zero fill) and ``cutout`` (a fixed square that may overhang the border)
  are hand-written too: kornia translates by bilinear resampling, and ``RandomErasing`` keeps its box inside.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from kornia.geometry.conversions import convert_affinematrix_to_homography, denormalize_homography
from kornia.geometry.transform import hflip, invert_affine_transform, warp_affine
from torch import Tensor

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
DIGIT_STRATEGY = "color_crop_cutout_scale_rotate"  # MNIST, SVHN: flip hurts digits (DC readme)
OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")

_DIGIT_DATASETS = frozenset({"mnist", "svhn"})


def strategy_for(dataset: str) -> str:
    """The reference DSA strategy for a dataset: digits (MNIST, SVHN) drop ``flip``.

    Args:
        dataset: Dataset name, case and ``-``/``_`` insensitive (``"Fashion-MNIST"`` is not MNIST).
    """
    key = re.sub(r"[^a-z0-9]", "", dataset.lower())
    return DIGIT_STRATEGY if key in _DIGIT_DATASETS else DEFAULT_STRATEGY


@dataclass(frozen=True)
class DSAParams:
    """``ParamDiffAug`` of the reference implementation (the ranges of every op)."""

    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


class DSA:
    """DSA in mode ``'S'``: each call draws one ``_``-separated token of ``strategy`` uniformly and
    applies only that op group (``color`` = brightness, saturation, contrast in sequence).

    Args:
        strategy: ``_``-separated tokens from ``color, crop, cutout, flip, scale, rotate``. A repeated
            token is drawn more often. ``""`` or ``"none"`` is the identity.
        params: Op ranges.
        align_corners: The ``F.affine_grid``/``F.grid_sample`` convention of ``scale`` and ``rotate``
            (passed to kornia's ``warp_affine``); False in DC/DSA/DM, True in MTT and DD-Ranking.

    Raises:
        ValueError: On an unknown token.
    """

    def __init__(
        self, strategy: str = DEFAULT_STRATEGY, params: DSAParams = DSAParams(), align_corners: bool = False
    ) -> None:
        strategy = strategy.strip()
        tokens = () if strategy in ("", "none") else tuple(strategy.split("_"))
        unknown = sorted({t for t in tokens if t not in OPS})
        if unknown:
            raise ValueError(f"unknown DSA op(s) {unknown} in {strategy!r}; valid ops: {', '.join(OPS)}")
        self.strategy = strategy
        self.tokens = tokens
        self.params = params
        self.align_corners = bool(align_corners)

    def __repr__(self) -> str:
        return f"DSA(strategy={self.strategy!r}, params={self.params}, align_corners={self.align_corners})"

    def __call__(
        self, x: Tensor, generator: torch.Generator | None = None, same_on_batch: bool = False
    ) -> Tensor:
        """Augment a batch.

        Args:
            x: ``(N, C, H, W)`` floating tensor in normalised or ZCA space.
            generator: Source of all randomness; None uses the global RNG (without reseeding it).
            same_on_batch: Give every sample identical parameters; otherwise each sample gets its own
                (the op group is one per call either way).

        Returns:
            ``(N, C, H, W)`` tensor, same dtype and device, differentiable w.r.t. ``x``.
        """
        if not self.tokens:
            return x
        op, params = self._sample(x.shape, generator, same_on_batch)
        return self._apply(x, op, params)

    def siamese(self, *batches: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
        """Apply the same op and parameters to every batch (e.g. real ``(256, C, H, W)`` and synthetic
        ``(10, C, H, W)``); batch sizes may differ.

        Returns:
            The augmented batches, in order, with their original sizes.
        """
        if not batches:
            return ()
        sizes = [b.shape[0] for b in batches]
        out = self(torch.cat(batches), generator=generator, same_on_batch=True)
        return tuple(out.split(sizes))

    def _sample(
        self, shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, same_on_batch: bool
    ) -> tuple[str, dict[str, Tensor]]:
        """Draw the op and its parameters for a batch of ``shape = (N, C, H, W)``.

        Parameters have a leading dimension ``n = 1`` if ``same_on_batch`` else ``N`` and live on the
        generator's device (CPU when ``generator`` is None).
        """
        dev = generator.device if generator is not None else torch.device("cpu")
        kw: dict[str, Any] = {"generator": generator, "device": dev}
        op = self.tokens[int(torch.randint(len(self.tokens), (1,), **kw))]
        _, _, h, w = shape
        n = 1 if same_on_batch else shape[0]
        p = self.params
        if op == "color":
            return op, {
                "brightness": (torch.rand(n, **kw) - 0.5) * p.brightness,
                "saturation": torch.rand(n, **kw) * p.saturation,
                "contrast": torch.rand(n, **kw) + p.contrast,
            }
        if op == "crop":
            sh, sw = int(h * p.ratio_crop_pad + 0.5), int(w * p.ratio_crop_pad + 0.5)
            return op, {
                "shift_h": torch.randint(-sh, sh + 1, (n,), **kw),
                "shift_w": torch.randint(-sw, sw + 1, (n,), **kw),
            }
        if op == "cutout":
            ch, cw = int(h * p.ratio_cutout + 0.5), int(w * p.ratio_cutout + 0.5)
            return op, {
                "center_h": torch.randint(0, h + (1 - ch % 2), (n,), **kw),
                "center_w": torch.randint(0, w + (1 - cw % 2), (n,), **kw),
            }
        if op == "flip":
            return op, {"flip": torch.rand(n, **kw) < p.prob_flip}
        if op == "scale":
            lo = 1.0 / p.ratio_scale
            sx = torch.rand(n, **kw) * (p.ratio_scale - lo) + lo
            sy = torch.rand(n, **kw) * (p.ratio_scale - lo) + lo
            zero = torch.zeros_like(sx)
            theta = torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)
            return op, {"theta": theta}
        # rotate
        angle = (torch.rand(n, **kw) - 0.5) * 2 * p.ratio_rotate / 180 * math.pi
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        return op, {"theta": theta}

    def _apply(self, x: Tensor, op: str, params: dict[str, Tensor]) -> Tensor:
        """Apply ``op`` with parameters from :meth:`_sample` (leading dim 1 broadcasts to the batch)."""
        n, _, h, w = x.shape
        if op == "color":
            b, s, c = (
                params[k].to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
                for k in ("brightness", "saturation", "contrast")
            )
            # Closed form of brightness -> saturation -> contrast (x + b, then (x - m_c) * s + m_c, then
            # (x - m) * c + m): the shift b moves both means by b, and the per-pixel channel mean m_c
            # averages to the sample mean m. Four full-size passes instead of nine.
            m_c = x.mean(dim=1, keepdim=True)  # (N, 1, H, W)
            m = m_c.mean(dim=(2, 3), keepdim=True)  # (N, 1, 1, 1)
            return (x - m_c) * (s * c) + ((m_c - m) * c + (m + b))
        if op == "crop":
            th, tw = params["shift_h"], params["shift_w"]
            if th.numel() == 1:
                # Shared shift: out[i, j] = x[i + th, j + tw]; negative pads crop, positive pads add zeros.
                a, b = int(th), int(tw)
                return F.pad(x, (-b, b, -a, a))
            # Per-sample shift as one gather into a 1-px zero-padded copy (indices clamp onto the border).
            th, tw = th.to(x.device), tw.to(x.device)
            rows = (torch.arange(h, device=x.device) + th[:, None] + 1).clamp_(0, h + 1)
            cols = (torch.arange(w, device=x.device) + tw[:, None] + 1).clamp_(0, w + 1)
            index = (rows[:, :, None] * (w + 2) + cols[:, None, :]).view(n, 1, h * w)
            index = index.expand(-1, x.shape[1], -1)
            return F.pad(x, (1, 1, 1, 1)).flatten(2).gather(2, index).view_as(x)
        if op == "cutout":
            p = self.params
            ch, cw = int(h * p.ratio_cutout + 0.5), int(w * p.ratio_cutout + 0.5)
            top = params["center_h"].to(x.device)[:, None] - ch // 2
            left = params["center_w"].to(x.device)[:, None] - cw // 2
            r, c = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
            in_h = (r >= top) & (r < top + ch)  # (n, H); the square may overhang the border
            in_w = (c >= left) & (c < left + cw)  # (n, W)
            keep = ~(in_h[:, :, None] & in_w[:, None, :])
            return x * keep.unsqueeze(1).to(x.dtype)
        if op == "flip":
            flip = params["flip"]
            if flip.numel() == 1:
                return hflip(x) if bool(flip) else x
            return torch.where(flip.to(x.device).view(-1, 1, 1, 1), hflip(x), x)
        if op in ("scale", "rotate"):
            # The pixel matrix is built where the parameters were drawn (the generator's device), so
            # every accelerator warps with the same matrix. A (1, 2, 3) matrix (shared parameters) makes
            # warp_affine build one grid and expand it over the batch.
            theta = params["theta"].to(dtype=x.dtype)
            matrix = _pixel_matrix(theta, (h, w), self.align_corners).to(x.device)
            return warp_affine(
                x, matrix, (h, w), mode="bilinear", padding_mode="zeros", align_corners=self.align_corners
            )
        raise ValueError(f"unknown DSA op {op!r}; valid ops: {', '.join(OPS)}")


def _pixel_matrix(theta: Tensor, size: tuple[int, int], align_corners: bool) -> Tensor:
    """The ``warp_affine`` matrix that samples like ``F.affine_grid(theta)`` + ``F.grid_sample``.

    ``theta`` maps normalised output to normalised input coordinates. ``warp_affine`` takes the source to
    destination pixel map, so this is ``theta`` inverted and de-normalised under ``align_corners``.

    Args:
        theta: ``(n, 2, 3)`` normalised affine matrices.
        size: ``(H, W)`` of the images (input and output).
        align_corners: The normalisation convention, as in ``affine_grid``/``grid_sample``.

    Returns:
        ``(n, 2, 3)`` pixel matrices, same dtype and device as ``theta``.
    """
    inverse = convert_affinematrix_to_homography(invert_affine_transform(theta))
    return denormalize_homography(inverse, size, size, align_corners=align_corners)[:, :2]
