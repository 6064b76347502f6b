"""NRR: non-critical region refinement (NRR-DD stage 2).

For a batch ``x`` (``(B, C, H, W)``) with classes ``y`` and the teacher's CAMs ``A`` ([0, 1]):

    M = max(0, eps - A)                               (``(B, 1, H, W)``; 0 on critical pixels)
    x <- x - M * eta * grad_x (CE(f(x), y) + a_bn * L_BN(x))

with ``CE`` the batch-mean cross-entropy, ``L_BN`` SRe2L's BN-statistics distance
(:class:`~dsdistill.methods.sre2l.recover.BNStatLoss`, first layer weighted by
``first_bn_multiplier``) and the teacher in eval mode. After each step the updated pixels are
clipped to the valid range of the set's space; pixels with ``M = 0`` are never written, so the
critical regions (``A >= eps``) stay bitwise equal to the initial real patches.

``M`` comes from the CAM of the images being refined: computed from the initial images, and
recomputed from the current ones every ``cam_every`` steps when that is positive (then a pixel is
frozen only while it is critical). The step is a plain masked gradient step as in the notes
(no Adam), so ``eta`` is a per-pixel learning rate for the batch-mean loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsdistill.methods.nrr.cam import ClassActivation
from dsdistill.methods.sre2l.recover import BNStatLoss, ValidRange


def refine_mask(cam: ClassActivation, x: Tensor, classes: Tensor, eps: float) -> Tensor:
    """``(B, 1, H, W)`` update weights ``max(0, eps - CAM)``."""
    return (eps - cam.maps(x, classes)).clamp(min=0)[:, None]


def refine_loss(x: Tensor, classes: Tensor, teacher: nn.Module, bn: BNStatLoss, a_bn: float,
                first_bn_multiplier: float) -> tuple[Tensor, Tensor, Tensor]:
    """``CE + a_bn * L_BN`` and its two parts."""
    ce = F.cross_entropy(teacher(x), classes)
    bn_loss = bn.total(first_bn_multiplier).to(x)
    return ce + a_bn * bn_loss, ce.detach(), bn_loss.detach()


def refine_step(x: Tensor, classes: Tensor, mask: Tensor, teacher: nn.Module, bn: BNStatLoss, clip: ValidRange, *,
                eta: float, a_bn: float, first_bn_multiplier: float) -> Tensor:
    """One masked step on ``x`` in place; returns the loss before the step (detached)."""
    xg = x.detach().requires_grad_(True)
    loss, _, _ = refine_loss(xg, classes, teacher, bn, a_bn, first_bn_multiplier)
    (grad,) = torch.autograd.grad(loss, xg)
    with torch.no_grad():
        stepped = clip.clip_(x - mask * eta * grad)
        x.copy_(torch.where(mask > 0, stepped, x))
    return loss.detach()
