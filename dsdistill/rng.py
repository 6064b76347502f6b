"""Explicit random number generators, one per component, all derived from one run seed.

The global torch RNG is never reseeded. ``Seeds(seed).generator("init")`` returns a CPU
``torch.Generator`` whose seed is a stable hash of (run seed, component name), so adding a new
component never shifts the stream of another.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *names: object) -> int:
    """A 63-bit seed from ``seed`` and any labels (stable across runs and platforms)."""
    text = ":".join([str(int(seed)), *map(str, names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def make_generator(seed: int, *names: object) -> torch.Generator:
    """A CPU generator seeded with ``derive_seed(seed, *names)``."""
    return torch.Generator().manual_seed(derive_seed(seed, *names))


def next_seed(generator: torch.Generator) -> int:
    """Draw a fresh 62-bit integer seed from ``generator`` (for per-iteration networks)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())
