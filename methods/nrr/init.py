"""CIDD: critical-region initial images (NRR-DD stage 1), stitched like RDED.

For class ``c`` (SOFTLABEL.md section 4; RDED's selector in :mod:`dsdistill.methods.sre2l.patches`
is the template):

1. draw ``pool`` real training images of the class and compute the teacher's CAM of class ``c`` on
   each (:class:`~dsdistill.methods.nrr.cam.ClassActivation`, [0, 1] per image);
2. take ``crops`` RandomResizedCrops of every image (scale ``(scale_min, 1)``; ``scale_min = 1``
   means the whole image) and keep, per image, the crop whose box has the highest mean CAM (the
   crop that keeps the image's critical region);
3. score each kept crop, resized to the full image size, by the teacher's cross-entropy
   ``-log p_c`` and keep the ``count * beta`` **least confident** ones (highest CE; RDED keeps the
   most confident). Crops the teacher classifies correctly come first, so a class with enough
   correct crops never starts from an image the teacher calls another class;
3'. with ``slot_pool = k > 0`` (per-slot candidates, RDED's sampling of a few candidates per
   output) the ranking is local instead: ``count * beta * k`` real images are drawn, split into
   ``count * beta`` disjoint random groups of ``k``, and each group gives its least (``"lowest"``)
   or most (``"highest"``) confident crop, correct crops first. ``k = 1`` is a uniform random
   draw; a larger ``k`` leans further towards hard examples, while the global ranking (``k = 0``)
   picks the class's extreme tail;
4. downsample and tile ``beta = factor**2`` of them per image (:func:`~dsdistill.methods.sre2l.patches.stitch`).

Differences from the reference (NRR-DD's code could not be read; the notes are second-hand):
* the "high-CAM patch" step is the mean-CAM box choice of step 2 (one candidate per real image);
* the correct-first ordering of step 3 is ours (the lowest-confidence crops of a large pool
  include mislabelled or ambiguous digits otherwise); ``select="highest"`` gives RDED's rule for
  ablations.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dsdistill.methods.nrr.cam import ClassActivation
from dsdistill.methods.sre2l.patches import score_crops, stitch
from dsdistill.softlabels.params import resized_crop, sample_crops


def box_means(maps: Tensor, boxes: Tensor) -> Tensor:
    """Mean of each ``(P, H, W)`` map inside its ``(P, 4)`` ``(top, left, height, width)`` box (integral image)."""
    p = maps.shape[0]
    ii = torch.nn.functional.pad(maps.double().cumsum(1).cumsum(2), (1, 0, 1, 0))  # (P, H + 1, W + 1)
    top, left, h, w = (boxes[:, k].to(maps.device) for k in range(4))
    rows = torch.arange(p, device=maps.device)
    total = (ii[rows, top + h, left + w] - ii[rows, top, left + w] - ii[rows, top + h, left]
             + ii[rows, top, left])
    return (total / (h * w).double()).float()


def critical_patches(images: Tensor, label: int, count: int, cam: ClassActivation, generator: torch.Generator, *,
                     beta: int, pool: int, crops: int, scale_min: float, select: str = "lowest",
                     slot_pool: int = 0) -> Tensor:
    """``(count, C, H, W)`` stitched initial images of class ``label`` (module docstring).

    Args:
        images: ``(n, C, H, W)`` training images of the class (on the teacher's device).
        label: The class.
        count: Images to make.
        cam: The teacher's CAM (its model also scores the crops).
        generator: The class's generator (pool draw, crop boxes).
        beta: Patches per image, a perfect square.
        pool: Real images drawn.
        crops: Candidate crops per real image.
        scale_min: Smallest crop area fraction.
        select: ``"lowest"`` (NRR-DD) or ``"highest"`` (RDED) confidence.
        slot_pool: 0 = rank the whole pool; ``k > 0`` = draw ``k`` distinct candidates per patch slot
            (``pool`` is then ignored) and keep the best of each slot (module docstring, step 3').

    Returns:
        ``(count, C, H, W)`` on ``images.device``.
    """
    factor = round(beta ** 0.5)
    need = count * factor * factor
    n, _, h, w = images.shape
    size = min(pool if slot_pool <= 0 else need * slot_pool, n)
    src = images[torch.randperm(n, generator=generator)[:size].to(images.device)]
    p = len(src)
    maps = cam.maps(src, torch.full((p,), label, device=src.device))  # (P, H, W)
    if scale_min >= 1.0:  # whole images (torchvision would still jitter the aspect by a pixel)
        boxes = torch.tensor([0, 0, h, w]).expand(p, crops, 4)
    else:
        boxes = sample_crops(p * crops, (h, w), generator, (scale_min, 1.0)).view(p, crops, 4)
    crit = box_means(maps.repeat_interleave(crops, 0), boxes.view(-1, 4)).view(p, crops)
    best = boxes[torch.arange(p), crit.argmax(1).cpu()]  # (P, 4)
    chosen = resized_crop(src, best.to(src.device), (h, w))
    ce = score_crops(chosen, label, cam.model)
    with torch.no_grad():
        correct = torch.cat([cam.model(x).argmax(1) for x in chosen.split(256)]) == label
    # rank: correct crops first, then by confidence (CE descending for "lowest", ascending for "highest")
    key = ce.double() if select == "highest" else -ce.double()
    key = (key + torch.where(correct, 0.0, 1e6).to(key)).cpu()
    if slot_pool > 0:  # src is already a random order: slot s holds candidates s*k ... s*k + k - 1
        slots = (torch.arange(need * slot_pool) % p).view(need, slot_pool)
        order = slots.gather(1, key[slots].argmin(1, keepdim=True))[:, 0]
    else:
        order = torch.argsort(key, stable=True)
        order = order[torch.arange(need) % len(order)]
    return stitch(chosen[order.to(chosen.device)], factor)
