"""DATM: difficulty-aligned trajectory matching with learnable soft labels (Guo et al., ICLR 2024),
``DATM/distill/DATM.py`` (MATCHING.md 6.1), on GSAM experts (``dsdistill experts --recipe ftd``).

On top of MTT:
* initialisation from real images an expert (final epoch) classifies correctly
  (``init="correct"``, :func:`.init.correctly_classified_images`);
* soft labels: initial logits are the mean final-epoch logits of the experts that classify each
  image correctly (:func:`.init.expert_soft_labels`); they are learnable (SGD ``lr_y``, momentum
  0.9) and the student trains on them with ``-sum softmax(y) * log_softmax(f(x))`` (the gradient
  flows into ``y`` through the whole unroll, in every memory mode);
* difficulty alignment: the start epoch is drawn from ``[min_start_epoch, upper)``, with ``upper``
  growing linearly from ``current_max_start_epoch`` to ``max_start_epoch`` over
  ``expansion_end_epoch`` iterations (``sequential_generation``), else ``upper = max_start_epoch``;
* update gate: the images, lr and labels are stepped only when the matching loss is at most
  ``threshold``.

The learned logits are saved as ``SoftLabels(kind="logits")``; the ``tm`` protocol trains with soft
cross-entropy on them. Differences from the reference: as :mod:`.base`; the experts used for labels
are the first ``label_experts`` of the store (0: all), DATM uses every expert of its buffer files.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dsdistill.errors import ConfigError
from dsdistill.registry import CONDENSERS

from .base import MTTConfig, TrajectoryMatching, initial_real_or_noise, table_row
from .init import correctly_classified_images, expert_soft_labels


@dataclass
class DATMConfig(MTTConfig):
    """MTT's settings plus DATM's (defaults: ``configs/CIFAR-10/ConvIN/IPC10.yaml``).

    Attributes:
        init: ``correct`` (default), ``real`` or ``noise``.
        soft_labels: Learn soft labels (False: hard labels, the images-only ablation).
        lr_y: SGD lr of the label logits.
        momentum_y: Momentum of the label optimiser.
        label_experts: Experts averaged for the initial logits (0: all).
        sequential_generation: Grow the start-epoch window during the run.
        current_max_start_epoch: Initial upper bound of the window.
        expansion_end_epoch: Iteration at which the window reaches ``max_start_epoch``.
        threshold: Skip the update when the matching loss exceeds this.
    """

    syn_steps: int = 80
    expert_epochs: int = 2
    max_start_epoch: int = 20
    lr_img: float = 100.0
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01
    iterations: int = 10000
    init: str = "correct"
    zca: bool = True
    soft_labels: bool = True
    lr_y: float = 2.0
    momentum_y: float = 0.9
    label_experts: int = 0
    sequential_generation: bool = True
    current_max_start_epoch: int = 10
    expansion_end_epoch: int = 1000
    threshold: float = 1.0


_DATM_TABLE = {
    ("cifar10", 1): dict(syn_steps=80, lr_img=100, lr_lr=1e-7, lr_y=5.0, batch_syn=10, max_start_epoch=4,
                         sequential_generation=False, threshold=1.1),
    ("cifar10", 10): dict(syn_steps=80, lr_img=100, lr_lr=1e-5, lr_y=2.0, batch_syn=100, current_max_start_epoch=10,
                          max_start_epoch=20, expansion_end_epoch=1000, threshold=1.0),
    ("cifar10", 50): dict(syn_steps=80, lr_img=1000, lr_lr=1e-5, lr_y=2.0, batch_syn=500, current_max_start_epoch=20,
                          max_start_epoch=40, expansion_end_epoch=2000, threshold=1.0),
    ("cifar100", 1): dict(syn_steps=40, expert_epochs=3, lr_img=1000, lr_lr=1e-5, lr_y=10.0, batch_syn=1000,
                          current_max_start_epoch=10, max_start_epoch=20, expansion_end_epoch=1000, threshold=1.0),
    ("cifar100", 10): dict(syn_steps=80, lr_img=1000, lr_lr=1e-5, lr_y=10.0, batch_syn=1000, current_max_start_epoch=30,
                           max_start_epoch=50, expansion_end_epoch=2000, threshold=1.0),
    ("cifar100", 50): dict(syn_steps=80, lr_img=1000, lr_lr=1e-5, lr_y=10.0, batch_syn=1000, min_start_epoch=20,
                           max_start_epoch=70, sequential_generation=False, threshold=1.0, init="real"),
}


@CONDENSERS.register("datm")
class DATM(TrajectoryMatching):
    """Trajectory matching with learnable soft labels and a difficulty-aligned start window."""

    name = "datm"
    Config = DATMConfig
    expected_recipe = "ftd"

    @classmethod
    def recipe(cls, dataset: str, ipc: int) -> dict:
        return table_row(_DATM_TABLE, dataset, ipc)

    def open_store(self, real):
        cfg = self.config
        if cfg.sequential_generation and not cfg.min_start_epoch < cfg.current_max_start_epoch <= cfg.max_start_epoch:
            raise ConfigError(f"need min_start_epoch < current_max_start_epoch <= max_start_epoch, got "
                              f"{cfg.min_start_epoch}, {cfg.current_max_start_epoch}, {cfg.max_start_epoch}")
        return super().open_store(real)

    def start_range(self, iteration: int) -> tuple[int, int]:
        cfg = self.config
        if not cfg.sequential_generation:
            return cfg.min_start_epoch, cfg.max_start_epoch
        frac = min(1.0, iteration / max(1, cfg.expansion_end_epoch))
        upper = int(cfg.current_max_start_epoch + (cfg.max_start_epoch - cfg.current_max_start_epoch) * frac)
        return cfg.min_start_epoch, max(cfg.min_start_epoch + 1, upper)

    def _label_thetas(self, store, device) -> list[Tensor]:
        n = store.num_experts if self.config.label_experts <= 0 else min(self.config.label_experts, store.num_experts)
        return [store.snapshot(e, store.stored_epochs[-1]).to(device) for e in range(n)]

    def initial_images(self, real, ipc, store, student, gen, device) -> Tensor:
        if self.config.init != "correct":
            return initial_real_or_noise(real, ipc, self.config.init, gen)
        thetas = self._label_thetas(store, device)
        order = torch.randperm(len(thetas), generator=gen).tolist()
        return correctly_classified_images(real, ipc, student, [thetas[i] for i in order], gen)

    def initial_soft(self, real, images, labels, store, student, device) -> Tensor | None:
        if not self.config.soft_labels:
            return None
        return expert_soft_labels(images, labels, student, self._label_thetas(store, device))

    def label_optimizer(self, soft: Tensor) -> torch.optim.Optimizer:
        return torch.optim.SGD([soft], lr=self.config.lr_y, momentum=self.config.momentum_y)

    def accept(self, loss: float) -> bool:
        return loss <= self.config.threshold
