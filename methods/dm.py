"""DM: distribution matching (Zhao & Bilen, WACV 2023), as in DatasetCondensation ``main_DM.py``.

Every iteration draws a new randomly initialised ConvNet (frozen), takes ``batch_real`` real
images per class, applies the same DSA op and parameters to each class's real and synthetic batch,
and minimises ``sum_c || mean(embed(real_c)) - mean(embed(syn_c)) ||^2`` with one SGD step
(lr_img 1.0, momentum 0.5) on the synthetic images (MATCHING.md 2.3).

Differences from the reference, all deliberate:
* all classes go through the network in one batched forward (the reference loops per class for
  instance-norm nets), real images in channels_last chunks without autograd;
* randomness comes from explicit generators (the reference reseeds the global RNG from the clock),
  so the same seed gives bitwise identical images on CPU;
* the augmentation draw stays per class, as in the reference (each class gets its own op), which
  costs K small augmentation calls per iteration and no extra network passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from dsdistill.augment import DSA, strategy_for
from dsdistill.condenser import (Checkpointer, Condenser, check_ipc, checkpoint_boundary, guarded_step, package,
                                 signal_guard)
from dsdistill.data.real import RealData
from dsdistill.models import build_model
from dsdistill.perf import chunked, default_chunk, prepare_model, to_channels_last
from dsdistill.registry import CONDENSERS
from dsdistill.rng import make_generator, next_seed
from dsdistill.synthetic import SyntheticSet


@dataclass
class DMConfig:
    """DM hyperparameters (defaults: ``main_DM.py``; the reference runs 20000 iterations).

    Attributes:
        iterations: Image updates.
        lr_img: SGD learning rate of the synthetic images (10 for IPC >= 100 on CIFAR-10).
        momentum: SGD momentum of the images.
        batch_real: Real images per class per iteration.
        model: Embedding network (fresh random init every iteration).
        init: ``"real"`` (random real images) or ``"noise"``.
        dsa: Apply siamese DSA to real and synthetic batches.
        dsa_strategy: DSA op groups; empty = the dataset's default.
    """

    iterations: int = 20000
    lr_img: float = 1.0
    momentum: float = 0.5
    batch_real: int = 256
    model: str = "convnet"
    init: str = "real"
    dsa: bool = True
    dsa_strategy: str = ""


def initial_images(real: RealData, ipc: int, init: str, generator: torch.Generator) -> torch.Tensor:
    """``(K * ipc, C, H, W)`` class-major starting images: random distinct real ones, or N(0, 1) noise."""
    if init == "real":
        return real.train_images[real.sample_indices(ipc, generator).reshape(-1)].clone()
    if init == "noise":
        shape = (real.num_classes * ipc, *real.image_shape)
        return torch.randn(shape, generator=generator)
    raise ValueError(f"init must be 'real' or 'noise', got {init!r}")


@CONDENSERS.register("dm")
class DM(Condenser):
    """Distribution matching with randomly initialised embedding networks."""

    name = "dm"
    Config = DMConfig

    @classmethod
    def recipe(cls, dataset: str, ipc: int) -> dict:
        return {"lr_img": 10.0} if dataset == "cifar10" and ipc >= 100 else {}

    def condense(self, real: RealData, ipc: int, *, seed: int = 0, device: str = "cpu",
                 progress: bool = True, checkpoint: Checkpointer | None = None) -> SyntheticSet:
        cfg, started = self.config, time.time()
        check_ipc(real, ipc)
        K, shape = real.num_classes, real.image_shape
        g_init, g_net, g_real, g_aug = (make_generator(seed, "dm", part) for part in ("init", "net", "real", "aug"))
        images = initial_images(real, ipc, cfg.init, g_init).to(device).requires_grad_(True)
        optimizer = torch.optim.SGD([images], lr=cfg.lr_img, momentum=cfg.momentum)
        dsa = DSA(cfg.dsa_strategy or strategy_for(real.name)) if cfg.dsa else None
        train_images = real.train_images.to(device)
        chunk = default_chunk(device)
        start, failures, losses = 0, [], []

        state = checkpoint.load() if checkpoint else None
        if state is not None:
            with torch.no_grad():
                images.copy_(state["images"])
            optimizer.load_state_dict(state["optimizer"])
            for g, s in zip((g_init, g_net, g_real, g_aug), state["generators"]):
                g.set_state(s)
            start, losses = int(state["iteration"]), list(state["losses"])
            failures[:] = state.get("failures", [])

        def save(iteration: int) -> None:
            checkpoint.save({"images": images.detach().cpu(), "optimizer": optimizer.state_dict(),
                             "generators": [g.get_state() for g in (g_init, g_net, g_real, g_aug)],
                             "iteration": iteration, "losses": losses, "failures": list(failures)})

        bar = tqdm(range(start, cfg.iterations), desc="dm", disable=not progress or None, initial=start,
                   total=cfg.iterations)
        with signal_guard(checkpoint):
            for it in bar:
                net = prepare_model(build_model(cfg.model, K, shape, seed=next_seed(g_net)), device)
                for p in net.parameters():
                    p.requires_grad_(False)
                idx = real.sample_indices(cfg.batch_real, g_real).to(device)  # (K, batch_real)

                def step() -> torch.Tensor:
                    real_batch = train_images[idx.reshape(-1)]
                    syn = images
                    if dsa is not None:  # one op draw per class, shared by its real and synthetic images
                        pairs = [dsa.siamese(r, s, generator=g_aug)
                                 for r, s in zip(real_batch.split(cfg.batch_real), images.split(ipc))]
                        real_batch = torch.cat([p[0] for p in pairs])
                        syn = torch.cat([p[1] for p in pairs])
                    with torch.no_grad():
                        mu_real = chunked(net.embed, real_batch, chunk).view(K, cfg.batch_real, -1).mean(1)
                    mu_syn = net.embed(to_channels_last(syn)).view(K, ipc, -1).mean(1)
                    loss = (mu_real - mu_syn).pow(2).sum()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    return loss.detach()

                loss = guarded_step(step, [images], it, failures)
                if loss is not None:
                    losses.append(loss)
                    bar.set_postfix(loss=f"{loss:.3f}")
                checkpoint_boundary(checkpoint, it + 1, save)
        return package(self, real, images, ipc, seed=seed, device=device, started=started,
                       extra={"iterations_done": cfg.iterations, "final_loss": losses[-1] if losses else None,
                              "rolled_back_iterations": len(failures)})
