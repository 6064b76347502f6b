"""FTD: flat trajectory distillation (Du et al., CVPR 2023), ``FTD-distillation/distill/distill_FTD.py``.

MTT on experts trained under GSAM (``dsdistill experts --recipe ftd``) plus an exponential moving
average of the synthetic images, ``ema <- decay * ema + (1 - decay) * images`` after every image
update (timm ``ModelEmaV2``: starts at the initial images, no bias correction). The EMA images are
what is returned, saved and evaluated.

Differences from the reference:
* the reference evaluates the EMA images on the network it has just trained on the raw images
  (``distill_FTD.py`` L223-242 reuses ``net_eval``: a warm start, MATCHING.md 4.2); here the EMA
  set is an ordinary file, evaluated from freshly initialised networks like any other;
* with ``decay`` close to 1 the EMA follows the images with a lag of about ``1 / (1 - decay)``
  iterations (2000 at 0.9995), so short CPU runs should lower ``ema_decay``;
* otherwise as :mod:`.mtt`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from dsdistill.errors import ConfigError
from dsdistill.registry import CONDENSERS

from .base import MTTConfig, TrajectoryMatching, mtt_recipe, table_row


@dataclass
class FTDConfig(MTTConfig):
    """MTT's settings plus ``ema_decay`` (FTD Table 7)."""

    ema_decay: float = 0.999


# FTD Table 7 (MATCHING.md 4.3); ZCA as MTT.
_FTD_TABLE = {
    ("cifar10", 1): dict(syn_steps=50, expert_epochs=2, max_start_epoch=2, lr_img=100, lr_lr=1e-7, lr_teacher=0.01, ema_decay=0.9999, zca=True),
    ("cifar10", 10): dict(syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_img=100, lr_lr=1e-5, lr_teacher=0.001, ema_decay=0.9995, zca=True),
    ("cifar10", 50): dict(syn_steps=30, expert_epochs=2, max_start_epoch=40, lr_img=1000, lr_lr=1e-5, lr_teacher=0.01, ema_decay=0.999, zca=False),
    ("cifar100", 1): dict(syn_steps=40, expert_epochs=3, max_start_epoch=20, lr_img=1000, lr_lr=1e-5, lr_teacher=0.01, ema_decay=0.9995, zca=True),
    ("cifar100", 10): dict(syn_steps=20, expert_epochs=2, max_start_epoch=40, lr_img=1000, lr_lr=1e-5, lr_teacher=0.01, ema_decay=0.9995, zca=False),
    ("cifar100", 50): dict(syn_steps=80, expert_epochs=2, max_start_epoch=40, lr_img=1000, lr_lr=1e-5, lr_teacher=0.01, batch_syn=1000, ema_decay=0.999, zca=True),
    ("tinyimagenet", 1): dict(syn_steps=30, expert_epochs=2, max_start_epoch=10, lr_img=10000, lr_lr=1e-4, lr_teacher=0.01, ema_decay=0.999),
    ("tinyimagenet", 10): dict(syn_steps=20, expert_epochs=2, max_start_epoch=40, lr_img=10000, lr_lr=1e-4, lr_teacher=0.01, batch_syn=500, ema_decay=0.999),
}


@CONDENSERS.register("ftd")
class FTD(TrajectoryMatching):
    """MTT on flat (GSAM) experts; the EMA of the images is the result."""

    name = "ftd"
    Config = FTDConfig
    expected_recipe = "ftd"

    @classmethod
    def recipe(cls, dataset: str, ipc: int) -> dict:
        return table_row(_FTD_TABLE, dataset, ipc) or mtt_recipe(dataset, ipc)

    def open_store(self, real):
        if not 0.0 <= self.config.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.config.ema_decay}")
        return super().open_store(real)

    def after_update(self, images: Tensor, state: dict) -> None:
        if state["ema"] is None:  # ModelEmaV2 starts from the initial images
            state["ema"] = self._initial.to(images.device).clone()
        state["ema"].mul_(self.config.ema_decay).add_(images, alpha=1.0 - self.config.ema_decay)

    def initial_images(self, real, ipc, store, student, gen, device) -> Tensor:
        images = super().initial_images(real, ipc, store, student, gen, device)
        self._initial = images.clone()
        return images

    def final_images(self, images: Tensor, state: dict) -> Tensor:
        if state["ema"] is None:  # no update was taken
            return images
        return state["ema"]
