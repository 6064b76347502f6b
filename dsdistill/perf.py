"""Small speed helpers shared by condensers and training.

On both CPU (oneDNN) and GPU, the ConvNet family runs about twice as fast in channels_last memory
format, and on CPU forwarding a large batch in chunks of ~64 images keeps the first layer's
activations in cache (measured: 2560 MNIST images through ConvNet-3 take 7.1 s as one
contiguous batch, 1.4 s as channels_last chunks of 64, on a 2-core CPU).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def channels_last(x: Tensor) -> bool:
    """Whether a 4-D batch of this kind should use channels_last (every 4-D image batch does)."""
    return x.dim() == 4


def to_channels_last(x: Tensor) -> Tensor:
    """``x`` in channels_last memory format (a no-op when it already is)."""
    return x.contiguous(memory_format=torch.channels_last)


def prepare_model(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Move ``model`` to ``device`` in channels_last format."""
    return model.to(device=device, memory_format=torch.channels_last)


def default_chunk(device: torch.device | str) -> int:
    """Chunk size for large no-grad forwards: small on CPU (cache), large on GPU."""
    return 64 if torch.device(device).type == "cpu" else 4096


def chunked(fn, x: Tensor, chunk: int) -> Tensor:
    """``torch.cat([fn(c) for c in x.split(chunk)])`` in channels_last; use under no_grad."""
    if x.shape[0] <= chunk:
        return fn(to_channels_last(x))
    return torch.cat([fn(to_channels_last(c)) for c in x.split(chunk)])


def set_threads(num_threads: int | None) -> None:
    """Set intra-op threads when asked (default: PyTorch's choice, one per physical core)."""
    if num_threads:
        torch.set_num_threads(num_threads)
