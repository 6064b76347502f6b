"""RDED-style initialisation: the most teacher-confident real patches, stitched factor x factor.

For class ``c`` (RDED ``synthesize/utils.py`` selector; SOFTLABEL.md section 6): draw ``pool`` real
training images of the class, take ``crops`` RandomResizedCrops of each (scale ``(scale_min, 1)``,
resized back to the full image size), score every crop by the scorer's cross-entropy
``-log p_c``, keep the best (lowest-CE) crop of each image, then the ``ipc * factor**2`` lowest-CE
images of the class; each is downsampled to ``(H / factor, W / factor)`` (bilinear, antialiased)
and groups of ``factor**2`` are tiled row-major into one image. ``factor = 1`` keeps whole crops.

Alternatively (:func:`class_selection`, ``init="herding"`` / ``"kcenter"``) whole real images are
chosen to *cover* the class rather than to be the easiest: from ``pool`` random training images
of the class, herding (running mean of the selection closest to the class mean) or greedy
k-center (farthest point) in the scorer's penultimate features (``embed``; its logits if it has
none), with the selection rules of the ``herding`` / ``k_center`` coreset baselines.

Only training-split images and the scorer are involved; the draw for class ``c`` comes from its
own generator, so the patches of a class do not depend on which process computes them.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from dsdistill.methods.coreset import herding, k_center
from dsdistill.softlabels.replay import resized_crop, sample_crops

SELECTIONS = {"herding": herding, "kcenter": k_center}


@torch.no_grad()
def score_crops(crops: Tensor, label: int, scorer: Callable[[Tensor], Tensor], chunk: int = 256) -> Tensor:
    """``(n,)`` cross-entropy of class ``label`` under ``scorer`` (returns logits) for ``(n, C, H, W)`` crops."""
    logits = torch.cat([scorer(c) for c in crops.split(chunk)])
    return F.cross_entropy(logits.float(), torch.full((len(crops),), label, device=logits.device), reduction="none")


def select_patches(crops: Tensor, scores: Tensor, keep: int) -> tuple[Tensor, Tensor]:
    """Best crop per image, then the ``keep`` best images.

    Args:
        crops: ``(P, m, C, H, W)`` candidate crops, ``m`` per image.
        scores: ``(P, m)`` cross-entropies (lower = more confident).
        keep: How many to keep (at most ``P``; repeats the ranking cyclically beyond).

    Returns:
        ``(keep, C, H, W)`` selected crops in ascending-CE order and their ``(keep,)`` scores.
    """
    best = scores.argmin(1)
    rows = torch.arange(len(crops), device=crops.device)
    per_image, per_score = crops[rows, best], scores[rows, best.to(scores.device)]
    order = torch.argsort(per_score, stable=True)
    order = order[torch.arange(keep) % len(order)]
    return per_image[order], per_score[order]


def stitch(patches: Tensor, factor: int) -> Tensor:
    """``(n * factor**2, C, H, W)`` -> ``(n, C, H, W)`` mosaics of downsampled patches (row-major)."""
    if factor == 1:
        return patches
    n2, c, h, w = patches.shape
    ph, pw = h // factor, w // factor
    small = F.interpolate(patches, size=(ph, pw), mode="bilinear", align_corners=False, antialias=True)
    n = n2 // (factor * factor)
    grid = small.view(n, factor, factor, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, factor * ph, factor * pw)
    if (factor * ph, factor * pw) != (h, w):  # sizes not divisible by factor: pad with the patch edge
        grid = F.pad(grid, (0, w - factor * pw, 0, h - factor * ph), mode="replicate")
    return grid


def class_patches(images: Tensor, label: int, count: int, scorer: Callable[[Tensor], Tensor],
                  generator: torch.Generator, *, factor: int, pool: int, crops: int, scale_min: float) -> Tensor:
    """``(count, C, H, W)`` stitched initial images of class ``label`` from its ``(n, C, H, W)`` training images."""
    n, c, h, w = images.shape
    pick = torch.randperm(n, generator=generator)[: min(pool, n)]
    src = images[pick]
    boxes = sample_crops(len(src) * crops, (h, w), generator, (scale_min, 1.0))
    flat = resized_crop(src.repeat_interleave(crops, 0), boxes.to(src.device), (h, w))
    scores = score_crops(flat, label, scorer).view(len(src), crops)
    chosen, _ = select_patches(flat.view(len(src), crops, c, h, w), scores, count * factor * factor)
    return stitch(chosen, factor)


@torch.no_grad()
def embed(model: torch.nn.Module, x: Tensor, chunk: int = 256) -> Tensor:
    """``(n, d)`` penultimate features of ``(n, C, H, W)`` images (``model.embed``, else its logits)."""
    fn = model.embed if hasattr(model, "embed") else model
    return torch.cat([fn(c).flatten(1).float() for c in x.split(chunk)])


def class_selection(images: Tensor, count: int, model: torch.nn.Module, generator: torch.Generator, *, rule: str,
                    pool: int) -> Tensor:
    """``(count, C, H, W)`` whole real images of one class chosen by ``rule`` (``"herding"`` or ``"kcenter"``).

    Args:
        images: ``(n, C, H, W)`` training images of the class.
        count: Images to keep (at most the pool size).
        model: The scorer; selection runs in its :func:`embed` space.
        generator: Draws the pool.
        rule: A key of :data:`SELECTIONS`.
        pool: Random images of the class considered.
    """
    pick = torch.randperm(len(images), generator=generator)[: min(pool, len(images))]
    if count > len(pick):
        raise ValueError(f"cannot select {count} images from a pool of {len(pick)}")
    chosen = SELECTIONS[rule](embed(model, images[pick]), count).cpu()
    return images[pick[chosen]]
