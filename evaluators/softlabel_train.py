"""The student loop of the ``softlabel`` protocol, with replayed or online teacher labels.

Each epoch has augmentation parameters for every sample (crop box, flip, CutMix partner and box)
and an order. With :class:`ReplaySource` both come from the file (the order only for
batch-specific labels, whose teacher micro-batches are part of the data; otherwise the student
shuffles with its own generator), and the targets are the stored labels of exactly those inputs.
With :class:`OnlineSource` parameters are drawn fresh from the generator and the teacher committee
labels every mini-batch as it is trained on: knowledge the synthetic file does not contain.

Loss: ``KL(softmax(t / T) || softmax(s / T))`` with ``reduction="batchmean"`` and **no** ``T^2``
factor (SRe2L ``train_FKD.py``, CV-DD, RDED); AdamW is nearly invariant to the loss scale, so the
factor would mostly rescale weight decay. Hard-label runs use cross-entropy on the same replayed
inputs, ``lam * CE(y_i) + (1 - lam) * CE(y_partner)`` for CutMix.

Optimiser: AdamW (weight decay on weights only, none on biases and norm parameters, as SRe2L's
``train_FKD.py``), lr factor ``0.5 * (1 + cos(pi * epoch / (epochs * smoothing)))`` stepped once
per epoch (``smoothing`` 1 = SRe2L, 2 = RDED/EDC "st", ending at half the lr).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsdistill.perf import to_channels_last
from dsdistill.softlabels import AugParams, ReplayLabels, augment, bn_train_copies, draw_params, label_batch
from dsdistill.train import training_state


class ReplaySource:
    """Stored labels: parameters, order (batch-specific only) and targets from ``replay``."""

    online = False

    def __init__(self, replay: ReplayLabels, temperature: float | None = None) -> None:
        self.replay, self.size = replay, replay.size
        self.temperature = temperature or replay.temperature

    def epoch(self, e: int, n: int, generator: torch.Generator) -> tuple[AugParams, Tensor]:
        order = self.replay.order[e].long() if self.replay.order is not None else torch.randperm(n, generator=generator)
        return self.replay.params(e), order

    def targets(self, e: int, idx: Tensor, x: Tensor) -> Tensor:
        return self.replay.targets(e, idx, self.temperature)

    def lam(self, e: int, idx: Tensor, params: AugParams) -> tuple[Tensor, Tensor]:
        return self.replay.lam(e, idx)


@dataclass
class OnlineSource:
    """Teacher committee labelling each augmented mini-batch during training.

    Attributes:
        teachers: The classifiers (eval mode, or BatchNorm in train mode if ``batch_specific``).
        weights: ``(M,)`` committee weights summing to 1.
        average: ``"logits"`` or ``"probs"`` (see :mod:`dsdistill.softlabels.relabel`).
        temperature: Softening temperature of the targets and the student.
        size: Crop output ``(h, w)``.
        src: Source image ``(H, W)``.
        scale, ratio, flip, mix: The augmentation (as the stored labels were made).
        batch_specific: Teachers' BN on the student's mini-batch (CV-DD BSSL).
    """

    teachers: Sequence[nn.Module]
    weights: Tensor
    average: str
    temperature: float
    size: tuple[int, int]
    src: tuple[int, int]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    mix: str = "cutmix"
    batch_specific: bool = False
    online = True

    def __post_init__(self) -> None:
        self.active = bn_train_copies(self.teachers) if self.batch_specific else [t.eval() for t in self.teachers]

    def epoch(self, e: int, n: int, generator: torch.Generator) -> tuple[AugParams, Tensor]:
        params = draw_params(n, self.src, self.size, generator, scale=self.scale, ratio=self.ratio,
                             flip=self.flip, mix=self.mix)
        return params, torch.randperm(n, generator=generator)

    def targets(self, e: int, idx: Tensor, x: Tensor) -> Tensor:
        y = label_batch(x, self.active, self.weights.to(x.device), self.average, self.temperature)
        return y if self.average == "probs" else torch.softmax(y / self.temperature, 1)

    def lam(self, e: int, idx: Tensor, params: AugParams) -> tuple[Tensor, Tensor]:
        return params.cutmix(idx, self.size)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weights of dimension >= 2, none on biases and norm parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class AdamWCosine:
    """The students' optimiser: AdamW (:func:`param_groups`) with the per-epoch cosine factor
    ``0.5 * (1 + cos(pi * epoch / (epochs * smoothing)))``, resumable from a training state.

    Args:
        model: The student (its state is restored from ``resume``).
        lr, weight_decay, epochs, smoothing: The recipe.
        generator: The student's generator (its state is restored from ``resume``).
        resume: A state built by :meth:`end_epoch`'s checkpoint callback, or None.

    Attributes:
        first_epoch: The epoch to continue from (0 without ``resume``).
    """

    def __init__(self, model: nn.Module, *, lr: float, weight_decay: float, epochs: int, smoothing: float = 1.0,
                 generator: torch.Generator, resume: dict | None = None) -> None:
        self.model, self.generator = model, generator
        self.opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda e: 0.5 * (1.0 + math.cos(math.pi * e / (epochs * smoothing))))
        self.first_epoch = 0
        if resume is not None:
            model.load_state_dict(resume["model"])
            self.opt.load_state_dict(resume["optimizer"])
            # the cosine factor is a lambda, rebuilt above; training_state keeps only plain values
            self.sched.load_state_dict({"lr_lambdas": [None] * len(self.opt.param_groups), **resume["scheduler"]})
            generator.set_state(resume["generator"])
            self.first_epoch = int(resume["epoch"])

    def step(self, loss: Tensor) -> None:
        """One optimiser step on ``loss``."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def end_epoch(self, epoch: int, progress: Callable[[int], None] | None,
                  checkpoint: Callable[[int, Callable[[], dict]], None] | None) -> None:
        """Step the schedule, report ``epoch`` done, and offer a checkpoint of the state after it."""
        self.sched.step()
        if progress is not None:
            progress(epoch)
        if checkpoint is not None:
            checkpoint(epoch + 1, lambda done=epoch + 1: training_state(self.model, self.opt, self.sched,
                                                                        self.generator, done))


def kl_loss(student: Tensor, target: Tensor, temperature: float) -> Tensor:
    """``KL(target || softmax(student / T))``, batch mean, no ``T^2`` factor."""
    return F.kl_div(F.log_softmax(student / temperature, dim=1), target, reduction="batchmean")


def train_student(model: nn.Module, images: Tensor, labels: Tensor, source, *, epochs: int, batch_size: int,
                  lr: float, weight_decay: float, smoothing: float, hard: bool, generator: torch.Generator,
                  progress: Callable[[int], None] | None = None, resume: dict | None = None,
                  checkpoint: Callable[[int, Callable[[], dict]], None] | None = None) -> nn.Module:
    """Train ``model`` in place on ``(N, C, H, W)`` images with ``source``'s augmentation and labels.

    Args:
        model: The student, on ``images.device``.
        images: The training images (the set, or a random real subset).
        labels: ``(N,)`` hard labels (used when ``hard``).
        source: :class:`ReplaySource` or :class:`OnlineSource`.
        epochs: Epochs (for replay at most the stored epochs; checked by the caller).
        batch_size, lr, weight_decay, smoothing: The recipe (module docstring).
        hard: Cross-entropy on hard labels instead of KL on the soft labels.
        generator: Shuffling (and, online, augmentation) randomness.
        progress: Called with the epoch index after each epoch.
        resume: A state from ``checkpoint``'s ``state()`` (see :func:`dsdistill.train.training_state`):
            training continues after its epochs and ends bitwise where an uninterrupted run ends (on
            CPU), since augmentation and labels are keyed by epoch and the generator is restored.
        checkpoint: Called as ``checkpoint(epochs_done, state)`` after every epoch; ``state()``
            builds the resumable state (only call it when saving).
    """
    opt = AdamWCosine(model, lr=lr, weight_decay=weight_decay, epochs=epochs, smoothing=smoothing,
                      generator=generator, resume=resume)
    labels = labels.to(images.device)
    model.train()
    n = images.shape[0]
    for e in range(opt.first_epoch, epochs):
        params, order = source.epoch(e, n, generator)
        for idx in order.split(batch_size):
            x = augment(images, params, idx, source.size)
            if hard:
                lam, partner = source.lam(e, idx, params)
                lam = lam.to(x.device)
                out = model(to_channels_last(x))
                loss = (lam * F.cross_entropy(out, labels[idx.to(x.device)], reduction="none")
                        + (1 - lam) * F.cross_entropy(out, labels[partner.to(x.device)], reduction="none")).mean()
            else:
                target = source.targets(e, idx, x).to(x.device)
                out = model(to_channels_last(x))
                loss = kl_loss(out, target, source.temperature)
            opt.step(loss)
        opt.end_epoch(e, progress, checkpoint)
    return model
