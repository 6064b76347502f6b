"""Expert-guided initialisations: AST's representative images and DATM's correctly classified ones
and soft labels (MATCHING.md 5.2, 6.1).

All of them evaluate expert networks at a stored snapshot through the functional student, in
chunks, without autograd.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from dsdistill.data.real import RealData

from .student import FunctionalStudent

log = logging.getLogger(__name__)


@torch.no_grad()
def expert_logits(student: FunctionalStudent, theta: Tensor, images: Tensor, chunk: int = 256) -> Tensor:
    """``(N, K)`` logits of ``images`` under flat parameters ``theta``."""
    dev = theta.device
    return torch.cat([student.logits(theta, x.to(dev)).cpu() for x in images.split(chunk)])


def kmeans(points: Tensor, k: int, generator: torch.Generator, iters: int = 30) -> Tensor:
    """``(k, D)`` centres of Lloyd's k-means with k-means++ seeding (Euclidean, float64).

    Args:
        points: ``(N, D)`` with ``N >= k``.
        k: Number of clusters.
        generator: Source of the seeding draws.
    """
    x = points.double()
    centres = x[torch.randint(len(x), (1,), generator=generator)]
    for _ in range(1, k):
        d2 = torch.cdist(x, centres).pow(2).min(1).values
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / len(d2))
        centres = torch.cat([centres, x[torch.multinomial(probs, 1, generator=generator)]])
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)
        new = torch.stack([x[assign == j].mean(0) if (assign == j).any() else centres[j] for j in range(k)])
        if torch.allclose(new, centres):
            break
        centres = new
    return centres


def representative_indices(logits: Tensor, ipc: int, generator: torch.Generator, clusters: int = 10) -> Tensor:
    """AST's ``avg`` initialisation for one class: k-means on expert logits, nearest images to the centres.

    The reference clusters into 10 and takes ``int(ipc / 10)`` images per centre, which selects
    nothing at IPC 1 (and too few whenever 10 does not divide IPC). Here ``min(clusters, ipc)``
    centres are used, each contributes ``ipc // k`` images (the first ``ipc % k`` one more), nearest
    first, never the same image twice; at IPC 10 and 50 this is exactly the reference's rule.

    Args:
        logits: ``(n, K)`` expert logits of the class's training images.
        ipc: Images to select (``<= n``).
        generator: k-means seeding.

    Returns:
        ``(ipc,)`` row indices into ``logits``.
    """
    k = min(clusters, ipc)
    centres = kmeans(logits, k, generator)
    dist = torch.cdist(centres, logits.double())  # (k, n)
    quota = [ipc // k + (1 if j < ipc % k else 0) for j in range(k)]
    taken: list[int] = []
    used = torch.zeros(len(logits), dtype=torch.bool)
    for j in range(k):
        for i in dist[j].argsort().tolist():
            if quota[j] == 0:
                break
            if not used[i]:
                used[i] = True
                taken.append(i)
                quota[j] -= 1
    return torch.tensor(taken, dtype=torch.long)


def representative_images(real: RealData, ipc: int, student: FunctionalStudent, theta: Tensor,
                          generator: torch.Generator) -> Tensor:
    """``(K * ipc, C, H, W)`` class-major representative real images (see :func:`representative_indices`)."""
    out = []
    for c in range(real.num_classes):
        idx = real.indices_of(c)
        logits = expert_logits(student, theta, real.train_images[idx])
        out.append(real.train_images[idx[representative_indices(logits, ipc, generator)]])
    return torch.cat(out).clone()


def correctly_classified_images(real: RealData, ipc: int, student: FunctionalStudent, thetas: list[Tensor],
                                generator: torch.Generator) -> Tensor:
    """DATM's ``samples_predicted_correctly``: per class, random real images the first expert classifies
    correctly; if it finds fewer than ``ipc``, the next expert fills in from the remaining ones, and if
    every expert fails, random remaining images complete the class (logged).

    Args:
        thetas: Flat parameters of the label experts, in the order to try them.
    """
    out = []
    for c in range(real.num_classes):
        idx = real.indices_of(c)
        idx = idx[torch.randperm(len(idx), generator=generator)]
        chosen: list[int] = []
        remaining = idx
        for theta in thetas:
            if len(chosen) >= ipc:
                break
            pred = expert_logits(student, theta, real.train_images[remaining]).argmax(1)
            good = remaining[pred == c]
            chosen.extend(good[: ipc - len(chosen)].tolist())
            remaining = remaining[~torch.isin(remaining, torch.tensor(chosen, dtype=remaining.dtype))]
        if len(chosen) < ipc:
            log.warning("class %d: only %d correctly classified images; %d random ones added", c, len(chosen),
                        ipc - len(chosen))
            chosen.extend(remaining[: ipc - len(chosen)].tolist())
        out.append(real.train_images[torch.tensor(chosen, dtype=torch.long)])
    return torch.cat(out).clone()


def expert_soft_labels(images: Tensor, labels: Tensor, student: FunctionalStudent, thetas: list[Tensor]) -> Tensor:
    """DATM's initial label logits: per image, the mean logits of the experts that classify it correctly
    (all experts' mean where none does).

    Returns:
        ``(N, K)`` float32 logits.
    """
    logits = torch.stack([expert_logits(student, t, images) for t in thetas])  # (E, N, K)
    correct = (logits.argmax(2) == labels.cpu().view(1, -1)).float()  # (E, N)
    count = correct.sum(0)
    mean_correct = (logits * correct.unsqueeze(2)).sum(0) / count.clamp(min=1).unsqueeze(1)
    none = count == 0
    if none.any():
        log.warning("%d synthetic images are misclassified by every expert; their labels start from the mean "
                    "logits of all experts", int(none.sum()))
    return torch.where(none.unsqueeze(1), logits.mean(0), mean_correct).float()
