"""LoRA adapters for ``nn.Conv2d`` and ``nn.Linear`` as weight parametrizations.

``W' = W + (alpha / r) * B @ A`` with the base ``W`` frozen, ``A`` ``(r, fan_in)`` (Kaiming-uniform,
as loralib) and ``B`` ``(out, r)`` zero-initialised, so the adapted model starts exactly as the base
one. For a convolution ``fan_in = in_channels / groups * kh * kw`` and ``B @ A`` is reshaped to the
kernel's shape (one low-rank update of the flattened kernel, loralib's ``ConvLoRA`` with a single
block).

The adapter is registered with ``torch.nn.utils.parametrize`` on the module's ``weight``, so every
reader of ``module.weight`` sees the adapted weight: also code that never calls the module, like
open_clip's ``AttentionPool2d`` (``F.multi_head_attention_forward(q_proj_weight=self.q_proj.weight,
...)``) or ``nn.MultiheadAttention``'s ``out_proj``. The rank is capped at ``min(out, fan_in)``.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize


class LoRADelta(nn.Module):
    """``weight -> weight + scale * (B @ A).view_as(weight)`` (a parametrization).

    Args:
        shape: The base weight's shape ``(out, ...)``.
        rank: Requested rank (capped at ``min(out, fan_in)``).
        alpha: Scale numerator (``scale = alpha / rank``); ``None`` = ``rank`` (scale 1).
        generator: Draws ``A``.
    """

    def __init__(self, shape: torch.Size, rank: int, alpha: float | None, generator: torch.Generator) -> None:
        super().__init__()
        out, fan_in = int(shape[0]), int(math.prod(shape[1:]))
        self.rank = max(1, min(int(rank), out, fan_in))
        self.scale = (float(alpha) if alpha else float(self.rank)) / self.rank
        bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)) of an (r, fan_in) matrix
        self.A = nn.Parameter((torch.rand(self.rank, fan_in, generator=generator) * 2 - 1) * bound)
        self.B = nn.Parameter(torch.zeros(out, self.rank))

    def forward(self, weight: Tensor) -> Tensor:
        return weight + self.scale * (self.B @ self.A).view_as(weight)


def add_lora(root: nn.Module, rank: int, *, kinds: Iterable[str] = ("conv", "linear"), alpha: float | None = None,
             generator: torch.Generator) -> dict[str, LoRADelta]:
    """Freeze ``root`` and attach a :class:`LoRADelta` to every Conv2d/Linear weight of the chosen kinds.

    Args:
        root: The module to adapt (in place).
        rank: Adapter rank.
        kinds: ``"conv"`` (``nn.Conv2d``) and/or ``"linear"`` (``nn.Linear`` and subclasses).
        alpha: LoRA alpha (``None``: scale 1).
        generator: Draws the ``A`` matrices in module order.

    Returns:
        ``{module name: adapter}`` in module order; the adapters' ``A``/``B`` are the only
        trainable parameters under ``root``.
    """
    kinds = set(kinds)
    if not kinds <= {"conv", "linear"}:
        raise ValueError(f"LoRA kinds must be 'conv' and/or 'linear', got {sorted(kinds)}")
    for p in root.parameters():
        p.requires_grad_(False)
    types = tuple(t for k, t in (("conv", nn.Conv2d), ("linear", nn.Linear)) if k in kinds)
    targets = [(n, m) for n, m in root.named_modules() if isinstance(m, types) and not parametrize.is_parametrized(m)]
    adapters = {}
    for name, module in targets:
        delta = LoRADelta(module.weight.shape, rank, alpha, generator).to(module.weight)
        parametrize.register_parametrization(module, "weight", delta)
        adapters[name] = delta
    return adapters


def adapter_tensors(adapters: dict[str, LoRADelta]) -> dict[str, Tensor]:
    """``{"<module>.A": A, "<module>.B": B}`` for storage (``"A"``/``"B"`` for the root module itself)."""
    return {_key(name, part): getattr(delta, part).detach() for name, delta in adapters.items() for part in "AB"}


def _key(name: str, part: str) -> str:
    return f"{name}.{part}" if name else part


def load_adapter_tensors(adapters: dict[str, LoRADelta], tensors: dict[str, Tensor], what: str) -> None:
    """Copy stored ``A``/``B`` into ``adapters``; ValueError naming ``what`` when they do not match."""
    expected = {_key(n, p): tuple(getattr(d, p).shape) for n, d in adapters.items() for p in "AB"}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        diff = sorted(set(expected) ^ set(got)) or [k for k in expected if expected[k] != got[k]]
        raise ValueError(f"{what}: stored adapters do not match the backbone's layers (e.g. {diff[:2]})")
    with torch.no_grad():
        for name, delta in adapters.items():
            delta.A.copy_(tensors[_key(name, "A")])
            delta.B.copy_(tensors[_key(name, "B")])
