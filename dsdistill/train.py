"""The one training loop: evaluators, coreset embedders, experts and teachers all train through it.

``train_classifier`` runs plain mini-batch SGD (or Adam/AdamW) on in-memory tensors with optional
DSA augmentation, hard or soft targets, and a step schedule; ``accuracy`` evaluates in chunks.
Randomness (shuffling, augmentation) comes only from the generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsdistill.perf import channels_last, to_channels_last


@dataclass
class TrainSettings:
    """One training recipe (the DC evaluation protocol by default).

    Attributes:
        epochs: Passes over the training tensors.
        lr: Initial learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        batch_size: Mini-batch size.
        decay_at: Fractions of ``epochs`` after which the lr is multiplied by ``decay_factor``
            (DC: ``(0.5,)``, i.e. x0.1 for the second half).
        decay_factor: Step-decay factor.
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        temperature: Softmax temperature for soft targets.
        schedule: ``"step"`` (``decay_at``/``decay_factor``) or ``"cosine"`` (per-epoch cosine
            annealing from ``lr`` to 0 over ``epochs``, no warmup; ``decay_at`` is then ignored).
    """

    epochs: int = 1000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    decay_at: tuple[float, ...] = (0.5,)
    decay_factor: float = 0.1
    optimizer: str = "sgd"
    temperature: float = 1.0
    schedule: str = "step"


def make_optimizer(params, settings: TrainSettings) -> torch.optim.Optimizer:
    """The optimiser a :class:`TrainSettings` names."""
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum,
                               weight_decay=settings.weight_decay)
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    raise ValueError(f"unknown optimizer {settings.optimizer!r}; choose sgd, adam or adamw")


def soft_cross_entropy(logits: Tensor, targets: Tensor, temperature: float = 1.0) -> Tensor:
    """Cross-entropy against ``(B, K)`` probability targets, at ``temperature`` (no T^2 factor)."""
    return -(targets * F.log_softmax(logits / temperature, dim=1)).sum(dim=1).mean()


def train_classifier(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    settings: TrainSettings,
    *,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    soft_targets: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
    resume: dict | None = None,
    checkpoint: Callable[[int, Callable[[], dict]], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place on ``(N, C, H, W)`` images and return it.

    Args:
        model: Any classifier; moved to ``images.device`` by the caller.
        images: ``(N, C, H, W)`` training inputs.
        labels: ``(N,)`` int64 hard labels (used when ``soft_targets`` is None).
        settings: Recipe.
        augment: Called as ``augment(batch, generator)`` on every mini-batch (e.g. a DSA).
        soft_targets: ``(N, K)`` probabilities; if given the loss is soft cross-entropy.
        generator: CPU generator for shuffling and augmentation.
        progress: Called with the epoch index after each epoch.
        resume: A state from ``checkpoint``'s ``state()`` (model, optimiser, scheduler and generator
            states and the number of finished epochs): training continues after those epochs and
            ends bitwise where an uninterrupted run ends (on CPU).
        checkpoint: Called as ``checkpoint(epochs_done, state)`` after every epoch; ``state()``
            builds the resumable state (only call it when saving).
    """
    optimizer = make_optimizer(model.parameters(), settings)
    if settings.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, settings.epochs))
    elif settings.schedule == "step":
        milestones = sorted({max(1, int(round(settings.epochs * f))) for f in settings.decay_at})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=settings.decay_factor)
    else:
        raise ValueError(f"unknown schedule {settings.schedule!r}; choose step or cosine")
    first_epoch = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if generator is not None:
            generator.set_state(resume["generator"])
        first_epoch = int(resume["epoch"])
    model.train()
    n = images.shape[0]
    cl = channels_last(images)
    for epoch in range(first_epoch, settings.epochs):
        order = torch.randperm(n, generator=generator).to(images.device)
        for start in range(0, n, settings.batch_size):
            idx = order[start: start + settings.batch_size]
            x = images[idx]
            if augment is not None:
                x = augment(x, generator)
            if cl:
                x = to_channels_last(x)
            logits = model(x)
            if soft_targets is not None:
                loss = soft_cross_entropy(logits, soft_targets[idx], settings.temperature)
            else:
                loss = F.cross_entropy(logits, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        if progress is not None:
            progress(epoch)
        if checkpoint is not None:
            checkpoint(epoch + 1, lambda: training_state(model, optimizer, scheduler, generator, epoch + 1))
    return model


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, generator: torch.Generator | None,
                   epoch: int) -> dict:
    """CPU copies of everything :func:`train_classifier` needs to resume after ``epoch`` epochs."""
    cpu = lambda sd: {k: (v.detach().cpu().clone() if torch.is_tensor(v) else v) for k, v in sd.items()}  # noqa: E731
    opt = optimizer.state_dict()
    opt = {"state": {k: cpu(v) for k, v in opt["state"].items()}, "param_groups": opt["param_groups"]}
    # only plain values (weights_only-loadable); e.g. MultiStepLR's milestone Counter comes from the constructor
    sched = {k: v for k, v in scheduler.state_dict().items()
             if v is None or isinstance(v, (bool, int, float, str)) or (
                 isinstance(v, list) and all(isinstance(x, (int, float)) for x in v))}
    return {"model": cpu(model.state_dict()), "optimizer": opt, "scheduler": sched,
            "generator": None if generator is None else generator.get_state(), "epoch": epoch}


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, chunk: int = 128) -> Tensor:
    """``(N, K)`` logits of ``model`` in eval mode, computed in chunks."""
    model.eval()
    cl = channels_last(images)
    outs = [model(to_channels_last(x) if cl else x) for x in images.split(chunk)]
    return torch.cat(outs)


def accuracy(model: nn.Module, images: Tensor, labels: Tensor, chunk: int = 128) -> float:
    """Top-1 accuracy (a fraction in [0, 1]) of ``model`` on ``(N, C, H, W)`` images."""
    logits = predict(model, images, chunk)
    return (logits.argmax(1) == labels.to(logits.device)).float().mean().item()
