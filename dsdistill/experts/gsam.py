"""GSAM: Surrogate Gap Guided Sharpness-Aware Minimization (Zhuang et al., ICLR 2022), as FTD uses it.

One step at weights ``w`` with loss ``f``:

1. ``g = grad f(w)``;
2. perturb ``e = rho * g / ||g||`` (adaptive: ``e = rho * w^2 * g / ||w * g||``, i.e. ASAM's
   weight-scaled ascent), ``w' = w + e``;
3. ``g_p = grad f(w')``;
4. decompose ``g`` into its components parallel and orthogonal to ``g_p``:
   ``g_perp = g - (<g, g_p> / ||g_p||^2) g_p``; the update direction is ``d = g_p - alpha * g_perp``;
5. restore ``w`` and let the base optimiser (SGD) step with ``d`` as the gradient.

With ``rho = 0`` GSAM is the base optimiser; with ``alpha = 0`` it is (A)SAM. BatchNorm running
statistics are frozen during the second pass (FTD's ``disable_running_stats``). The radius is
constant, as in FTD (its scheduler has gamma 1).

Example:
    >>> opt = GSAM(model.parameters(), lr=0.01, rho=0.01, alpha=0.3, model=model)   # doctest: +SKIP
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = F.cross_entropy(model(x), y)
    ...     loss.backward()
    ...     return loss
    >>> loss = opt.step(closure)
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

__all__ = ["GSAM"]


class GSAM(torch.optim.Optimizer):
    """GSAM around ``torch.optim.SGD`` (the optimiser state *is* SGD's, so checkpoints hold momenta).

    Args:
        params: Parameters (or groups) to optimise.
        lr, momentum, weight_decay: Passed to the base SGD.
        rho: Perturbation radius.
        alpha: Weight of the orthogonal (surrogate-gap) component removed from the update.
        adaptive: Weight-adaptive perturbation (FTD's default, which its CLI cannot switch off).
        model: If given, BatchNorm running statistics are not updated by the second pass.
        eps: Added to norms before dividing.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, *, rho: float = 0.01,
                 alpha: float = 0.3, adaptive: bool = True, model: nn.Module | None = None,
                 eps: float = 1e-12) -> None:
        if rho < 0 or alpha < 0:
            raise ValueError("GSAM needs rho >= 0 and alpha >= 0")
        self.base = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        super().__init__(self.base.param_groups, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.param_groups = self.base.param_groups
        self.state = self.base.state
        self.rho, self.alpha, self.adaptive, self.eps = float(rho), float(alpha), bool(adaptive), float(eps)
        self.model = model

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.grad is not None]

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        """One GSAM step. ``closure`` zeroes the gradients, computes the loss, calls ``backward``
        and returns the loss; it is called twice (at ``w`` and at ``w + e``).

        Returns:
            The loss at ``w`` (detached).
        """
        if closure is None:
            raise ValueError("GSAM.step needs a closure (it evaluates the loss twice)")
        with torch.enable_grad():
            loss = closure()
        params = self._params()
        old = [p.grad.detach().clone() for p in params]
        scaled = [(p.abs() * g) if self.adaptive else g for p, g in zip(params, old)]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in scaled]))
        scale = self.rho / (norm + self.eps)
        perturb = [g * scale * (p * p if self.adaptive else 1.0) for p, g in zip(params, old)]
        for p, e in zip(params, perturb):
            p.add_(e)
        momenta = _freeze_bn(self.model)
        try:
            with torch.enable_grad():
                closure()
        finally:
            _restore_bn(momenta)
        new = [p.grad for p in params]
        inner = sum((a * b).sum() for a, b in zip(old, new))
        new_sq = sum((b * b).sum() for b in new)
        coef = inner / (new_sq + self.eps)
        for g_p, g in zip(new, old):
            g_p.sub_(self.alpha * (g - coef * g_p))  # d = g_p - alpha * g_perp
        for p, e in zip(params, perturb):
            p.sub_(e)
        self.base.step()
        return loss.detach()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base.load_state_dict(state_dict)


def _freeze_bn(model: nn.Module | None) -> list[tuple[nn.Module, float | None]]:
    if model is None:
        return []
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            saved.append((m, m.momentum))
            m.momentum = 0.0
    return saved


def _restore_bn(saved: list[tuple[nn.Module, float | None]]) -> None:
    for m, momentum in saved:
        m.momentum = momentum
