"""``build_model``: the one entry point other modules use to instantiate a network by name.

Every entry in :data:`dsdistill.registry.MODELS` is a callable
``(channel, num_classes, im_size, **kwargs) -> nn.Module`` whose result has ``forward(x)`` ->
logits (N, num_classes), ``embed(x)`` -> penultimate features (N, feature_dim) and an int
``feature_dim``.

Example:
    >>> import torch
    >>> import dsdistill.models  # registers every model
    >>> net = build_model("convnet", 10, (1, 28, 28), seed=0)
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dsdistill.errors import ConfigError
from dsdistill.registry import MODELS


def build_model(
    name: str,
    num_classes: int,
    in_shape: tuple[int, int, int],
    *,
    seed: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Instantiate the registered model ``name``.

    Args:
        name: Registered model name ("convnet", "convnetd4", "resnet18_bn", ...; case and
            ``-``/``_`` insensitive).
        num_classes: Number of output logits.
        in_shape: Input shape (C, H, W) of one image.
        seed: If given, parameters are initialised from this seed, identically on every call,
            without touching the global RNG state. If None, the global RNG is used as usual.
        **kwargs: Passed to the model constructor (e.g. ``width``, ``depth``, ``norm``).

    Returns:
        The model (on CPU, float32, in train mode).

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid names).
        ConfigError: ``in_shape`` is not (C, H, W) or a constructor option is invalid.
    """
    factory = MODELS.get(name)
    if len(in_shape) != 3:
        raise ConfigError(f"in_shape must be (C, H, W), got {tuple(in_shape)}")
    channel, h, w = (int(v) for v in in_shape)
    try:
        if seed is None:
            return factory(channel, num_classes, (h, w), **kwargs)
        # Only the CPU generator is forked and seeded (torch.manual_seed would also reseed CUDA).
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(seed))
            return factory(channel, num_classes, (h, w), **kwargs)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise ConfigError(f"invalid option for model '{name}': {exc}") from exc
