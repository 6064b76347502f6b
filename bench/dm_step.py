"""Seconds per DM iteration (MNIST, IPC 10, 256 real images per class) and two ratios measured in
the same run:

* overhead = full DM iteration / bare compute of the same step (the real batches' no-grad forward
  plus the synthetic batch's forward and backward through the same network, same memory format and
  chunking). Everything else an iteration does (network init, sampling, DSA, optimiser, guards)
  is overhead. Target <= 1.3.
* speedup = a reference-style step in plain PyTorch (DatasetCondensation main_DM.py: a loop over
  classes, contiguous NCHW tensors, one forward per class) / our full DM iteration.

Usage: python bench/dm_step.py [--iterations 10] [--ipc 10] [--json bench/results/dm_step.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dsdistill.augment import DSA, strategy_for
from dsdistill.data import load_real
from dsdistill.methods.dm import DM
from dsdistill.models import build_model
from dsdistill.perf import chunked, default_chunk, prepare_model, to_channels_last, tune_allocator


def time_dm(real, ipc: int, iterations: int) -> float:
    """Seconds per iteration of the real DM condenser (1 warm-up iteration excluded)."""
    DM.from_settings(real.name, ipc, {"iterations": 1}).condense(real, ipc, progress=False)
    start = time.perf_counter()
    DM.from_settings(real.name, ipc, {"iterations": iterations}).condense(real, ipc, progress=False)
    total = time.perf_counter() - start
    start = time.perf_counter()
    DM.from_settings(real.name, ipc, {"iterations": 1}).condense(real, ipc, progress=False)
    setup = time.perf_counter() - start  # one iteration + fixed setup; subtract the fixed part
    return (total - max(0.0, setup - total / iterations)) / iterations


def time_bare(real, ipc: int, iterations: int) -> float:
    """Forward of K*256 real images (no grad) + forward/backward of K*ipc synthetic images."""
    K, shape, chunk = real.num_classes, real.image_shape, default_chunk("cpu")
    net = prepare_model(build_model("convnet", K, shape, seed=0), "cpu")
    for p in net.parameters():
        p.requires_grad_(False)
    real_batch = real.train_images[: K * 256].clone()
    syn = real.train_images[: K * ipc].clone().requires_grad_(True)
    times = []
    for _ in range(iterations + 1):
        start = time.perf_counter()
        with torch.no_grad():
            mu_real = chunked(net.embed, real_batch, chunk).view(K, 256, -1).mean(1)
        loss = (mu_real - net.embed(to_channels_last(syn)).view(K, ipc, -1).mean(1)).pow(2).sum()
        loss.backward()
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / iterations


def time_reference_style(real, ipc: int, iterations: int) -> float:
    """Plain-PyTorch step shaped like main_DM.py: per-class loop, NCHW, per-class DSA."""
    K, shape = real.num_classes, real.image_shape
    dsa = DSA(strategy_for(real.name))
    syn = real.train_images[: K * ipc].clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=1.0, momentum=0.5)
    times = []
    for i in range(iterations + 1):
        start = time.perf_counter()
        net = build_model("convnet", K, shape, seed=i)
        for p in net.parameters():
            p.requires_grad_(False)
        loss = torch.tensor(0.0)
        for c in range(K):
            img_real = real.sample(c, 256)
            img_syn = syn[c * ipc:(c + 1) * ipc]
            img_real, img_syn = dsa.siamese(img_real, img_syn)
            loss = loss + (net.embed(img_real).mean(0) - net.embed(img_syn).mean(0)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--json", default="bench/results/dm_step.json")
    parser.add_argument("--no-malloc-tuning", action="store_true", help="measure without tune_allocator()")
    args = parser.parse_args()
    tuned = False if args.no_malloc_tuning else tune_allocator()
    real = load_real("mnist")
    dm = time_dm(real, args.ipc, args.iterations)
    bare = time_bare(real, args.ipc, args.iterations)
    ref = time_reference_style(real, args.ipc, args.iterations)
    result = {"dataset": "mnist", "ipc": args.ipc, "batch_real": 256, "iterations_timed": args.iterations,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "malloc_tuned": tuned,
              "dm_seconds_per_iteration": round(dm, 4), "bare_compute_seconds": round(bare, 4),
              "reference_style_seconds": round(ref, 4), "overhead_ratio": round(dm / bare, 3),
              "speedup_vs_reference_style": round(ref / dm, 3)}
    print(json.dumps(result, indent=2))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    from dsdistill.io import atomic_write_json  # a benchmark result file is replaced whole (bench re-runs)

    atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
