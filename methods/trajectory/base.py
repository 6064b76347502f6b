"""The trajectory-matching loop shared by ``mtt``, ``ftd``, ``ast`` and ``datm`` (MATCHING.md 3.2).

Each iteration samples an expert and a start epoch, sets ``theta_0`` and ``theta*`` to the expert's
parameters at ``start`` and ``start + expert_epochs``, lets the student take ``syn_steps`` SGD steps
on the synthetic set from ``theta_0`` (:mod:`.unroll`), and steps the images and the learned
student lr on ``||theta_N - theta*||^2 / ||theta_0 - theta*||^2``.

The learned lr is stored as ``log_lr`` (it cannot become negative, MTT issue #16). Its gradient is
rescaled by ``1 / lr^2`` before the SGD step, so the update ``log_lr -= lr_lr * dL/dlr / lr`` moves the
lr by ``-lr_lr * dL/dlr`` to first order: the reference's step size (``lr_lr`` keeps its meaning),
applied multiplicatively. A step whose loss, images or lr is non-finite, or whose new lr leaves
``[min_syn_lr, max_syn_lr]``, is rolled back (images, lr, labels and the optimisers' momentum) and logged; five
in a row raise :class:`~dsdistill.errors.NumericalError`, so such an lr never reaches a file.

Differences from the reference shared by all four methods:
* the student is the network itself through ``torch.func.functional_call`` (no ReparamModule);
* ``--unroll checkpoint`` gives the same gradient with one step's graph alive, ``tesla`` is
  TESLA's first-order approximation (see :mod:`.unroll`);
* randomness comes from explicit generators (experts, start epochs, permutations, DSA);
* the start epoch is drawn from ``[min_start_epoch, max_start_epoch)`` (numpy ``randint``'s
  exclusive bound, as the reference); expert snapshots are read on demand, any expert uniformly.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from dsdistill.augment import DSA, strategy_for
from dsdistill.condenser import (Checkpointer, Condenser, check_ipc, checkpoint_boundary, guarded_step, package,
                                 signal_guard)
from dsdistill.data.real import RealData
from dsdistill.errors import ConfigError
from dsdistill.rng import make_generator
from dsdistill.synthetic import SyntheticSet

from .student import FunctionalStudent
from .unroll import MODES, Inner, make_plan, matching_loss, unroll

log = logging.getLogger(__name__)


@dataclass
class MTTConfig:
    """MTT hyperparameters (defaults: ``distill.py``; per dataset/IPC: :func:`mtt_recipe`).

    Attributes:
        experts: Directory of expert trajectories (``dsdistill experts --output DIR``).
        syn_steps: Student steps N per iteration.
        expert_epochs: Expert epochs M between ``theta_0`` and ``theta*``.
        min_start_epoch: Smallest start epoch.
        max_start_epoch: Start epochs are drawn from ``[min_start_epoch, max_start_epoch)``.
        lr_img: SGD lr of the images.
        lr_lr: SGD lr of the learned student lr (reference units, see the module docstring).
        lr_teacher: Initial student lr.
        momentum_img: Momentum of the image optimiser.
        momentum_lr: Momentum of the lr optimiser.
        batch_syn: Images per student step (0: all).
        iterations: Outer iterations.
        init: ``real`` or ``noise`` (``ast``: also ``representative``; ``datm``: also ``correct``).
        zca: The recipe's ZCA choice; the data must be in the experts' space either way.
        unroll: ``full``, ``checkpoint`` or ``tesla``.
        dsa: Augment every student step (unseeded DSA).
        dsa_strategy: DSA op groups; empty = the dataset's default.
        max_syn_lr: A learned lr above this counts as an explosion and is rolled back.
        min_syn_lr: A learned lr below this counts as a collapse and is rolled back: where the
            reference's additive step would turn the lr negative, the multiplicative one shrinks it
            towards 0 and the student would stop training (seen with AST's momentum student at a
            too-large ``lr_teacher``: 0.02 -> 8.5e-6 in 100 iterations).
    """

    experts: str = ""
    syn_steps: int = 20
    expert_epochs: int = 3
    min_start_epoch: int = 0
    max_start_epoch: int = 25
    lr_img: float = 1000.0
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01
    momentum_img: float = 0.5
    momentum_lr: float = 0.5
    batch_syn: int = 0
    iterations: int = 5000
    init: str = "real"
    zca: bool = False
    unroll: str = "full"
    dsa: bool = True
    dsa_strategy: str = ""
    max_syn_lr: float = 1.0
    min_syn_lr: float = 1e-4


# MATCHING.md 3.3 (DC-BENCH tm/readme, "provided by the author"; FTD Table 7 agrees except C10 IPC50
# lr_teacher). The MTT readme's CIFAR-10 IPC10 lr_img is a typo that makes syn_lr explode (MTT issue
# #31, confirmed by the author); we use 100, the value in DC-BENCH's table and FTD Table 7.
_MTT_TABLE = {
    ("cifar10", 1): dict(syn_steps=50, expert_epochs=2, max_start_epoch=2, lr_img=100, lr_lr=1e-7, lr_teacher=0.01, zca=True),
    ("cifar10", 10): dict(syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_img=100, lr_lr=1e-5, lr_teacher=0.001, zca=True),
    ("cifar10", 50): dict(syn_steps=30, expert_epochs=2, max_start_epoch=40, lr_img=1000, lr_lr=1e-5, lr_teacher=0.001, zca=False),
    ("cifar100", 1): dict(syn_steps=20, expert_epochs=3, max_start_epoch=20, lr_img=1000, lr_lr=1e-5, lr_teacher=0.01, zca=True),
    ("cifar100", 10): dict(syn_steps=20, expert_epochs=2, max_start_epoch=20, lr_img=1000, lr_lr=1e-5, lr_teacher=0.01, zca=False),
    ("cifar100", 50): dict(syn_steps=80, expert_epochs=2, max_start_epoch=40, lr_img=1000, lr_lr=1e-5, lr_teacher=0.01, batch_syn=125, zca=True),
    ("tinyimagenet", 1): dict(syn_steps=10, expert_epochs=2, max_start_epoch=10, lr_img=10000, lr_lr=1e-4, lr_teacher=0.01),
    ("tinyimagenet", 10): dict(syn_steps=20, expert_epochs=2, max_start_epoch=40, lr_img=10000, lr_lr=1e-4, lr_teacher=0.01, batch_syn=200),
    ("tinyimagenet", 50): dict(syn_steps=20, expert_epochs=2, max_start_epoch=40, lr_img=10000, lr_lr=1e-4, lr_teacher=0.01, batch_syn=300),
}
# No reference supports MNIST/FashionMNIST; we borrow CIFAR-10's rows (without ZCA) as a starting point.
_BORROWED = {"mnist": "cifar10", "fashionmnist": "cifar10"}


def dataset_key(dataset: str) -> str:
    """Catalogue name -> table key (``"CIFAR-10"`` -> ``"cifar10"``, ``"tiny-imagenet"`` -> ``"tinyimagenet"``)."""
    return "".join(ch for ch in dataset.lower() if ch.isalnum())


def table_row(table: dict, dataset: str, ipc: int) -> dict:
    """The row of ``table`` for the dataset (or the one it borrows) at the nearest IPC not above ``ipc``."""
    key = dataset_key(dataset)
    key = _BORROWED.get(key, key)
    rows = sorted(i for (d, i) in table if d == key)
    if not rows:
        return {}
    fit = [i for i in rows if i <= ipc] or rows[:1]
    row = dict(table[(key, fit[-1])])
    if dataset_key(dataset) != key:
        row["zca"] = False
    return row


def mtt_recipe(dataset: str, ipc: int) -> dict:
    """MTT's per-dataset/IPC settings (MATCHING.md 3.3, lr_img typo corrected)."""
    return table_row(_MTT_TABLE, dataset, ipc)


def initial_real_or_noise(real: RealData, ipc: int, init: str, generator: torch.Generator) -> Tensor:
    """``(K * ipc, C, H, W)`` random distinct real images per class, or N(0, 1) noise."""
    if init == "real":
        return real.train_images[real.sample_indices(ipc, generator).reshape(-1)].clone()
    if init == "noise":
        return torch.randn((real.num_classes * ipc, *real.image_shape), generator=generator)
    raise ConfigError(f"init must be 'real' or 'noise' for this method, got {init!r}")


class TrajectoryMatching(Condenser):
    """MTT's loop with hooks the variants override (init, start sampling, theta_0, loss, EMA)."""

    protocol = "tm"
    expected_recipe = "mtt"
    momentum = 0.0  # student momentum (AST: 0.9)

    # ---- hooks -------------------------------------------------------------------------------
    def initial_images(self, real: RealData, ipc: int, store, student, gen: torch.Generator, device) -> Tensor:
        return initial_real_or_noise(real, ipc, self.config.init, gen)

    def initial_soft(self, real, images, labels, store, student, device) -> Tensor | None:
        return None

    def start_range(self, iteration: int) -> tuple[int, int]:
        return self.config.min_start_epoch, self.config.max_start_epoch

    def prepare_theta0(self, theta0: Tensor, student: FunctionalStudent, gen: torch.Generator) -> Tensor:
        return theta0

    def inner_weight(self, start: int) -> float:
        return 1.0

    def middle_epochs(self) -> list[int]:
        """Expert epochs k (0 < k < expert_epochs) matched at intermediate student steps."""
        return []

    def middle_weight(self, k: int) -> float:
        return 1.0

    def accept(self, loss: float) -> bool:
        return True

    def after_update(self, images: Tensor, state: dict) -> None:
        pass

    def final_images(self, images: Tensor, state: dict) -> Tensor:
        return images

    # ---- checks ------------------------------------------------------------------------------
    def open_store(self, real: RealData):
        from dsdistill.experts import ExpertStore

        cfg = self.config
        if not cfg.experts:
            raise ConfigError(f"{self.name} needs expert trajectories: pass --param experts=DIR "
                              f"(create them with `dsdistill experts --recipe {self.expected_recipe} --output DIR`)")
        if cfg.unroll not in MODES:
            raise ConfigError(f"unroll must be one of {', '.join(MODES)}, got {cfg.unroll!r}")
        for key in ("syn_steps", "expert_epochs", "iterations"):
            if getattr(cfg, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(cfg, key)}")
        if cfg.min_syn_lr <= 0 or not cfg.min_syn_lr <= cfg.lr_teacher <= cfg.max_syn_lr:
            raise ConfigError(f"lr_teacher must be in [min_syn_lr={cfg.min_syn_lr}, max_syn_lr={cfg.max_syn_lr}] "
                              f"with min_syn_lr > 0, got {cfg.lr_teacher}")
        store = ExpertStore.open(cfg.experts)
        if store.dataset != real.name:
            raise ConfigError(f"the experts in {cfg.experts} were trained on {store.dataset!r}, not {real.name!r}")
        if store.space != real.space:
            hint = "add --zca" if store.space == "zca" else "drop --zca"
            raise ConfigError(f"the experts in {cfg.experts} were trained in {store.space} space but the data is "
                              f"in {real.space} space; {hint}")
        if cfg.zca != (real.space == "zca"):
            log.warning("the %s recipe for this setting %s ZCA; condensing in %s space as the experts were trained",
                        self.name, "uses" if cfg.zca else "does not use", real.space)
        if store.num_classes != real.num_classes or tuple(store.image_shape) != tuple(real.image_shape):
            raise ConfigError(f"the experts in {cfg.experts} expect {store.num_classes} classes of "
                              f"{tuple(store.image_shape)}, the data has {real.num_classes} of {real.image_shape}")
        if store.recipe != self.expected_recipe:
            log.warning("%s is meant for %s experts; %s holds %s experts", self.name, self.expected_recipe,
                        cfg.experts, store.recipe)
        top = max(self.start_range(cfg.iterations)[1], self.start_range(0)[1])
        if not 0 <= cfg.min_start_epoch < top:
            raise ConfigError(f"need 0 <= min_start_epoch < max_start_epoch, got {cfg.min_start_epoch}, {top}")
        needed = set(range(cfg.min_start_epoch, top - 1 + cfg.expert_epochs + 1))
        missing = sorted(needed - set(store.stored_epochs))
        if missing:
            raise ConfigError(f"max_start_epoch {top} + expert_epochs {cfg.expert_epochs} needs expert epochs "
                              f"{min(needed)}..{max(needed)}, but {cfg.experts} lacks {missing[:5]}"
                              f"{'...' if len(missing) > 5 else ''} (experts trained for {store.epochs} epochs)")
        return store

    # ---- the loop ----------------------------------------------------------------------------
    def condense(self, real: RealData, ipc: int, *, seed: int = 0, device: str = "cpu",
                 progress: bool = True, checkpoint: Checkpointer | None = None) -> SyntheticSet:
        cfg, started = self.config, time.time()
        check_ipc(real, ipc)
        store = self.open_store(real)
        student = FunctionalStudent(store.build_model().to(device))
        K, shape = real.num_classes, real.image_shape
        names = ("init", "expert", "inner", "perturb")
        g_init, g_expert, g_inner, g_perturb = (make_generator(seed, self.name, n) for n in names)
        labels = torch.arange(K).repeat_interleave(ipc).to(device)
        images = self.initial_images(real, ipc, store, student, g_init, device).to(device).requires_grad_(True)
        soft = self.initial_soft(real, images.detach(), labels, store, student, device)
        if soft is not None:
            soft = soft.to(device).requires_grad_(True)
        log_lr = torch.tensor(math.log(cfg.lr_teacher), device=device, requires_grad=True)
        opt_img = torch.optim.SGD([images], lr=cfg.lr_img, momentum=cfg.momentum_img)
        opt_lr = torch.optim.SGD([log_lr], lr=cfg.lr_lr, momentum=cfg.momentum_lr)
        opts = [opt_img, opt_lr] + ([self.label_optimizer(soft)] if soft is not None else [])
        params = [images, log_lr] + ([soft] if soft is not None else [])
        dsa = DSA(cfg.dsa_strategy or strategy_for(real.name), align_corners=True) if cfg.dsa else None
        gens = (g_init, g_expert, g_inner, g_perturb)
        state: dict = {"ema": None}
        start_it, failures, losses, skipped, rolled_back = 0, [], [], 0, 0

        ck = checkpoint.load() if checkpoint else None
        if ck is not None:
            with torch.no_grad():
                for p, v in zip(params, ck["params"]):
                    p.copy_(v)
            for o, s in zip(opts, ck["optimizers"]):
                o.load_state_dict(s)
            for g, s in zip(gens, ck["generators"]):
                g.set_state(s)
            state["ema"] = None if ck["ema"] is None else ck["ema"].to(device)
            start_it, losses, skipped = int(ck["iteration"]), list(ck["losses"]), int(ck["skipped"])
            rolled_back = int(ck["rolled_back"])
            if int(ck.get("num_experts", store.num_experts)) != store.num_experts:
                log.warning("resuming with %d experts in %s; the checkpoint was made with %d", store.num_experts,
                            cfg.experts, int(ck["num_experts"]))

        def save(iteration: int) -> None:
            checkpoint.save({"params": [p.detach().cpu() for p in params], "optimizers": [o.state_dict() for o in opts],
                             "generators": [g.get_state() for g in gens], "iteration": iteration, "losses": losses,
                             "skipped": skipped, "rolled_back": rolled_back, "num_experts": store.num_experts, "ema": None if state["ema"] is None else state["ema"].cpu()})

        bar = tqdm(range(start_it, cfg.iterations), desc=self.name, disable=not progress or None, initial=start_it,
                   total=cfg.iterations)
        with signal_guard(checkpoint):
            for it in bar:
                expert = int(torch.randint(store.num_experts, (1,), generator=g_expert))
                lo, hi = self.start_range(it)
                start = int(torch.randint(lo, hi, (1,), generator=g_expert))
                middles = self.middle_epochs()
                epochs = [start] + [start + k for k in middles] + [start + cfg.expert_epochs]
                snaps = store.snapshots(expert, epochs).to(device)
                theta0 = self.prepare_theta0(snaps[0], student, g_perturb)
                per_epoch = cfg.syn_steps // cfg.expert_epochs
                plan = make_plan(images.shape[0], shape, cfg.syn_steps, cfg.batch_syn, dsa, g_inner,
                                 record=tuple(per_epoch * k for k in middles))
                inner = Inner(student, plan, dsa, labels, momentum=self.momentum, weight=self.inner_weight(start))

                def step() -> Tensor:
                    lr = log_lr.exp()
                    thetas = unroll(inner, theta0, images, lr, soft, cfg.unroll)
                    loss = matching_loss(thetas[-1], theta0, snaps[-1])
                    for j, k in enumerate(middles):
                        if per_epoch * k in plan.record[:-1]:
                            loss = loss + self.middle_weight(k) * matching_loss(
                                thetas[plan.record.index(per_epoch * k)], theta0, snaps[1 + j])
                    for o in opts:
                        o.zero_grad(set_to_none=True)
                    loss.backward()
                    grads_ok = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)
                    if not (bool(torch.isfinite(loss)) and grads_ok):
                        return torch.tensor(float("nan"))
                    if not self.accept(float(loss.detach())):
                        state["skipped"] = True
                        return loss.detach()
                    backup = [copy.deepcopy(o.state_dict()) for o in opts]
                    with torch.no_grad():
                        log_lr.grad.div_(lr.detach() ** 2)
                    for o in opts:
                        o.step()
                    new_lr = float(log_lr.detach().exp())
                    finite = all(bool(torch.isfinite(p).all()) for p in params)
                    if not (finite and cfg.min_syn_lr <= new_lr <= cfg.max_syn_lr):  # NaN and inf fail the range
                        log.warning("iteration %d: learned lr would become %.4g (allowed: [%g, %g]) or the images "
                                    "non-finite; step rolled back", it, new_lr, cfg.min_syn_lr, cfg.max_syn_lr)
                        for o, b in zip(opts, backup):
                            o.load_state_dict(b)
                        return torch.tensor(float("nan"))
                    return loss.detach()

                state["skipped"] = False
                loss = guarded_step(step, params, it, failures,
                                    hint="lower lr_img or lr_lr, or move lr_teacher away from the bounds "
                                         "min_syn_lr/max_syn_lr, and retry")
                if loss is None:
                    rolled_back += 1
                else:
                    losses.append(loss)
                    if state["skipped"]:
                        skipped += 1
                    else:
                        self.after_update(images.detach(), state)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{float(log_lr.detach().exp()):.4g}")
                checkpoint_boundary(checkpoint, it + 1, save)
        final = self.final_images(images.detach(), state)
        fields = {"lr": float(log_lr.detach().exp())}
        if soft is not None:
            from dsdistill.synthetic import SoftLabels

            fields["soft_labels"] = SoftLabels(values=soft.detach().float().cpu(), kind="logits",
                                               source=f"{self.name}: learned logits, experts {cfg.experts}")
        extra = {"iterations_done": cfg.iterations, "final_loss": losses[-1] if losses else None,
                 "rolled_back_iterations": rolled_back, "skipped_updates": skipped,
                 "experts": {"directory": str(cfg.experts), "recipe": store.recipe, "num_experts": store.num_experts,
                             "epochs": store.epochs, "model": store.model}}
        return package(self, real, final, ipc, seed=seed, device=device, started=started, extra=extra, **fields)

    def label_optimizer(self, soft: Tensor) -> torch.optim.Optimizer:
        raise NotImplementedError
