"""The ``infer`` condenser: real base images, Universal Feature Compensators, static committee labels.

INFER (Zhang et al., ICLR'25, zhangxin-xd/UFC; SOFTLABEL.md section 3), as stored by dsdistill:

1. budget split ``ipc_init = floor(IPC * K / (M + K))`` for M teachers (architectures) and K
   classes (:func:`~dsdistill.methods.infer.ufc.budget_split`);
2. ``ipc_init`` random real images per class (the base images, ``syn.images``, class-major);
3. for every teacher ``m`` and base index ``k`` one UFC of shape ``(1, C, H, W)``, shared by base
   image ``k`` of every class and optimised with CE + BN-statistics loss against teacher ``m``
   (:func:`~dsdistill.methods.infer.ufc.optimise_ufc`); stored as component ``"ufc"``
   ``(M, ipc_init, C, H, W)`` float32, counted in the image budget (one image each);
4. static labels: the mean of the M teachers' logits on every expanded instance (un-augmented,
   teachers in eval mode), computed once, stored as component ``"static_labels"``
   ``(K * ipc_init * (M + 1), K)`` (fp16 by default) in :func:`~dsdistill.methods.infer.ufc.expand`'s
   class-major order.

The file does not store the expanded instances: the ``infer`` protocol (:mod:`dsdistill.evaluators.
infer`) rebuilds them. ``syn.ipc`` is the nominal IPC; the counted budget is ``K * ipc_init + M *
ipc_init`` images, the student sees ``K * ipc_init * (M + 1)`` instances.

Per-resolution recipes (SOFTLABEL.md section 3): <= 32 px the CIFAR recipe (the defaults: 1000
iterations, lr 0.25, r_bn 1, jitter 4, no crop, no flip); larger images the ImageNet recipe (2000
iterations, lr 0.25, r_bn 0.01, RandomResizedCrop + flip, jitter 32 at 224 px, scaled to
``round(32 * H / 224)`` for other sizes since the reference has no 64 px script). Digits never flip.

Committee: the teachers named in ``committee`` (each must have BatchNorm), or by default every
finished BatchNorm teacher of ``teachers`` (teachers without BatchNorm are skipped and recorded in
the provenance). UFC group ``m`` is optimised against teacher ``m`` alone, as the reference does
(``model_index = ipc_id // ipc_init - 1``); all M teachers label every instance. The provenance
records every teacher's name, validation accuracy and sha256, which the protocol checks.

Measured (IPC 10, ``-p iterations=160``, protocol ``infer``, convnet student, 3 runs, final epoch,
test %; the random arm is a random real subset of the nominal IPC with the same teachers' mean
logits): MNIST (committee convnet_bn / shufflenetv2 / mobilenetv2, 91 counted images, 280
instances, 150 epochs) 96.40 +- 0.06 vs 95.88 +- 0.21 (compensators zeroed: 96.11 +- 0.09);
CIFAR-10 (committee convnet_bn / shufflenetv2 trained here on 2,000 images per class, val 78.66 /
66.36 %; 96 counted images, 240 instances, 200 epochs) 42.01 +- 1.00 vs 39.70 +- 0.72. Labels:
5,600 / 4,800 B of fp16 logits against 615,000 / 820,000 B for per-epoch relabeling of the same IPC.

Work runs in one process (``torchrun`` is not sharded); progress is checkpointed per compensator and
every ``--checkpoint-every`` steps, and ``--resume`` continues bitwise (each UFC has its own
generator derived from ``(seed, m, k)``).

Differences from the reference, all deliberate:
* the teachers are the toolkit's own (the reference downloads its CIFAR/ImageNet checkpoints);
* the teacher sees ``clip(base + UFC)``, exactly what is later trained on; the reference optimises
  the unclipped sum and clips only a copy (``inputs.data = clip_image(...)`` on a non-leaf), so its
  stored images differ from the optimised ones;
* one UFC spans all K classes; the reference's ImageNet script splits the classes into chunks of
  ``batch_size`` with one UFC each (and does not run: undefined ``args.init`` / ``input_original``,
  and ``model_index`` off by one), which is not reproduced;
* compensators and labels are stored, not the expanded JPEGs; clipping maps to the valid pixel
  range of the set's space (per-channel box, pixel clamp, or through the inverse ZCA);
* randomness comes from explicit generators (the reference uses ``random`` / ``np.random``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from dsdistill.condenser import Checkpointer, Condenser, Interrupted, check_ipc, package, signal_guard
from dsdistill.data.real import RealData
from dsdistill.errors import ConfigError, DataNotFoundError, SyntheticFileError
from dsdistill.methods.infer.ufc import UFCSettings, budget_split, expand, optimise_ufc
from dsdistill.methods.sre2l.recover import BNStatLoss, ValidRange
from dsdistill.registry import CONDENSERS
from dsdistill.rng import make_generator
from dsdistill.synthetic import Component, SyntheticSet
from dsdistill.teachers import has_batchnorm


def infer_recipe(dataset: str) -> dict[str, Any]:
    """Per-resolution overrides (module docstring); digits (MNIST, SVHN) never flip."""
    from dsdistill.augment import strategy_for
    from dsdistill.data.specs import SPECS

    spec = SPECS.get(dataset)
    height = spec.shape[1] if spec else 32
    out: dict[str, Any] = {}
    if height > 32:
        out = {"iterations": 2000, "r_bn": 0.01, "random_crop": True, "flip": True,
               "jitter": max(1, round(32 * height / 224))}
    if "flip" not in strategy_for(dataset).split("_"):
        out["flip"] = False
    return out


@dataclass
class InferConfig:
    """INFER settings (defaults: the CIFAR recipe, ``sh/ufc_cifar.sh``).

    Attributes:
        teachers: Teachers directory (``dsdistill teachers --output DIR``); required.
        committee: Comma-separated teacher names (the M architectures); "" = every BatchNorm teacher.
        iterations: Optimisation steps per compensator.
        lr: Adam learning rate of a compensator (cosine-annealed, no warmup).
        r_bn: Weight of the BN-statistics term.
        first_bn_multiplier: Extra weight of the first BN layer.
        jitter: Maximum random roll in pixels (both axes).
        random_crop: RandomResizedCrop the whole batch each step.
        crop_scale_min: Smallest crop area fraction.
        flip: Random horizontal flip of the whole batch each step.
        label_dtype: Storage dtype of the static labels, ``"float16"`` or ``"float32"``.
        label_batch_size: Teacher forward chunk when labelling.
        temperature: KL temperature recorded with the labels for the student (the reference: 30).
    """

    teachers: str = ""
    committee: str = ""
    iterations: int = 1000
    lr: float = 0.25
    r_bn: float = 1.0
    first_bn_multiplier: float = 10.0
    jitter: int = 4
    random_crop: bool = False
    crop_scale_min: float = 0.08
    flip: bool = False
    label_dtype: str = "float16"
    label_batch_size: int = 256
    temperature: float = 30.0


def load_infer_committee(directory: str, names: list[str] | None, real: RealData, device: str) -> tuple[list, list]:
    """The M BatchNorm teachers (and the names of skipped teachers without BatchNorm).

    Raises:
        ConfigError: No directory given, it holds no teachers, a named teacher lacks BatchNorm, or
            none has BatchNorm.
    """
    from dsdistill.teachers import load_committee

    if not directory:
        raise ConfigError(f"infer needs a teachers directory: -p teachers=DIR (train one with "
                          f"`dsdistill teachers --dataset {real.name} --output DIR`)")
    try:
        loaded = load_committee(directory, names=names, device=device, real=real)
    except DataNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    no_bn = [t.name for t in loaded if not has_batchnorm(t.model)]
    if names and no_bn:
        raise ConfigError(f"teacher(s) {', '.join(no_bn)} have no BatchNorm layers; INFER matches BN statistics, "
                          f"so name only BatchNorm teachers in committee")
    committee = [t for t in loaded if has_batchnorm(t.model)]
    if not committee:
        raise ConfigError(f"no teacher in {directory} has BatchNorm layers; INFER matches BN statistics "
                          f"(train e.g. convnet_bn, resnet18_bn or mobilenetv2 teachers)")
    return committee, no_bn


def teacher_records(teachers: list) -> list[dict[str, Any]]:
    return [{"name": t.name, "model": t.meta.get("model"), "val_accuracy": t.val_accuracy,
             "epochs": t.meta.get("epochs"), "sha256": t.meta.get("sha256"), "dataset": t.meta.get("dataset")}
            for t in teachers]


@torch.no_grad()
def static_labels(instances: torch.Tensor, teachers: list[torch.nn.Module], batch_size: int) -> torch.Tensor:
    """``(N, K)`` float32 mean of the teachers' logits on un-augmented instances (eval mode)."""
    from dsdistill.softlabels.relabel import label_batch, teacher_mode

    w = torch.full((len(teachers),), 1.0 / len(teachers), dtype=torch.float64)
    with teacher_mode(teachers, False) as active:
        return torch.cat([label_batch(x, active, w, "logits", 1.0).cpu() for x in instances.split(batch_size)])


@dataclass
class InferParts:
    """A loaded INFER set, checked: base images, compensators, static labels and the layout numbers."""

    base: torch.Tensor  # (K * ipc_init, C, H, W)
    ufc: torch.Tensor  # (M, ipc_init, C, H, W) float32
    labels: torch.Tensor  # (K * ipc_init * (M + 1), K) as stored
    ipc_init: int
    num_archs: int

    @property
    def effective_instances(self) -> int:
        return self.labels.shape[0]


def infer_parts(syn: SyntheticSet) -> InferParts:
    """Read and check the components of an INFER set.

    Raises:
        SyntheticFileError: A component is missing, has the wrong shape, or is not finite.
    """
    k, n = syn.num_classes, syn.num_images
    for name in ("ufc", "static_labels"):
        if name not in syn.components:
            raise SyntheticFileError(f"the set has no '{name}' component; it is not an INFER set (made by "
                                     f"`dsdistill condense -m infer`)")
    ufc, labels = syn.components["ufc"].values, syn.components["static_labels"].values
    if ufc.dim() != 5 or tuple(ufc.shape[2:]) != tuple(syn.image_shape) or ufc.shape[0] < 1 or ufc.shape[1] < 1:
        raise SyntheticFileError(f"component 'ufc' has shape {tuple(ufc.shape)}, expected (M, ipc_init, "
                                 f"{', '.join(map(str, syn.image_shape))})")
    m, ipc_init = int(ufc.shape[0]), int(ufc.shape[1])
    if n != k * ipc_init or not torch.equal(syn.labels, torch.arange(k).repeat_interleave(ipc_init)):
        raise SyntheticFileError(f"the set holds {n} base images but its compensators need {k} x {ipc_init} "
                                 f"class-major ones")
    if tuple(labels.shape) != (k * ipc_init * (m + 1), k):
        raise SyntheticFileError(f"component 'static_labels' has shape {tuple(labels.shape)}, expected "
                                 f"({k * ipc_init * (m + 1)}, {k}) for {m} teachers and ipc_init {ipc_init}")
    if not labels.is_floating_point() or not ufc.is_floating_point():
        raise SyntheticFileError("components 'ufc' and 'static_labels' must hold floating-point values")
    for name, t in (("ufc", ufc), ("static_labels", labels), ("images", syn.images)):
        if not bool(torch.isfinite(t).all()):
            raise SyntheticFileError(f"the set's {name} contain NaN or infinite values")
    return InferParts(syn.images, ufc.float(), labels, ipc_init, m)


@CONDENSERS.register("infer")
class Infer(Condenser):
    """INFER: real base images plus inter-class feature compensators, one static label per instance."""

    name = "infer"
    Config = InferConfig
    protocol = "infer"

    @classmethod
    def recipe(cls, dataset: str, ipc: int) -> dict[str, Any]:
        return infer_recipe(dataset)

    def check_settings(self) -> None:
        cfg = self.config
        if cfg.label_dtype not in ("float16", "float32"):
            raise ConfigError(f"label_dtype must be float16 or float32, got {cfg.label_dtype!r}")
        if cfg.iterations < 1 or cfg.label_batch_size < 1:
            raise ConfigError("iterations and label_batch_size must be >= 1")
        if cfg.jitter < 0 or not 0 < cfg.crop_scale_min <= 1 or not cfg.lr > 0 or cfg.r_bn < 0:
            raise ConfigError("jitter and r_bn must be >= 0, lr > 0 and crop_scale_min in (0, 1]")
        if not cfg.temperature > 0:
            raise ConfigError(f"temperature must be positive, got {cfg.temperature}")

    def base_images(self, real: RealData, ipc_init: int, seed: int) -> torch.Tensor:
        """``(K * ipc_init, C, H, W)`` random distinct real images, class-major."""
        out = []
        for c in range(real.num_classes):
            idx = real.indices_of(c)
            pick = torch.randperm(len(idx), generator=make_generator(seed, self.name, "base", c))[:ipc_init]
            out.append(real.train_images[idx[pick]])
        return torch.cat(out).clone()

    def condense(self, real: RealData, ipc: int, *, seed: int = 0, device: str = "cpu", progress: bool = True,
                 checkpoint: Checkpointer | None = None) -> SyntheticSet:
        cfg, started = self.config, time.time()
        check_ipc(real, ipc)
        self.check_settings()
        names = [n.strip() for n in cfg.committee.split(",") if n.strip()] or None
        teachers, skipped = load_infer_committee(cfg.teachers, names, real, device)
        m, k = len(teachers), real.num_classes
        ipc_init = budget_split(ipc, k, m)
        base = self.base_images(real, ipc_init, seed)
        settings = UFCSettings(cfg.iterations, cfg.lr, cfg.r_bn, cfg.first_bn_multiplier, cfg.jitter,
                               cfg.random_crop, cfg.crop_scale_min, cfg.flip)
        ufc, losses = self._all_ufcs(real, base, ipc_init, teachers, settings, seed, device, progress, checkpoint)
        valid = ValidRange(real)
        t0 = time.time()
        with torch.no_grad():
            instances = expand(base.to(device), ufc.to(device), valid)
        labels = static_labels(instances, [t.model for t in teachers], cfg.label_batch_size)
        order = ("class-major; per class ipc_init base images, then clip(base[k] + ufc[m, k]) for m = 0..M-1, "
                 "k = 0..ipc_init-1")
        components = {
            "ufc": Component(ufc.float().cpu(), "images", {"per": "architecture x group", "teachers":
                             [t.name for t in teachers], "shape": "(M, ipc_init, C, H, W)"}),
            "static_labels": Component(labels.to(getattr(torch, cfg.label_dtype)), "labels", {
                "kind": "logits", "average": "mean of the M teachers' logits (eval mode, un-augmented)",
                "temperature": cfg.temperature, "order": order, "teachers": [t.name for t in teachers]}),
        }
        extra = {
            "teachers": teacher_records(teachers), "teachers_dir": str(Path(cfg.teachers).resolve()),
            "skipped_teachers_without_bn": skipped, "ufc_teacher_per_group": [t.name for t in teachers],
            "nominal_ipc": ipc, "ipc_init": ipc_init, "num_archs": m,
            "counted_images": k * ipc_init + m * ipc_init, "effective_instances": int(labels.shape[0]),
            "final_loss_mean": float(sum(losses) / len(losses)) if losses else None,
            "ufc_seconds": round(t0 - started, 3), "label_seconds": round(time.time() - t0, 3),
        }
        syn = package(self, real, base, ipc_init, seed=seed, device=device, started=started, extra=extra,
                      components=components)
        syn.ipc = ipc  # nominal IPC: the budget the method spends, not the number of base images per class
        syn.provenance["ipc"] = ipc
        return syn

    def _all_ufcs(self, real, base, ipc_init, teachers, settings, seed, device, progress, checkpoint):
        """``(M, ipc_init, C, H, W)`` compensators and their final losses, checkpointed per step."""
        m, k = len(teachers), real.num_classes
        items = [(a, j) for a in range(m) for j in range(ipc_init)]
        state = checkpoint.load() if checkpoint else None
        done = dict(zip(map(tuple, state["done_items"]), state["done_ufcs"])) if state else {}
        losses = dict(zip(map(tuple, state["done_items"]), state["done_losses"])) if state else {}
        current = state.get("current") if state else None
        valid = ValidRange(real)
        hooks = [BNStatLoss(t.model) for t in teachers]
        bar = tqdm(total=len(items) * settings.iterations, desc=self.name, disable=not progress or None,
                   initial=len(done) * settings.iterations)
        counter = {"step": 0}

        def save(current_state) -> None:
            checkpoint.save({"done_items": [list(i) for i in done], "done_ufcs": list(done.values()),
                             "done_losses": [losses[i] for i in done], "current": current_state})

        try:
            with signal_guard(checkpoint):
                for item in items:
                    if item in done:
                        continue
                    a, j = item
                    base_k = base[[c * ipc_init + j for c in range(k)]].to(device)
                    resume = current if current is not None and tuple(current["item"]) == item else None
                    if resume is not None:
                        bar.update(int(resume["iteration"]))
                    gen = make_generator(seed, self.name, "ufc", a, j)

                    def on_step(it, u, opt, loss, item=item, gen=gen):
                        bar.update(1)
                        if loss is not None:
                            bar.set_postfix(loss=f"{loss:.3f}")
                        counter["step"] += 1
                        if checkpoint and checkpoint.due(counter["step"]) and it < settings.iterations:
                            save({"item": list(item), "ufc": u.detach().cpu(), "optimizer": opt.state_dict(),
                                  "generator": gen.get_state(), "iteration": it})
                            if checkpoint.stop_requested:
                                raise Interrupted(str(checkpoint.path))

                    u, loss = optimise_ufc(base_k, teachers[a].model, hooks[a], settings, gen, valid, resume=resume,
                                           on_step=on_step)
                    done[item], losses[item] = u.cpu(), loss
                    if checkpoint:
                        save(None)
                        if checkpoint.stop_requested:
                            raise Interrupted(str(checkpoint.path))
        finally:
            for h in hooks:
                h.remove()
            bar.close()
        ufc = torch.stack([torch.cat([done[(a, j)] for j in range(ipc_init)]) for a in range(m)])
        return ufc, [v for v in losses.values() if v is not None]
