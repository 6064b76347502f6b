"""Flat parameter vectors: the representation expert trajectories are stored and matched in.

A network's parameters are flattened in ``model.named_parameters()`` order, each tensor in its
logical (row-major, NCHW) element order, whatever its memory format (``reshape`` follows logical
indexing, so a channels_last convolution weight flattens exactly like a contiguous one).

Example:
    >>> import torch
    >>> net = torch.nn.Linear(3, 2)
    >>> flat = flatten_params(net)                 # (8,) float32
    >>> names, shapes = param_spec(net)
    >>> params = unflatten_params(flat, names, shapes)
    >>> torch.func.functional_call(net, params, (torch.zeros(1, 3),)).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["flatten_params", "unflatten_params", "param_spec", "load_flat_"]


def param_spec(model: nn.Module) -> tuple[list[str], list[tuple[int, ...]]]:
    """Names and shapes of ``model``'s parameters, in ``named_parameters()`` order."""
    names, shapes = [], []
    for name, p in model.named_parameters():
        names.append(name)
        shapes.append(tuple(int(s) for s in p.shape))
    return names, shapes


def flatten_params(model: nn.Module) -> Tensor:
    """``(P,)`` float32 concatenation of ``p.reshape(-1)`` over ``model.named_parameters()``.

    The result is detached and lives on the parameters' device.
    """
    with torch.no_grad():
        parts = [p.detach().reshape(-1).float() for _, p in model.named_parameters()]
    if not parts:
        return torch.zeros(0)
    return torch.cat(parts)


def unflatten_params(flat: Tensor, names: Sequence[str], shapes: Sequence[Sequence[int]]) -> dict[str, Tensor]:
    """Split a ``(P,)`` vector into named views of the given shapes (gradients flow to ``flat``).

    Args:
        flat: ``(P,)`` tensor with ``P == sum(prod(shape))``.
        names: Parameter names (``named_parameters()`` order).
        shapes: One shape per name.

    Returns:
        ``{name: view}`` usable as the parameter dict of :func:`torch.func.functional_call`.

    Raises:
        ValueError: ``flat`` is not 1-D of the right length, or names and shapes differ in count.
    """
    if len(names) != len(shapes):
        raise ValueError(f"{len(names)} names but {len(shapes)} shapes")
    sizes = [math.prod(s) for s in shapes]
    if flat.dim() != 1 or flat.shape[0] != sum(sizes):
        raise ValueError(f"flat parameters must have shape ({sum(sizes)},), got {tuple(flat.shape)}")
    return {name: part.view(*shape) for name, part, shape in zip(names, flat.split(sizes), shapes)}


def load_flat_(model: nn.Module, flat: Tensor) -> nn.Module:
    """Copy a ``(P,)`` vector into ``model``'s parameters in place (keeps their memory format)."""
    names, shapes = param_spec(model)
    views = unflatten_params(flat.detach(), names, shapes)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(views[name].to(dtype=p.dtype, device=p.device))
    return model
