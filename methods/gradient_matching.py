"""DC and DSA: dataset condensation with gradient matching (Zhao et al., ICLR 2021; Zhao & Bilen,
ICML 2021), as in DatasetCondensation ``main.py`` (MATCHING.md 2.1-2.2).

Every iteration draws a fresh randomly initialised network. ``outer_loop`` times: for every class,
the gradient of the cross-entropy of ``batch_real`` real images and of the class's synthetic images
with respect to the network weights are compared with the per-output-channel cosine distance
(:func:`channel_cosine_distance`; 1-D parameters such as biases and norm weights are skipped), one
SGD step (lr_img 0.1, momentum 0.5) moves the synthetic images, and then the network is trained for
``inner_loop`` epochs on the current synthetic set (lr_net 0.01, batch 256). ``(outer_loop,
inner_loop)`` come from the reference's ``get_loops`` table (:data:`LOOPS`, :func:`loops_for`). BN
networks get their running statistics from 16 real images per class before matching and are
matched in eval mode. ``dsa`` is the same with one siamese DSA draw per class (same op and
parameters for the class's real and synthetic batch), unseeded DSA while training the network, and
real-image initialisation (the readme's DSA command).

Differences from the reference, all deliberate:
* randomness comes from explicit generators (network seeds, real batches, siamese DSA, inner
  training), never the clock-reseeded global RNG, so a seed reproduces a run bitwise on CPU and a
  checkpointed run resumes bitwise;
* real gradients are accumulated over channels_last chunks of ``default_chunk`` images (64 on CPU)
  with a summed loss divided by the batch size (the same gradient); only the matched (>= 2-D)
  parameters get gradients, and the image update differentiates the matching loss with respect to
  the images only (the reference's ``loss.backward()`` also back-propagates into the weights);
* BN statistics are the real batch's exact statistics (running stats reset, cumulative average);
  the reference's single train-mode forward with momentum 0.1 leaves ``0.9 * previous + 0.1 *
  batch``;
* IPCs missing from ``get_loops`` (which exits) use the nearest tabulated IPC (ties to the smaller);
* an unknown ``init`` or ``distance`` is a ConfigError before anything runs.

Speed (measured, one thread, on a 2-core machine shared with other jobs): an IPC-1 iteration is
dominated by the forward and backward pass of 10 x 256 real images, which is FLOP-bound and the
same work in any exact implementation. ``bench/dc_step.py`` measured ours at 7.3-7.5 CPU s per
iteration and a reference-style NCHW implementation at 7.3-7.5 CPU s (ratio about 1.0): the
issue's "at most half" target is not met by this module. Batching the per-class synthetic
gradients (one forward of all classes plus ``torch.func.vmap`` of ``grad``) was slower than the
per-class loop (IPC 10: 2.1 s vs 1.9 s per outer step; the real side under vmap: 40 s vs 8 s per
step), so both sides stay per class.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from dsdistill.augment import DSA, strategy_for
from dsdistill.condenser import (Checkpointer, Condenser, check_ipc, checkpoint_boundary, guarded_step, package,
                                 signal_guard)
from dsdistill.data.real import RealData
from dsdistill.errors import ConfigError
from dsdistill.models import build_model
from dsdistill.perf import default_chunk, prepare_model, to_channels_last
from dsdistill.registry import CONDENSERS
from dsdistill.rng import make_generator, next_seed
from dsdistill.synthetic import SyntheticSet
from dsdistill.train import TrainSettings, train_classifier

LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
INITS = ("noise", "real")
DISTANCES = ("ours", "mse", "cos")
BN_IMAGES_PER_CLASS = 16


def loops_for(ipc: int) -> tuple[int, int]:
    """``(outer_loop, inner_loop)`` of ``get_loops``; other IPCs take the nearest tabulated one."""
    key = min(LOOPS, key=lambda k: (abs(k - ipc), k))
    return LOOPS[key]


@dataclass
class DCConfig:
    """DC hyperparameters (defaults: DatasetCondensation ``main.py``).

    Attributes:
        iterations: Networks drawn (the reference runs 1000).
        outer_loop: Image updates per network (0: from :func:`loops_for`).
        inner_loop: Network training epochs on the synthetic set between image updates (0: table).
        lr_img: SGD learning rate of the synthetic images.
        momentum: SGD momentum of the images.
        lr_net: SGD learning rate (no momentum) of the network's inner training.
        batch_real: Real images per class per matching step.
        batch_train: Mini-batch of the inner training.
        model: Network (fresh random initialisation every iteration).
        init: ``"noise"`` (N(0, 1)) or ``"real"`` (random real images).
        distance: ``"ours"`` (per-output-channel cosine, 1-D parameters skipped), ``"mse"`` or
            ``"cos"`` (both over all gradients flattened).
        dsa: Siamese DSA in matching, unseeded DSA in inner training (the ``dsa`` method).
        dsa_strategy: DSA op groups; empty = the dataset's default.
    """

    iterations: int = 1000
    outer_loop: int = 0
    inner_loop: int = 0
    lr_img: float = 0.1
    momentum: float = 0.5
    lr_net: float = 0.01
    batch_real: int = 256
    batch_train: int = 256
    model: str = "convnet"
    init: str = "noise"
    distance: str = "ours"
    dsa: bool = False
    dsa_strategy: str = ""

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.distance not in DISTANCES:
            raise ConfigError(f"distance must be one of {', '.join(DISTANCES)}, got {self.distance!r}")
        for key in ("iterations", "batch_real", "batch_train"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.outer_loop < 0 or self.inner_loop < 0:
            raise ConfigError("outer_loop and inner_loop must be >= 0 (0 = the reference table)")


@dataclass
class DSAConfig(DCConfig):
    """DSA: DC with siamese augmentation and real initialisation (readme command)."""

    init: str = "real"
    dsa: bool = True


def channel_cosine_distance(g_syn: Tensor, g_real: Tensor, eps: float = 1e-6) -> Tensor:
    """The reference ``distance_wb``: ``sum_o 1 - <s_o, r_o> / (|s_o| |r_o| + eps)`` over output channels.

    Args:
        g_syn, g_real: Gradients of one parameter, shape ``(out, ...)`` with at least 2 dimensions
            (``(out, in, kh, kw)``, ``(out, in)``, LayerNorm ``(C, H, W)``).

    Returns:
        Scalar distance; 0 for 1-D parameters (skipped, as in the reference).
    """
    if g_real.dim() < 2:
        return g_real.new_zeros(())
    s, r = g_syn.reshape(g_syn.shape[0], -1), g_real.reshape(g_real.shape[0], -1)
    return (1 - (s * r).sum(-1) / (s.norm(dim=-1) * r.norm(dim=-1) + eps)).sum()


def match_loss(g_syn: list[Tensor], g_real: list[Tensor], distance: str = "ours") -> Tensor:
    """The reference ``match_loss`` over a network's parameter gradients (same order in both lists)."""
    if distance == "ours":
        return sum(channel_cosine_distance(s, r) for s, r in zip(g_syn, g_real))
    s = torch.cat([g.reshape(-1) for g in g_syn])
    r = torch.cat([g.reshape(-1) for g in g_real])
    if distance == "mse":
        return (s - r).pow(2).sum()
    if distance == "cos":
        return 1 - (s * r).sum() / (s.norm() * r.norm() + 1e-6)
    raise ConfigError(f"distance must be one of {', '.join(DISTANCES)}, got {distance!r}")


def matched_parameters(net: nn.Module, distance: str = "ours") -> list[nn.Parameter]:
    """Parameters whose gradients are compared (``ours`` skips 1-D ones: they contribute 0)."""
    return [p for p in net.parameters() if distance != "ours" or p.dim() > 1]


def real_gradients(net: nn.Module, params: list[nn.Parameter], images: Tensor, label: int,
                   chunk: int) -> list[Tensor]:
    """Gradient of the mean cross-entropy of ``(n, C, H, W)`` images of class ``label``, accumulated
    over channels_last chunks (no graph kept)."""
    total = None
    for x in images.split(chunk):
        y = torch.full((x.shape[0],), label, dtype=torch.long, device=x.device)
        loss = F.cross_entropy(net(to_channels_last(x)), y, reduction="sum")
        grads = torch.autograd.grad(loss, params)
        total = list(grads) if total is None else [t.add_(g) for t, g in zip(total, grads)]
    return [t.div_(images.shape[0]) for t in total]


def freeze_bn_statistics(net: nn.Module, images: Tensor) -> bool:
    """Set every BatchNorm's running statistics to those of ``images`` and put it in eval mode.

    Returns:
        Whether the network has BatchNorm layers (nothing is done otherwise).
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return False
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch -> exactly its statistics
    net.train()
    with torch.no_grad():
        net(to_channels_last(images))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
        m.eval()
    return True


@CONDENSERS.register("dc")
class DC(Condenser):
    """Gradient matching with per-class, per-output-channel cosine distance."""

    name = "dc"
    Config = DCConfig

    @classmethod
    def recipe(cls, dataset: str, ipc: int) -> dict:
        outer, inner = loops_for(ipc)
        return {"outer_loop": outer, "inner_loop": inner}

    def condense(self, real: RealData, ipc: int, *, seed: int = 0, device: str = "cpu",
                 progress: bool = True, checkpoint: Checkpointer | None = None) -> SyntheticSet:
        cfg, started = self.config, time.time()
        check_ipc(real, ipc)
        outer_loop, inner_loop = loops_for(ipc)
        outer_loop, inner_loop = cfg.outer_loop or outer_loop, cfg.inner_loop or inner_loop
        K, shape = real.num_classes, real.image_shape
        gens = [make_generator(seed, self.name, part) for part in ("init", "net", "real", "aug", "train")]
        g_init, g_net, g_real, g_aug, g_train = gens
        if cfg.init == "real":
            init = real.train_images[real.sample_indices(ipc, g_init).reshape(-1)].clone()
        else:
            init = torch.randn((K * ipc, *shape), generator=g_init)
        images = init.to(device).requires_grad_(True)
        labels = torch.arange(K, device=device).repeat_interleave(ipc)
        optimizer = torch.optim.SGD([images], lr=cfg.lr_img, momentum=cfg.momentum)
        dsa = DSA(cfg.dsa_strategy or strategy_for(real.name)) if cfg.dsa else None
        train_images = real.train_images.to(device)
        chunk = default_chunk(device)
        inner = TrainSettings(epochs=inner_loop, lr=cfg.lr_net, momentum=0.0, weight_decay=0.0,
                              batch_size=cfg.batch_train, decay_at=())
        augment = (lambda x, g: dsa(x, generator=g)) if dsa is not None else None
        start, failures, losses, rolled_back = 0, [], [], 0

        state = checkpoint.load() if checkpoint else None
        if state is not None:
            with torch.no_grad():
                images.copy_(state["images"])
            optimizer.load_state_dict(state["optimizer"])
            for g, s in zip(gens, state["generators"]):
                g.set_state(s)
            start, losses = int(state["iteration"]), list(state["losses"])
            rolled_back = int(state["rolled_back"])

        def save(iteration: int) -> None:
            checkpoint.save({"images": images.detach().cpu(), "optimizer": optimizer.state_dict(),
                             "generators": [g.get_state() for g in gens], "iteration": iteration,
                             "losses": losses, "rolled_back": rolled_back})

        def match_step(net: nn.Module, params: list[nn.Parameter]) -> Tensor:
            if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
                bn_idx = real.sample_indices(BN_IMAGES_PER_CLASS, g_real).to(device).reshape(-1)
                freeze_bn_statistics(net, train_images[bn_idx])
            idx = real.sample_indices(cfg.batch_real, g_real).to(device)  # (K, batch_real)
            loss = images.new_zeros(())
            for c in range(K):
                real_c, syn_c = train_images[idx[c]], images[c * ipc:(c + 1) * ipc]
                if dsa is not None:
                    real_c, syn_c = dsa.siamese(real_c, syn_c, generator=g_aug)
                    real_c = real_c.detach()
                g_real_c = real_gradients(net, params, real_c, c, chunk)
                out = net(to_channels_last(syn_c))
                g_syn_c = torch.autograd.grad(F.cross_entropy(out, labels[c * ipc:(c + 1) * ipc]), params,
                                              create_graph=True)
                loss = loss + match_loss(list(g_syn_c), g_real_c, cfg.distance)
            optimizer.zero_grad(set_to_none=True)
            images.grad = torch.autograd.grad(loss, [images])[0]
            optimizer.step()
            return loss.detach() / K

        bar = tqdm(range(start, cfg.iterations), desc=self.name, disable=not progress or None, initial=start,
                   total=cfg.iterations)
        with signal_guard(checkpoint):
            for it in bar:
                net = prepare_model(build_model(cfg.model, K, shape, seed=next_seed(g_net)), device)
                net.train()
                params = matched_parameters(net, cfg.distance)
                total, n_ok = 0.0, 0
                for ol in range(outer_loop):
                    loss = guarded_step(lambda: match_step(net, params), [images], it, failures)
                    if loss is None:
                        rolled_back += 1
                    else:
                        total, n_ok = total + loss, n_ok + 1
                    if ol == outer_loop - 1:
                        break
                    train_classifier(net, images.detach().clone(), labels, inner, augment=augment,
                                     generator=g_train)
                if n_ok:
                    losses.append(total / n_ok)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
                checkpoint_boundary(checkpoint, it + 1, save)
        return package(self, real, images, ipc, seed=seed, device=device, started=started,
                       extra={"iterations_done": max(start, cfg.iterations), "outer_loop": outer_loop, "inner_loop": inner_loop,
                              "final_loss": losses[-1] if losses else None,
                              "rolled_back_steps": rolled_back})


@CONDENSERS.register("dsa")
class DSAMatching(DC):
    """DC with differentiable siamese augmentation (real init, siamese DSA, DSA in inner training)."""

    name = "dsa"
    Config = DSAConfig
