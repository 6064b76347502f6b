"""Training and scoring graph students: the loop, accuracy and ROC-AUC.

Randomness (initialisation, shuffling, dropout) comes from the run seed only; the global RNG is
forked for the duration of a run and restored afterwards.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from dsdistill.evaluators.graph_models import GraphStudent
from dsdistill.graphstore import GraphBatch, GraphStore


@dataclass(frozen=True)
class GraphTrainSettings:
    """Optimiser and schedule of one student.

    Attributes:
        epochs: Passes over the training graphs.
        lr: Adam learning rate.
        weight_decay: Adam L2 penalty.
        batch_size: Graphs per step.
        weight_by_support: Weight each sample's loss by its support (Mirage's disabled option); see
            :func:`settings_for` for when a set turns it on.
        min_steps: Train at least this many optimiser steps (more epochs on tiny sets), so a set of
            ten graphs is not judged after a hundred steps while the full data gets thousands.
    """

    epochs: int = 100
    lr: float = 0.001
    weight_decay: float = 5e-4
    batch_size: int = 32
    weight_by_support: bool = False
    min_steps: int = 500

    def epochs_for(self, num_graphs: int) -> int:
        """Epochs actually run on ``num_graphs`` training graphs (``epochs``, raised to reach ``min_steps``)."""
        per_epoch = max(1, math.ceil(num_graphs / self.batch_size))
        return max(self.epochs, math.ceil(self.min_steps / per_epoch))


def settings_for(syn, settings: GraphTrainSettings) -> GraphTrainSettings:
    """The training settings for set ``syn``: support weighting on when it holds shared itemsets.

    An itemset stored under two classes (:meth:`GraphSyntheticSet.has_shared_itemsets`) is the same
    input with two labels. Unweighted, the student is pushed to a 50/50 target on it whatever the
    data say; weighting every sample by its support makes the target the itemset's class frequency
    among the training graphs that contain it. Measured on DD (1-hop trees, 8 labels, overlap kept,
    validation split, one GIN seed): accuracy 41.5% (every graph called the minority class) unweighted
    vs 63.6% weighted at min support 0.15. Sets without shared itemsets keep ``settings`` unchanged
    (the official code never weights).
    """
    if settings.weight_by_support or not syn.has_shared_itemsets():
        return settings
    return dataclasses.replace(settings, weight_by_support=True)


def roc_auc(scores: Tensor, y: Tensor, num_classes: int) -> float:
    """ROC-AUC from ``(B, K)`` class scores: binary AUC of class 1, else macro one-vs-rest.

    Ties get average ranks (the Mann-Whitney statistic). Classes without positives or negatives are
    skipped; NaN when none is left.
    """
    cols = [1] if num_classes == 2 else range(num_classes)
    aucs = []
    for c in cols:
        pos = y == c
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        s = scores[:, c].double()
        order = torch.argsort(s)
        ranks = torch.empty_like(s)
        ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
        uniq, inverse = torch.unique(s, return_inverse=True)  # average ranks of ties
        mean_rank = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks)
        mean_rank /= torch.bincount(inverse, minlength=len(uniq)).double()
        ranks = mean_rank[inverse]
        aucs.append(float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)))
    return sum(aucs) / len(aucs) if aucs else float("nan")


class Scorer:
    """Scores a student on one real split held as a single pre-built batch.

    Args:
        store: The split.
        node_vocab: ``(V, F)`` node features by label id.
        num_classes: K.
    """

    def __init__(self, store: GraphStore, node_vocab: Tensor, num_classes: int) -> None:
        self.batch: GraphBatch = store.all()
        self.x = node_vocab[self.batch.node_label]
        self.num_classes = num_classes

    @torch.no_grad()
    def __call__(self, model: GraphStudent) -> tuple[float, float]:
        """``(accuracy, ROC-AUC)`` of ``model`` (eval mode, restored after)."""
        if self.batch.num_graphs == 0:
            return float("nan"), float("nan")
        was_training = model.training
        model.eval()
        b = self.batch
        logits = model(self.x, b.edge_index, b.batch, b.num_graphs, b.pool_mask, b.degree)
        model.train(was_training)
        acc = float((logits.argmax(1) == b.y).double().mean())
        return acc, roc_auc(torch.softmax(logits.double(), 1), b.y, self.num_classes)


def train_graph_student(model: GraphStudent, store: GraphStore, node_vocab: Tensor, settings: GraphTrainSettings,
                        *, seed: int, on_epoch: Callable[[int], None] | None = None) -> GraphStudent:
    """Train ``model`` on ``store`` with Adam and cross-entropy; return it.

    Args:
        model: A fresh student.
        store: Training graphs (forests pool their roots through ``store.pool_mask``).
        node_vocab: ``(V, F)`` node features by label id.
        settings: Optimiser and schedule.
        seed: Drives shuffling and dropout (the global RNG is forked and restored).
        on_epoch: Called after every epoch with the epoch number (1-based).
    """
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    gen = torch.Generator().manual_seed(int(seed))
    n = len(store)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed) ^ 0x5DEECE66D)  # dropout masks
        model.train()
        for epoch in range(1, settings.epochs_for(n) + 1):
            for idx in torch.randperm(n, generator=gen).split(settings.batch_size):
                b = store.batch(idx)
                logits = model(node_vocab[b.node_label], b.edge_index, b.batch, b.num_graphs, b.pool_mask,
                               b.degree)
                loss = F.cross_entropy(logits, b.y, reduction="none")
                if settings.weight_by_support and b.weight is not None:
                    loss = loss * (b.weight / b.weight.mean())
                opt.zero_grad(set_to_none=True)
                loss.mean().backward()
                opt.step()
            if on_epoch is not None:
                on_epoch(epoch)
    model.eval()
    return model
