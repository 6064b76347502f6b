"""DBR: distance-based representative labels (NRR-DD stage 3) and the student loss that uses them.

Labels are **per (epoch, sample)**, like FKD replay labels: for student epoch ``e`` and sample ``i``
the augmentation is a RandomResizedCrop (scale ``(scale_min, 1)``), a horizontal flip (off for
digits) and CutMix with partner ``j`` and weight ``lam = 1 - box_area / (H W)``
(:func:`dsdistill.softlabels.params.draw_params`), and the teacher ``T`` (eval mode) gives two numbers

    d_org[e, i] = CE(T(x_aug), y_i)                                  (the original one-hot label)
    d_aug[e, i] = CE(T(x_aug), lam y_i + (1 - lam) y_j)              (the augmented/mixed one-hot)
                = lam CE(T(x_aug), y_i) + (1 - lam) CE(T(x_aug), y_j)

stored as one ``(E, N, 2)`` float16 array: 4 bytes per instance and epoch, against ``2 K`` for
per-epoch fp16 soft labels. The augmentation parameters are **not stored**: epoch ``e``'s are drawn
from ``make_generator(seed, "nrr-dbr", e)``, and a sha256 of all drawn parameter tensors is kept in
the component's metadata, so an evaluation that draws different parameters (another torch RNG)
fails with one clear error instead of training on labels of other inputs.

Student loss (Lsce + alpha_dbr Ldbr of the notes; ``s_i = CE(S(x_aug), y_i)``, ``s_mix`` likewise):

    L = ce_weight * s_mix + alpha_dbr * (|s_i - d_org| + |s_mix - d_aug|)        (batch mean)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsdistill.errors import SyntheticFileError
from dsdistill.rng import make_generator
from dsdistill.softlabels.params import AugParams, augment, draw_params

COMPONENT = "dbr"


@dataclass(frozen=True)
class DBRSpec:
    """How the DBR labels' augmentation is drawn (everything needed to redraw it)."""

    epochs: int
    seed: int
    size: tuple[int, int]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    mix: str = "cutmix"

    def params(self, epoch: int, n: int) -> AugParams:
        """Epoch ``epoch``'s parameters for ``n`` samples (same-size crops of the images)."""
        return draw_params(n, self.size, self.size, make_generator(self.seed, "nrr-dbr", epoch), scale=self.scale,
                           ratio=self.ratio, flip=self.flip, mix=self.mix)

    def checksum(self, n: int, epochs: int | None = None) -> str:
        """sha256 of the parameter tensors of the first ``epochs`` epochs (all by default)."""
        digest = hashlib.sha256()
        for e in range(self.epochs if epochs is None else epochs):
            p = self.params(e, n)
            for t in (p.crops, p.flips, p.partners, p.mix_boxes):
                if t is not None:
                    digest.update(t.to(torch.int64).contiguous().numpy().tobytes())
        return digest.hexdigest()

    def meta(self, n: int) -> dict:
        return {"epochs": self.epochs, "seed": self.seed, "size": list(self.size), "scale": list(self.scale),
                "ratio": list(self.ratio), "flip": self.flip, "mix": self.mix, "num_samples": n,
                "params_sha256": self.checksum(n), "params_stored": False, "rng": "dsdistill.rng.make_generator",
                "torch": torch.__version__, "layout": "(epoch, sample, [d_org, d_aug]) float16"}

    @classmethod
    def from_meta(cls, meta: dict) -> "DBRSpec":
        try:
            return cls(int(meta["epochs"]), int(meta["seed"]), tuple(int(v) for v in meta["size"]),
                       tuple(float(v) for v in meta["scale"]), tuple(float(v) for v in meta["ratio"]),
                       bool(meta["flip"]), str(meta["mix"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SyntheticFileError(f"the DBR labels' metadata is incomplete or malformed ({exc!r})") from None


def pair_ce(logits: Tensor, labels: Tensor, lam: Tensor, partner_labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(CE(y_i), CE(lam y_i + (1 - lam) y_j))`` per sample, float32."""
    ce_i = F.cross_entropy(logits.float(), labels, reduction="none")
    ce_j = F.cross_entropy(logits.float(), partner_labels, reduction="none")
    return ce_i, lam * ce_i + (1 - lam) * ce_j


@torch.no_grad()
def dbr_labels(images: Tensor, labels: Tensor, teacher: nn.Module, spec: DBRSpec, batch_size: int = 256) -> Tensor:
    """``(E, N, 2)`` float32 ``[d_org, d_aug]`` of ``(N, C, H, W)`` images under ``spec`` (teacher in eval mode)."""
    teacher.eval()
    n = images.shape[0]
    labels = labels.to(images.device).long()
    out = torch.empty(spec.epochs, n, 2)
    for e in range(spec.epochs):
        params = spec.params(e, n)
        for idx in torch.arange(n).split(batch_size):
            x = augment(images, params, idx, spec.size)
            lam, partner = params.cutmix(idx, spec.size)
            d_org, d_aug = pair_ce(teacher(x), labels[idx.to(images.device)], lam.to(x.device),
                                   labels[partner.to(images.device)])
            out[e, idx] = torch.stack([d_org, d_aug], 1).cpu()
    return out


def dbr_loss(logits: Tensor, labels: Tensor, lam: Tensor, partner_labels: Tensor, target: Tensor, *,
             alpha_dbr: float, ce_weight: float) -> Tensor:
    """The student loss (module docstring); ``target`` is the ``(B, 2)`` stored ``[d_org, d_aug]``."""
    s_i, s_mix = pair_ce(logits, labels, lam, partner_labels)
    loss = ce_weight * s_mix.mean()
    if alpha_dbr:
        t = target.float()
        loss = loss + alpha_dbr * ((s_i - t[:, 0]).abs() + (s_mix - t[:, 1]).abs()).mean()
    return loss


def check_labels(values: Tensor, spec: DBRSpec, n: int, checksum: str | None) -> None:
    """Raise SyntheticFileError unless the stored labels fit ``n`` samples and the parameters redraw identically."""
    if tuple(values.shape) != (spec.epochs, n, 2):
        raise SyntheticFileError(f"the DBR labels have shape {tuple(values.shape)}, expected ({spec.epochs}, {n}, 2) "
                                 "for this set")
    if not torch.isfinite(values.float()).all() or bool((values.float() < 0).any()):
        raise SyntheticFileError("the DBR labels contain negative or non-finite distances; the file is corrupt")
    if not checksum:
        raise SyntheticFileError("the DBR labels carry no checksum of their augmentation parameters")
    if spec.checksum(n) != checksum:
        raise SyntheticFileError(f"the augmentation parameters redrawn from seed {spec.seed} differ from those the DBR "
                                 f"labels were made with (torch {torch.__version__} here); the labels cannot be "
                                 "replayed with this random number generator")
