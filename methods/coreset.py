"""Coreset baselines: random, herding and k-center selection of real images per class.

Herding and k-center select on embeddings (the 2048-d penultimate features of ConvNet-3) of a
network trained *briefly* on a random subset of the real training split (``embed_epochs`` epochs
on ``embed_train_size`` images, SGD lr 0.01 momentum 0.9, no augmentation). This follows the DC
paper's coreset baselines, which select in the feature space of a trained ConvNet; a brief run
keeps the baseline cheap on CPU while giving features much more class-structured than a random
network's (the choice is recorded in the file's provenance).

* herding (Welling, 2009): greedily add the image that keeps the running mean of the selection
  closest to the class mean;
* k-center (greedy farthest-point; Sener & Savarese, 2018): start from the image nearest the class
  mean, then repeatedly add the image farthest from the current selection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from dsdistill.condenser import Condenser, check_ipc, package
from dsdistill.data.real import RealData
from dsdistill.models import build_model
from dsdistill.perf import chunked, default_chunk, prepare_model
from dsdistill.registry import CONDENSERS
from dsdistill.rng import make_generator, next_seed
from dsdistill.synthetic import SyntheticSet
from dsdistill.train import TrainSettings, train_classifier


@dataclass
class RandomConfig:
    """Random selection has no settings beyond the seed."""


@dataclass
class EmbeddingSelectionConfig:
    """Settings of herding / k-center.

    Attributes:
        model: Feature extractor architecture.
        embed_epochs: Training epochs of the feature extractor.
        embed_train_size: Random real training images it is trained on.
        candidates_per_class: Consider at most this many random images per class (0 = all).
    """

    model: str = "convnet"
    embed_epochs: int = 3
    embed_train_size: int = 5000
    candidates_per_class: int = 0


@CONDENSERS.register("random")
class RandomSelection(Condenser):
    """``ipc`` distinct random real training images per class."""

    name = "random"
    Config = RandomConfig

    def condense(self, real: RealData, ipc: int, *, seed: int = 0, device: str = "cpu",
                 progress: bool = True, checkpoint=None) -> SyntheticSet:
        started = time.time()
        check_ipc(real, ipc)
        idx = real.sample_indices(ipc, make_generator(seed, "random", "select")).reshape(-1)
        return package(self, real, real.train_images[idx], ipc, seed=seed, device=device, started=started,
                       extra={"selected_indices": idx.tolist()})


def herding(features: Tensor, k: int) -> Tensor:
    """Indices of ``k`` rows of ``(n, d)`` ``features`` chosen by herding, in selection order."""
    mu = features.mean(0)
    selected: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(features.shape[0], dtype=torch.bool, device=features.device)
    for t in range(1, k + 1):
        # distance of the mean after adding each candidate to the class mean
        gap = (mu - (running + features) / t).pow(2).sum(1)
        gap[~available] = float("inf")
        i = int(gap.argmin())
        selected.append(i)
        running += features[i]
        available[i] = False
    return torch.tensor(selected, dtype=torch.int64)


def k_center(features: Tensor, k: int) -> Tensor:
    """Indices of ``k`` rows of ``(n, d)`` ``features`` by greedy farthest-point selection."""
    first = int((features - features.mean(0)).pow(2).sum(1).argmin())
    selected = [first]
    min_dist = (features - features[first]).pow(2).sum(1)
    for _ in range(k - 1):
        i = int(min_dist.argmax())
        selected.append(i)
        min_dist = torch.minimum(min_dist, (features - features[i]).pow(2).sum(1))
    return torch.tensor(selected, dtype=torch.int64)


class _EmbeddingSelection(Condenser):
    Config = EmbeddingSelectionConfig
    select = staticmethod(herding)

    def condense(self, real: RealData, ipc: int, *, seed: int = 0, device: str = "cpu",
                 progress: bool = True, checkpoint=None) -> SyntheticSet:
        cfg, started = self.config, time.time()
        check_ipc(real, ipc)
        gen = make_generator(seed, self.name, "embed")
        net = prepare_model(build_model(cfg.model, real.num_classes, real.image_shape, seed=next_seed(gen)), device)
        subset = torch.randperm(len(real.train_labels), generator=gen)[: cfg.embed_train_size]
        with tqdm(total=cfg.embed_epochs, desc=f"{self.name}: feature extractor", unit="ep",
                  disable=not progress or None) as bar:
            train_classifier(net, real.train_images[subset].to(device), real.train_labels[subset].to(device),
                             TrainSettings(epochs=cfg.embed_epochs, decay_at=()), generator=gen,
                             progress=lambda _: bar.update(1))
        net.eval()
        chosen = []
        for c in range(real.num_classes):  # selection is inherently sequential per class
            idx = real.indices_of(c)
            if cfg.candidates_per_class and len(idx) > cfg.candidates_per_class:
                idx = idx[torch.randperm(len(idx), generator=gen)[: cfg.candidates_per_class]].sort().values
            with torch.no_grad():
                feats = chunked(net.embed, real.train_images[idx].to(device), default_chunk(device))
            chosen.append(idx[self.select(feats, ipc).cpu()])
        idx = torch.cat(chosen)
        return package(self, real, real.train_images[idx], ipc, seed=seed, device=device, started=started,
                       extra={"selected_indices": idx.tolist(),
                              "feature_extractor": f"{cfg.model} trained {cfg.embed_epochs} epochs on "
                                                   f"{len(subset)} random real training images"})


@CONDENSERS.register("herding")
class Herding(_EmbeddingSelection):
    """Herding selection on trained-ConvNet features."""

    name = "herding"
    select = staticmethod(herding)


@CONDENSERS.register("k-center")
class KCenter(_EmbeddingSelection):
    """Greedy k-center selection on trained-ConvNet features."""

    name = "k-center"
    select = staticmethod(k_center)
