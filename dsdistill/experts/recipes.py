"""The three expert-training recipes (MATCHING.md §3.1, §4.1, §5.1).

* ``mtt`` (``mtt-distillation/buffer.py``): SGD lr 0.01, no momentum, no weight decay, constant
  lr, batch 256, unseeded DSA on every batch.
* ``ftd`` (``FTD-distillation/buffer/buffer_FTD.py``): the same under GSAM with rho 0.01,
  alpha 0.3 (DATM's setting; FTD's script default is 0.4), adaptive.
* ``ast`` (``AST-Alignment-with-Smooth-Expert/buffer.py`` + ``utils.py epoch_gp``): SGD momentum
  0.9, weight decay 1e-3, lr 0.003; the lr is multiplied by 0.6 once epoch ``epochs // 2 + 1`` is
  done, and the optimiser is rebuilt there (the reference creates a new SGD, so the momentum
  buffer restarts); the cross-entropy is scaled by ``0.5 + 0.05 e`` in epochs e < 10 (the
  "clipping loss"); a gradient penalty ``2 * mean((||d sum F(x) / dx||_2 - 1)^2)`` with the norm
  over the channel axis, on the un-augmented batch, is added every step.

DSA uses MTT's ``align_corners=True`` and the dataset's reference strategy (no flip on digits).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dsdistill.errors import ConfigError, UnknownNameError

__all__ = ["ExpertRecipe", "RECIPES", "get_recipe"]


@dataclass(frozen=True)
class ExpertRecipe:
    """How one expert is trained.

    Attributes:
        name: ``mtt``, ``ftd`` or ``ast``.
        lr: Initial learning rate.
        momentum: SGD momentum.
        weight_decay: SGD L2 penalty.
        batch_size: Mini-batch size.
        dsa: Apply unseeded DSA (independent per-sample parameters) to every training batch.
        lr_decay: Factor applied once after epoch ``epochs // 2 + 1`` (1.0: constant lr).
        reset_momentum_at_decay: Restart the momentum buffer when the lr changes (the reference
            rebuilds its optimiser).
        gsam: Train under GSAM.
        gsam_rho, gsam_alpha, gsam_adaptive: GSAM's radius, decomposition weight and
            weight-adaptive perturbation.
        loss_scale_epochs: The CE loss is multiplied by ``loss_scale_start + loss_scale_step * e``
            in epochs ``e < loss_scale_epochs`` (0 disables).
        loss_scale_start, loss_scale_step: See above.
        gp_weight: Weight of the input-gradient penalty (0 disables).
    """

    name: str
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    dsa: bool = True
    lr_decay: float = 1.0
    reset_momentum_at_decay: bool = True
    gsam: bool = False
    gsam_rho: float = 0.01
    gsam_alpha: float = 0.3
    gsam_adaptive: bool = True
    loss_scale_epochs: int = 0
    loss_scale_start: float = 0.5
    loss_scale_step: float = 0.05
    gp_weight: float = 0.0

    def decay_after(self, epochs: int) -> int | None:
        """The epoch after which the lr decays (None when it never does)."""
        return epochs // 2 + 1 if self.lr_decay != 1.0 else None

    def lr_at(self, epoch: int, epochs: int) -> float:
        """The learning rate used during (0-based) ``epoch``."""
        after = self.decay_after(epochs)
        return self.lr * self.lr_decay if after is not None and epoch > after else self.lr

    def loss_scale(self, epoch: int) -> float:
        """Multiplier of the cross-entropy in ``epoch``."""
        if epoch < self.loss_scale_epochs:
            return self.loss_scale_start + self.loss_scale_step * epoch
        return 1.0

    def with_overrides(self, **overrides) -> "ExpertRecipe":
        """A copy with some fields replaced (None values ignored; unknown keys raise ConfigError)."""
        fields = {f.name for f in dataclasses.fields(self)}
        clean = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(clean) - fields)
        if unknown:
            raise ConfigError(f"unknown recipe setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
        out = dataclasses.replace(self, **clean)
        if out.lr <= 0 or out.batch_size < 1:
            raise ConfigError("the expert lr must be positive and the batch size at least 1")
        return out


RECIPES: dict[str, ExpertRecipe] = {
    "mtt": ExpertRecipe("mtt"),
    "ftd": ExpertRecipe("ftd", gsam=True),
    "ast": ExpertRecipe("ast", lr=0.003, momentum=0.9, weight_decay=1e-3, lr_decay=0.6,
                        loss_scale_epochs=10, gp_weight=2.0),
}


def get_recipe(name: str) -> ExpertRecipe:
    """The recipe called ``name`` (case-insensitive)."""
    key = str(name).strip().lower()
    if key not in RECIPES:
        raise UnknownNameError(f"unknown expert recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    return RECIPES[key]
