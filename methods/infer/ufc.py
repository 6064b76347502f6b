"""INFER's Universal Feature Compensators: the budget split, the layout, and one UFC's optimisation.

Layout (shared by the condenser and the ``infer`` evaluation protocol):

* ``base``: ``(K * ipc_init, C, H, W)`` real images, class-major (image ``k`` of class ``c`` at
  row ``c * ipc_init + k``);
* ``ufc``: ``(M, ipc_init, C, H, W)``; ``ufc[m, k]`` is one ``(1, C, H, W)`` compensator shared by
  base image ``k`` of *every* class and optimised against teacher ``m``;
* the expanded training instances, :func:`expand`: ``(K * ipc_init * (M + 1), C, H, W)``,
  class-major with ``ipc_total = ipc_init * (M + 1)`` slots per class; slot ``s < ipc_init`` is base
  image ``s``, slot ``s >= ipc_init`` is ``clip(base[k] + ufc[m, k])`` with ``m = s // ipc_init - 1``
  and ``k = s % ipc_init`` (the reference's ``ipc_id`` numbering). ``clip`` maps to the valid
  pixel range of the set's space (:func:`valid_clamp`), differentiably.

One UFC step (``ufc_generation/ufc_cifar.py``; SOFTLABEL.md section 3): ``x = clip(base_k + u)``
for the K base images ``k``, one batch-level augmentation draw (:func:`~dsdistill.methods.sre2l.
recover.batch_augment`: optional RandomResizedCrop + flip, then a random roll of up to ``jitter``
pixels), loss ``CE(f_m(x'), y) + r_bn * BN_m(x')`` (SRe2L's BN-statistics distance with the first
layer weighted ``first_bn_multiplier``), Adam(0.5, 0.9) with a cosine learning rate, no warmup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from dsdistill.condenser import guarded_step
from dsdistill.errors import ConfigError
from dsdistill.methods.sre2l.recover import BNStatLoss, ValidRange, batch_augment, committee_loss, cosine_lr


def budget_split(ipc: int, num_classes: int, num_archs: int) -> int:
    """``ipc_init = int(IPC / (M / K + 1))`` in exact integer arithmetic: ``floor(IPC * K / (M + K))``.

    The counted budget ``ipc_init * K`` real images plus ``ipc_init * M`` compensators never
    exceeds ``IPC * K``.

    Raises:
        ConfigError: ``ipc_init < 1`` (the IPC is too small for M compensator groups).
    """
    ipc_init = (ipc * num_classes) // (num_archs + num_classes)
    if ipc_init < 1:
        least = -(-(num_archs + num_classes) // num_classes)
        raise ConfigError(f"IPC {ipc} is too small for INFER with {num_archs} teacher(s) and {num_classes} "
                          f"classes (ipc_init = floor(IPC*K/(M+K)) = 0); use --ipc >= {least}")
    return ipc_init


def valid_clamp(x: Tensor, valid: ValidRange) -> Tensor:
    """``x`` mapped to the valid pixel range of ``valid``'s space, with gradients (unlike ``clip_``)."""
    if valid.space == "normalized":
        return torch.maximum(torch.minimum(x, valid.high.to(x)), valid.low.to(x))
    if valid.space == "zca":
        return valid.zca.transform(valid.zca.inverse(x).clamp(0, 1))
    return x.clamp(0, 1)


def expand(base: Tensor, ufc: Tensor, valid: ValidRange) -> Tensor:
    """The training instances of an INFER set (module docstring), class-major.

    Args:
        base: ``(K * ipc_init, C, H, W)`` class-major base images.
        ufc: ``(M, ipc_init, C, H, W)`` compensators.
        valid: The valid range of the set's space.

    Returns:
        ``(K * ipc_init * (M + 1), C, H, W)``: per class, its ``ipc_init`` base images, then
        ``clip(base + ufc[m, k])`` for ``m = 0..M-1``, ``k = 0..ipc_init-1``.
    """
    m, ipc_init = ufc.shape[:2]
    k = base.shape[0] // ipc_init
    b = base.reshape(k, 1, ipc_init, *base.shape[1:])
    comp = valid_clamp(b + ufc.to(base).unsqueeze(0), valid)  # (K, M, ipc_init, C, H, W)
    return torch.cat([b, comp], 1).reshape(k * ipc_init * (m + 1), *base.shape[1:])


def expanded_labels(num_classes: int, ipc_init: int, num_archs: int) -> Tensor:
    """``(K * ipc_init * (M + 1),)`` hard labels of :func:`expand`'s instances."""
    return torch.arange(num_classes).repeat_interleave(ipc_init * (num_archs + 1))


@dataclass
class UFCSettings:
    """One compensator's optimisation (see :class:`~dsdistill.methods.infer.condenser.InferConfig`)."""

    iterations: int
    lr: float
    r_bn: float
    first_bn_multiplier: float
    jitter: int
    random_crop: bool
    crop_scale_min: float
    flip: bool


def optimise_ufc(base_k: Tensor, teacher: torch.nn.Module, hook: BNStatLoss, settings: UFCSettings,
                 generator: torch.Generator, valid: ValidRange, *, resume: dict | None = None,
                 on_step: Callable[[int, Tensor, torch.optim.Optimizer, float | None], None] | None = None
                 ) -> tuple[Tensor, float | None]:
    """Learn one ``(1, C, H, W)`` compensator for ``base_k`` (one base image per class, class order).

    Args:
        base_k: ``(K, C, H, W)`` base images, row ``c`` of class ``c``, on the teacher's device.
        teacher: The architecture this UFC is optimised against (eval mode, frozen).
        hook: :class:`BNStatLoss` hooks on ``teacher``.
        settings: Iterations, lr, r_bn, augmentation.
        generator: Augmentation randomness of this UFC (crop, flip, roll draws).
        valid: Valid range of the set's space; the teacher sees ``valid_clamp(base_k + u)``.
        resume: ``{"ufc", "optimizer", "generator", "iteration"}`` saved by ``on_step``'s caller.
        on_step: Called as ``on_step(done, ufc, optimizer, loss)`` after every iteration
            (checkpointing and progress).

    Returns:
        The compensator (detached) and the last finite loss.
    """
    s = settings
    u = torch.zeros((1, *base_k.shape[1:]), device=base_k.device, requires_grad=True)
    optimizer = torch.optim.Adam([u], lr=s.lr, betas=(0.5, 0.9), eps=1e-8)
    targets = torch.arange(base_k.shape[0], device=base_k.device)
    start, failures, last = 0, [], None
    if resume is not None:
        with torch.no_grad():
            u.copy_(resume["ufc"])
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["generator"])
        start = int(resume["iteration"])
    for it in range(start, s.iterations):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(s.lr, it, s.iterations)

        def step() -> Tensor:
            x = valid_clamp(base_k + u, valid)
            xa = batch_augment(x, generator, random_crop=s.random_crop, crop_scale_min=s.crop_scale_min,
                               flip=s.flip, jitter=s.jitter)
            loss, _ = committee_loss(xa, targets, [teacher], [hook], [1.0], s.r_bn, s.first_bn_multiplier)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.detach()

        loss = guarded_step(step, [u], it, failures, hint="lower the compensator learning rate (lr) and retry")
        last = loss if loss is not None else last
        if on_step is not None:
            on_step(it + 1, u, optimizer, loss)
    return u.detach(), last
