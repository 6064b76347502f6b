"""HeLlO's images: RDED-style initial mosaics and the tiles the CLIP-feature image update compares.

:func:`class_sources` selects and stitches the initial images of one class (as
:func:`dsdistill.methods.sre2l.patches.class_patches`) and also returns the full-resolution crops
``p`` each mosaic tile came from; :func:`unstitch` cuts a mosaic back into its tiles, which the
image update upsamples to ``p_hat`` (see :mod:`dsdistill.methods.hello.condenser`).
"""

from __future__ import annotations

import torch


def unstitch(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Inverse of :func:`~dsdistill.methods.sre2l.patches.stitch`'s tiling: ``(n, C, H, W)`` ->
    ``(n * factor**2, C, H // factor, W // factor)`` tiles, row-major per image."""
    if factor == 1:
        return images
    n, c, h, w = images.shape
    ph, pw = h // factor, w // factor
    grid = images[:, :, : factor * ph, : factor * pw].reshape(n, c, factor, ph, factor, pw)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(n * factor * factor, c, ph, pw)


def class_sources(images: torch.Tensor, label: int, count: int, scorer, generator: torch.Generator, *,
                  factor: int, pool: int, crops: int, scale_min: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RDED patches of one class: ``(count, C, H, W)`` mosaics and their ``(count * factor**2, C, H, W)`` crops."""
    from dsdistill.methods.sre2l.patches import score_crops, select_patches, stitch
    from dsdistill.softlabels.replay import resized_crop, sample_crops

    n, c, h, w = images.shape
    src = images[torch.randperm(n, generator=generator)[: min(pool, n)].to(images.device)]
    boxes = sample_crops(len(src) * crops, (h, w), generator, (scale_min, 1.0))
    flat = resized_crop(src.repeat_interleave(crops, 0), boxes.to(src.device), (h, w))
    scores = score_crops(flat, label, scorer).view(len(src), crops)
    chosen, _ = select_patches(flat.view(len(src), crops, c, h, w), scores, count * factor * factor)
    return stitch(chosen, factor), chosen


def image_loss(projector, images: torch.Tensor, target_feats: torch.Tensor, factor: int,
               size: tuple[int, int]) -> torch.Tensor:
    """``mean_tiles ||E_I(p) - E_I(p_hat)||^2``: each tile of the ``(n, C, H, W)`` mosaics, upsampled
    to ``size`` (``p_hat``), against the ``(n * factor**2, D)`` normalised features of its source crop
    ``p`` (``projector.features``: the adapted encoder). Zero-gradient identity for ``factor == 1``
    at initialisation (no downsampling happened)."""
    tiles = unstitch(images, factor)
    p_hat = tiles if factor == 1 else torch.nn.functional.interpolate(tiles, size=size, mode="bilinear",
                                                                      align_corners=False)
    return (projector.features(p_hat) - target_feats).pow(2).sum(1).mean()
