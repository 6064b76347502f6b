"""Splitting embarrassingly parallel work across processes launched by ``torchrun``.

Under ``torchrun --nproc_per_node K -m dsdistill ...`` (or multi-node with the usual rendezvous
flags) every process runs the same command; ``shard`` gives each rank its slice of the work items,
``gather`` collects the per-rank results on every rank, and only rank 0 writes files and shows
progress bars. Without torchrun (no ``WORLD_SIZE`` in the environment) everything degrades to a
single process with no ``torch.distributed`` at all. The backend is gloo on CPU and nccl on GPU.
"""

from __future__ import annotations

import os
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def launched() -> bool:
    """True when started by torchrun (or any launcher that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "cpu") -> None:
    """Initialise the default process group once, if launched by torchrun."""
    if launched() and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files and shows progress."""
    return rank() == 0


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items`` (round-robin: ``items[rank::world]``)."""
    return list(items[rank()::world_size()])


def gather(local: list[Any]) -> list[Any]:
    """Concatenate every rank's ``local`` list, in rank order, on all ranks."""
    if world_size() == 1:
        return list(local)
    parts: list[list[Any]] = [None] * world_size()  # type: ignore[list-item]
    dist.all_gather_object(parts, local)
    return [item for part in parts for item in part]


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
