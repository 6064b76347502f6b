"""The ``hello`` evaluation protocol: students labelled online by the file's HeLlO projector.

The projector is rebuilt from the frozen open_clip backbone (``clip_model``/``clip_weights``
options, else the name and path recorded in the file's provenance; the weights file must have the
recorded sha256) and the adapters, head and logit scale stored in the file
(:mod:`dsdistill.methods.hello`). Nothing else from outside the file is used: no teachers.

Student recipe (RDED/EDC-style; SOFTLABEL.md sections 5 and 6): AdamW lr 1e-3, weight decay 0.01
(not on biases and norm parameters), cosine per epoch over ``epochs * smoothing`` (smoothing 2,
ending at half the lr), batch 64, per-epoch RandomResizedCrop (the scale range the file records,
default ``(0.5, 1)``), horizontal flip (as recorded; none for digits) and CutMix with a random
partner; the projector labels every augmented mini-batch, ``Y* = f(A(X))`` (logits), and the loss
is ``MSE(s(A(X)), Y*) + beta * CE`` with the CutMix-mixed hard labels (``beta`` 0.1, G-VBSM's
``mse_gt``). The accuracy reported is the final epoch's on the test split.

For every (model, run): ``synthetic`` (the file's images) and ``random`` (a random real subset of
the same IPC, the same draw as the softlabel protocol's baseline, labelled online by the **same
projector**, trained identically). Storage: the adapters, head and logit scale are the file's
``label_generator`` part; the frozen image tower, which must exist while students train, is
reported under models at training time (never hidden); the per-epoch relabeling yardstick is
computed for the evaluated epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsdistill import distributed
from dsdistill.errors import ConfigError, SyntheticFileError
from dsdistill.evaluators.jobs import new_student, open_checkpoint, plan_jobs, run_jobs, test_and_val
from dsdistill.evaluators.report import EvalReport
from dsdistill.evaluators.softlabel_train import AdamWCosine
from dsdistill.evaluators.storage import storage_breakdown
from dsdistill.perf import to_channels_last
from dsdistill.registry import EVALUATORS
from dsdistill.rng import make_generator

BACKBONE_KEY = "CLIP image tower (frozen, not in the file)"


@dataclass(frozen=True)
class HelloProtocol:
    """The ``hello`` recipe (module docstring)."""

    name: str = "hello"
    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 64
    smoothing: float = 2.0
    beta: float = 0.1
    description: str = ("AdamW 1e-3 wd 0.01, cosine (smoothing 2), RRC + flip + CutMix, labels from the file's CLIP "
                        "projector online, MSE(logits) + 0.1 CE, final-epoch accuracy")

    def evaluate_set(self, syn, real, *, models, runs, epochs, lr, batch_size, seed, device, baseline, progress,
                     file, checkpoint, options) -> EvalReport:
        return evaluate_hello(syn, real, models=models, runs=runs, epochs=epochs, lr=lr, batch_size=batch_size,
                              seed=seed, device=device, baseline=baseline, progress=progress, file=file,
                              checkpoint=checkpoint, options=options or {}, protocol=self)


HELLO = EVALUATORS.register("hello")(HelloProtocol())


def rebuild_projector(syn, options: dict[str, Any], device: str = "cpu"):
    """The file's projector on ``device`` (eval mode, frozen) and its backbone.

    Raises:
        ConfigError: No backbone given or recorded, weights missing/not fitting, or not the
            backbone the set was made with (sha256).
        SyntheticFileError: The file's projector components are missing, non-finite or do not
            fit the backbone.
    """
    from dsdistill.methods.hello.clip_loader import PixelMap, load_backbone
    from dsdistill.methods.hello.projector import PREFIX, Projector, ranks_of

    prov = syn.provenance
    name = options.get("clip_model") or prov.get("clip_model")
    weights = options.get("clip_weights") or prov.get("clip_weights")
    if not name or not weights:
        raise ConfigError("the hello protocol needs the frozen CLIP backbone: pass --clip-model NAME and "
                          "--clip-weights PATH (the file records none)")
    backbone = load_backbone(name, weights)
    recorded = prov.get("clip_sha256")
    if recorded and recorded != backbone.sha256:
        raise ConfigError(f"clip weights {backbone.weights} are not the backbone this set was made with "
                          f"(sha256 {backbone.sha256[:12]} vs recorded {str(recorded)[:12]}); pass the original file")
    tensors = {k: c.values for k, c in syn.components.items() if k.startswith(PREFIX)}
    if f"{PREFIX}head.base" not in tensors or f"{PREFIX}logit_scale" not in tensors:
        raise SyntheticFileError("the file stores no hello projector (components hello.head.base, "
                                 "hello.logit_scale); it was not made by the hello condenser")
    bad = [k for k, v in tensors.items() if not v.is_floating_point() or not bool(torch.isfinite(v).all())]
    if bad:
        raise SyntheticFileError(f"hello projector component(s) {', '.join(bad[:3])} are not finite floats")
    head = tensors[f"{PREFIX}head.base"].float()
    if head.dim() != 2 or head.shape != (syn.num_classes, backbone.embed_dim):
        raise SyntheticFileError(f"stored hello head is {tuple(head.shape)}; the set has {syn.num_classes} classes "
                                 f"and the backbone {backbone.embed_dim} features")
    lora = prov.get("lora") or {}
    enc_rank, head_rank = ranks_of(tensors)
    pixel_map = PixelMap({"space": syn.space, "mean": syn.mean, "std": syn.std, "zca": syn.zca},
                         backbone.image_size, backbone.mean, backbone.std)
    proj = Projector(backbone, pixel_map, head, encoder_rank=enc_rank, head_rank=head_rank,
                     kinds=tuple(lora.get("kinds") or ("conv", "linear")), alpha=lora.get("alpha"),
                     generator=torch.Generator().manual_seed(0))
    try:
        proj.load_label_generator(tensors, "hello projector")
    except ValueError as exc:
        raise SyntheticFileError(f"{exc} (clip model {name!r})") from None
    proj = proj.to(device).eval()
    for p in proj.parameters():
        p.requires_grad_(False)
    return proj, backbone


def train_with_projector(model: nn.Module, images: Tensor, labels: Tensor, projector: nn.Module, *, epochs: int,
                         batch_size: int, lr: float, weight_decay: float, smoothing: float, beta: float,
                         scale: tuple[float, float], flip: bool, mix: str, generator: torch.Generator,
                         progress: Callable[[int], None] | None = None, resume: dict | None = None,
                         checkpoint: Callable[[int, Callable[[], dict]], None] | None = None) -> nn.Module:
    """Train ``model`` in place on ``(N, C, H, W)`` images with labels from ``projector`` (module docstring).

    ``resume``/``checkpoint`` as :func:`dsdistill.evaluators.softlabel_train.train_student` (a
    resumed student ends bitwise as an uninterrupted one on CPU: augmentation comes from the
    restored generator and the projector is deterministic).
    """
    from dsdistill.methods.hello.projector import mixed_ce
    from dsdistill.softlabels import augment, draw_params

    opt = AdamWCosine(model, lr=lr, weight_decay=weight_decay, epochs=epochs, smoothing=smoothing, generator=generator,
                      resume=resume)
    labels = labels.to(images.device)
    size = tuple(images.shape[2:])
    n = images.shape[0]
    model.train()
    for e in range(opt.first_epoch, epochs):
        params = draw_params(n, size, size, generator, scale=scale, flip=flip, mix=mix)
        order = torch.randperm(n, generator=generator)
        for idx in order.split(batch_size):
            x = augment(images, params, idx, size)
            with torch.no_grad():
                target = projector(x)
            lam, partner = params.cutmix(idx, size)
            out = model(to_channels_last(x))
            loss = F.mse_loss(out, target) + beta * mixed_ce(out, labels[idx.to(labels.device)], lam.to(out.device),
                                                             labels[partner.to(labels.device)])
            opt.step(loss)
        opt.end_epoch(e, progress, checkpoint)
    return model


def evaluate_hello(syn, real, *, models=("convnet",), runs: int = 3, epochs: int | None = None, lr: float | None = None,
                   batch_size: int | None = None, seed: int = 0, device: str = "cpu", baseline: bool = True,
                   progress: bool = True, file: str = "", checkpoint=None, options: dict[str, Any] | None = None,
                   protocol: HelloProtocol = HELLO) -> EvalReport:
    """Evaluate ``syn`` under the ``hello`` protocol (module docstring); returns the report.

    Raises:
        ConfigError: Bad runs, the set does not match ``real``, the backbone is missing or not the
            recorded one, teachers/online-teacher options given, or a checkpoint of another evaluation.
        SyntheticFileError: The file's projector is missing or does not fit the backbone.
    """
    from dsdistill.evaluators.standard import check_compatible

    options = options or {}
    check_compatible(syn, real)
    if runs < 1:
        raise ConfigError(f"--runs must be at least 1, got {runs}")
    if options.get("teachers") or options.get("online_teacher"):
        raise ConfigError("--teachers/--online-teacher do not apply to the hello protocol: the file's CLIP "
                          "projector produces the labels")
    p = protocol
    epochs, lr, batch_size = epochs or p.epochs, lr or p.lr, batch_size or p.batch_size
    proj, backbone = rebuild_projector(syn, options, device)
    aug = syn.provenance.get("student_augmentation") or {}
    scale = tuple(float(v) for v in aug.get("scale", (0.5, 1.0)))
    flip, mix = bool(aug.get("flip", True)), str(aug.get("mix", "cutmix"))
    all_jobs, jobs = plan_jobs(models, runs, ["synthetic"] + (["random"] if baseline else []))
    report = EvalReport(
        file=file, method=syn.method, dataset=syn.dataset, ipc=syn.ipc, num_classes=syn.num_classes,
        protocol={"name": p.name, "description": p.description, "epochs": epochs, "lr": lr,
                  "weight_decay": p.weight_decay, "optimizer": "adamw", "batch_size": batch_size,
                  "schedule": f"cosine per epoch, smoothing {p.smoothing:g}", "smoothing": p.smoothing,
                  "loss": f"MSE(student logits, projector logits) + {p.beta:g} * CE (CutMix-mixed hard labels)",
                  "beta": p.beta, "augment": {"rrc_scale": list(scale), "flip": flip, "mix": mix},
                  "labels": "online from the file's CLIP projector (adapters + head in the file)",
                  "random_baseline": "random real subset, same IPC, labelled online by the same projector, "
                                     "trained identically"},
        settings={"models": list(models), "runs": runs, "seed": seed, "device": device,
                  "processes": distributed.world_size(), "clip_model": backbone.name,
                  "clip_weights": backbone.weights, "clip_sha256": backbone.sha256,
                  "selection": "final epoch (no test-set selection)", "std": "population (ddof=0)"})
    state = open_checkpoint(checkpoint, syn, real, jobs, seed, {**report.protocol, **report.settings})

    def train(job, resume, hook, tick):
        model_name, run, kind = job
        images, labels = syn.images, syn.labels
        if kind == "random":
            idx = real.sample_indices(syn.ipc, make_generator(seed, "random-subset", run)).reshape(-1)
            images, labels = real.train_images[idx], real.train_labels[idx]
        model = new_student(model_name, real, seed, run, device)
        train_with_projector(model, images.to(device), labels, proj, epochs=epochs, batch_size=batch_size, lr=lr,
                             weight_decay=p.weight_decay, smoothing=p.smoothing, beta=p.beta, scale=scale, flip=flip,
                             mix=mix, generator=make_generator(seed, "hello", kind, model_name, run), progress=tick,
                             resume=resume, checkpoint=hook)
        return test_and_val(model, real, device)

    report.runs = run_jobs(all_jobs, jobs, train, epochs=epochs, state=state, checkpoint=checkpoint, progress=progress)
    report.storage = storage_breakdown(syn, real, training_models={BACKBONE_KEY: backbone.visual_nbytes},
                                       epochs=epochs)
    report.storage["clip_backbone_file_bytes"] = backbone.nbytes
    report.storage["clip_note"] = (f"frozen open_clip backbone {backbone.name} from {backbone.weights} "
                                   f"(sha256 {backbone.sha256[:12]}); its whole state is {backbone.nbytes:,} B, "
                                   f"the image tower students need {backbone.visual_nbytes:,} B")
    return report
