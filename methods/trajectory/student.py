"""The functional student: one network module evaluated on flat parameter vectors.

MTT's reference wraps the network in a ``ReparamModule`` that copies a flat vector into module
attributes on every forward. Here the unmodified network from :func:`dsdistill.models.build_model`
is called through :func:`torch.func.functional_call` with views of the flat vector, so nothing is
copied and the graph from the flat vector to every weight is a cheap ``split``/``view``.
"""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.func import functional_call

from dsdistill.perf import to_channels_last


class FunctionalStudent:
    """Evaluate ``model`` at a flat parameter vector.

    Args:
        model: The network skeleton (its own parameter values are never used, its buffers are).

    Attributes:
        names: Parameter names in ``named_parameters()`` order (the flattening order).
        shapes: Matching parameter shapes.
        num_params: Total length P of a flat vector.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in model.named_parameters()]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.num_params = sum(self.sizes)
        for p in model.parameters():
            p.requires_grad_(False)

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """``{name: view}`` of a ``(P,)`` vector (differentiable)."""
        return {n: t.view(s) for n, t, s in zip(self.names, flat.split(self.sizes), self.shapes)}

    def logits(self, flat: Tensor, x: Tensor) -> Tensor:
        """``(B, K)`` logits of ``(B, C, H, W)`` images under parameters ``flat`` ``(P,)``."""
        return functional_call(self.model, self.unflatten(flat), (to_channels_last(x),))

    def split(self, flat: Tensor) -> tuple[Tensor, ...]:
        """The per-tensor segments of a flat vector (1-D views)."""
        return flat.split(self.sizes)
