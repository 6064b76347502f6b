"""Training one expert: the epoch loop, the recipe's step, snapshots and exact resume.

The loop is the one of :func:`dsdistill.train.train_classifier` (shuffle with an explicit
generator, augment, step) written out here because experts need what that loop does not offer:
a GSAM closure step, the AST loss scale and gradient penalty, a snapshot after every epoch and
a checkpoint that resumes at any batch boundary bitwise. Evaluation reuses :func:`dsdistill.train.accuracy`.

Randomness: the initial weights come from ``derive_seed(seed, "expert", i, "init")`` and epoch
``e`` shuffles and augments with ``make_generator(seed, "expert", i, "epoch", e)``, so an
expert depends only on (seed, i): not on the number of processes, not on which rank trains it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsdistill.augment import DSA, strategy_for
from dsdistill.condenser import Checkpointer, Interrupted
from dsdistill.data.real import RealData
from dsdistill.errors import ConfigError, NumericalError
from dsdistill.experts.gsam import GSAM
from dsdistill.experts.params import flatten_params, param_spec
from dsdistill.experts.recipes import ExpertRecipe
from dsdistill.models import build_model
from dsdistill.perf import prepare_model, to_channels_last
from dsdistill.rng import derive_seed, make_generator
from dsdistill.train import accuracy

__all__ = ["ExpertJob", "train_expert", "gradient_penalty"]
GP_CHUNK = 64  # images per double-backward pass of AST's gradient penalty (peak memory, not the result)


@dataclass
class ExpertJob:
    """Everything that determines one expert (its checkpoint must match it to be resumed)."""

    index: int
    seed: int
    recipe: ExpertRecipe
    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 50
    keep_epochs: int | None = None  # store epochs 0..keep_epochs (None: all)

    @property
    def expert_seed(self) -> int:
        return derive_seed(self.seed, "expert", self.index)

    def stored(self) -> list[int]:
        last = self.epochs if self.keep_epochs is None else min(self.keep_epochs, self.epochs)
        return list(range(0, last + 1))

    def key(self, real: RealData) -> str:
        return json.dumps({"job": asdict(self), "dataset": real.name, "space": real.space,
                           "fingerprint": real.fingerprint, "n": int(real.train_images.shape[0])},
                          sort_keys=True, default=str)


def gradient_penalty(model: nn.Module, x: Tensor) -> Tensor:
    """AST's penalty ``mean((||d sum F(x) / dx||_2 - 1)^2)``, the norm over the channel axis
    (one norm per pixel, as in the reference ``epoch_gp``), differentiable in the weights."""
    xg = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(to_channels_last(xg)).sum(), xg, create_graph=True)
    return ((torch.linalg.vector_norm(grad, dim=1) - 1) ** 2).mean()


def _optimizer(recipe: ExpertRecipe, model: nn.Module) -> torch.optim.Optimizer:
    if recipe.gsam:
        return GSAM(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                    rho=recipe.gsam_rho, alpha=recipe.gsam_alpha, adaptive=recipe.gsam_adaptive, model=model)
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay)


def train_expert(job: ExpertJob, real: RealData, *, device: str = "cpu", checkpoint: Checkpointer | None = None,
                 on_epoch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train expert ``job.index`` and return its trajectory and record.

    Args:
        job: The expert's settings.
        real: Training data (``train_*`` is trained on; ``val_*`` and ``test_*`` are measured at the end).
        device: Where to train.
        checkpoint: If given, state is saved every ``checkpoint.every`` epochs (and on SIGINT/SIGTERM,
            at the next batch, then :class:`~dsdistill.condenser.Interrupted` is raised); with
            ``checkpoint.resume`` a matching checkpoint is continued bitwise.
        on_epoch: Called with the epoch index after each finished epoch.

    Returns:
        ``snapshots`` ``(T, P)`` float32 (CPU), ``epochs`` (stored epoch numbers), ``param_names``,
        ``param_shapes``, ``test_accuracy``, ``val_accuracy``, ``history`` (per-epoch train loss and
        accuracy), ``epoch_seconds``.
    """
    recipe = job.recipe
    if real.val_images.shape[0] == 0:
        raise ConfigError("experts need a validation split (load the data with val_fraction > 0)")
    model = prepare_model(build_model(job.model, real.num_classes, real.image_shape,
                                      seed=derive_seed(job.seed, "expert", job.index, "init"), **job.model_kwargs),
                          device)
    model.train()
    names, shapes = param_spec(model)
    opt = _optimizer(recipe, model)
    dsa = DSA(strategy_for(real.name), align_corners=True) if recipe.dsa else None
    images, labels = real.train_images.to(device), real.train_labels.to(device)
    n, keep = images.shape[0], set(job.stored())
    snaps: list[Tensor] = [flatten_params(model).cpu()] if 0 in keep else []
    hist: dict[str, list[float]] = {"train_loss": [], "train_accuracy": [], "epoch_seconds": []}
    epoch, pos, order, gen_state, sums = 0, 0, None, None, [0.0, 0.0]
    key = job.key(real)
    state = checkpoint.load() if checkpoint is not None else None
    if state is not None:
        if state.get("key") != key:
            raise ConfigError(f"checkpoint {checkpoint.path} belongs to other settings; rerun with --overwrite "
                              f"to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        snaps = list(state["snapshots"].unbind(0)) if state["snapshots"].numel() else []
        hist = {k: list(v) for k, v in state["history"].items()}
        epoch, pos, order, gen_state, sums = (state["epoch"], state["pos"], state["order"], state["gen_state"],
                                              list(state["sums"]))

    def save() -> None:
        checkpoint.save({"key": key, "model": model.state_dict(), "optimizer": opt.state_dict(),
                         "snapshots": torch.stack(snaps) if snaps else torch.zeros(0), "history": hist,
                         "epoch": epoch, "pos": pos, "order": order, "gen_state": gen_state, "sums": sums})

    decay_after = recipe.decay_after(job.epochs)
    guard = checkpoint.guard() if checkpoint is not None else _Null()
    with guard:
        while epoch < job.epochs:
            started = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = recipe.lr_at(epoch, job.epochs)
            gen = make_generator(job.seed, "expert", job.index, "epoch", epoch)
            if order is None:
                order = torch.randperm(n, generator=gen)
                if decay_after is not None and epoch == decay_after + 1 and recipe.reset_momentum_at_decay:
                    opt.state.clear()  # the reference builds a new optimiser when the lr changes
            else:
                gen.set_state(gen_state)
            batches = order.split(recipe.batch_size)
            scale = recipe.loss_scale(epoch)
            while pos < len(batches):
                if checkpoint is not None and checkpoint.stop_requested:
                    gen_state = gen.get_state()
                    save()
                    raise Interrupted(str(checkpoint.path))
                idx = batches[pos].to(device)
                x, y = images[idx], labels[idx]
                xa = to_channels_last(dsa(x, gen) if dsa is not None else x)
                out: list[Tensor] = []

                def closure() -> Tensor:
                    opt.zero_grad(set_to_none=True)
                    logits = model(xa)
                    if not out:
                        out.append(logits.detach())
                    loss = F.cross_entropy(logits, y) * scale
                    loss.backward()
                    if recipe.gp_weight:
                        # The penalty is a mean over samples: backpropagating it chunk by chunk adds up
                        # to the same gradient with a quarter of the double-backward memory at batch 256.
                        for chunk in x.split(GP_CHUNK):
                            part = recipe.gp_weight * gradient_penalty(model, chunk) * (len(chunk) / len(x))
                            part.backward()
                            loss = loss.detach() + part.detach()
                    return loss

                if recipe.gsam:
                    loss = opt.step(closure)
                else:
                    loss = closure()
                    opt.step()
                sums[0] += float(loss.detach()) * len(idx)
                sums[1] += float((out[0].argmax(1) == y).sum())
                pos += 1
            if not torch.isfinite(torch.tensor(sums[0])):
                raise NumericalError(f"expert {job.index} diverged in epoch {epoch} (non-finite loss); "
                                     f"lower the expert lr (--lr)")
            hist["train_loss"].append(sums[0] / n)
            hist["train_accuracy"].append(sums[1] / n)
            hist["epoch_seconds"].append(time.perf_counter() - started)
            epoch, pos, order, gen_state, sums = epoch + 1, 0, None, None, [0.0, 0.0]
            if epoch in keep:
                snaps.append(flatten_params(model).cpu())
            if on_epoch is not None:
                on_epoch(epoch - 1)
            if checkpoint is not None and epoch < job.epochs and (checkpoint.due(epoch) or checkpoint.stop_requested):
                save()
                if checkpoint.stop_requested:
                    raise Interrupted(str(checkpoint.path))
    test_acc = accuracy(model, real.test_images.to(device), real.test_labels)
    val_acc = accuracy(model, real.val_images.to(device), real.val_labels)
    return {"snapshots": torch.stack(snaps), "epochs": sorted(keep), "param_names": names, "param_shapes": shapes,
            "test_accuracy": test_acc, "val_accuracy": val_acc,
            "history": {k: v for k, v in hist.items() if k != "epoch_seconds"},
            "epoch_seconds": hist["epoch_seconds"]}


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None
