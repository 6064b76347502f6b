"""Training (or importing) the teacher committee the decoupled soft-label methods need.

Recipe (:class:`TeacherRecipe`, the SRe2L CIFAR "squeeze" recipe, SOFTLABEL.md section 1): SGD
lr 0.1, momentum 0.9, weight decay 5e-4, batch 128, per-epoch cosine annealing to 0, with random
translation (zero-pad ``H // 8`` pixels, random crop back; the CIFAR "RandomCrop(32, 4)") and, for
colour images, horizontal flips. CV-DD's pool recipe (Adam 1e-3, wd 1e-4, batch 512) is
``TeacherRecipe(optimizer="adam", lr=1e-3, weight_decay=1e-4, batch_size=512)``. Training runs
through :func:`dsdistill.train.train_classifier` in the dataset's space (normalised or ZCA), the
space recorded with the teacher.

Selection uses the validation split only: ``val_accuracy`` is the committee prior; the test split
is evaluated once at the end for the record and nothing reads that number back.

Each teacher checkpoints after every epoch (``.NAME.partial.pt``: model, optimiser, scheduler and
generator states), so ``resume=True`` continues bitwise where it stopped; finished teachers
(``NAME.json`` present) are skipped. Under ``torchrun`` the teachers are split across processes
(one model per process) and rank 0 writes ``committee.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from dsdistill import distributed
from dsdistill.data.real import RealData
from dsdistill.errors import ConfigError
from dsdistill.io.atomic import atomic_path
from dsdistill.rng import derive_seed, make_generator
from dsdistill.teachers.store import finished, load_into, load_state, read_meta, save_teacher, write_manifest
from dsdistill.train import TrainSettings, accuracy, train_classifier

log = logging.getLogger(__name__)


@dataclass
class TeacherRecipe:
    """How every teacher of a committee is trained.

    Attributes:
        epochs: Passes over the training split.
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        lr: Initial learning rate (cosine-annealed to 0 per epoch).
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        batch_size: Mini-batch size.
        translate: Random translation by zero-padding this fraction of the height and cropping back.
        flip: Random horizontal flips; None = only for colour (3-channel) images.
        train_per_class: Train on this many images per class of the training split (a seeded random
            subset; a compute-budget knob recorded with the teacher), 0 = all of it. The validation
            split used for the prior is always complete.
    """

    epochs: int = 200
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    translate: float = 0.125
    flip: bool | None = None
    train_per_class: int = 0


def crop_flip(pad: int, flip: bool) -> Callable[[Tensor, torch.Generator], Tensor]:
    """Per-sample random translation (zero padding ``pad``, random crop) and optional flip, vectorised."""

    def augment(x: Tensor, generator: torch.Generator) -> Tensor:
        n, _, h, w = x.shape
        if pad > 0:
            off = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).to(x.device)
            padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
            rows = (off[:, :1] + torch.arange(h, device=x.device))[:, :, None]  # (n, h, 1)
            cols = (off[:, 1:] + torch.arange(w, device=x.device))[:, None, :]  # (n, 1, w)
            x = padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
        if flip:
            mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
            x = torch.where(mask[:, None, None, None], x.flip(3), x)
        return x.contiguous()

    return augment


def _meta(name: str, real: RealData, recipe: dict[str, Any], epochs: int, seed: int, val: float, test: float,
          kind: str, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, "model": name, "dataset": real.name, "dataset_fingerprint": real.fingerprint,
            "num_classes": real.num_classes, "image_shape": list(real.image_shape), "space": real.space,
            "epochs": epochs, "seed": seed, "val_accuracy": val, "test_accuracy": test,
            "test_accuracy_note": "reported only; never used for selection or weighting",
            "recipe": recipe, "kind": kind, "train_seconds": round(seconds, 3), **extra}


def _evaluate(model, real: RealData, device: str) -> tuple[float, float]:
    val = accuracy(model, real.val_images.to(device), real.val_labels)
    test = accuracy(model, real.test_images.to(device), real.test_labels)  # reported only
    return val, test


def train_one(name: str, real: RealData, directory: str | Path, recipe: TeacherRecipe, *, seed: int = 0,
              device: str = "cpu", resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train teacher ``name`` (a registered model) on ``real`` and write it to ``directory``.

    Returns:
        The teacher's stored ``.json`` record.
    """
    from dsdistill.models import build_model
    from dsdistill.perf import prepare_model

    directory = Path(directory)
    partial = directory / f".{name}.partial.pt"
    init_seed = derive_seed(seed, "teacher", name)
    model = prepare_model(build_model(name, real.num_classes, real.image_shape, seed=init_seed), device)
    generator = make_generator(seed, "teacher", name, "train")
    flip = recipe.flip if recipe.flip is not None else real.channels == 3
    pad = int(round(recipe.translate * real.image_size[0]))
    settings = TrainSettings(epochs=recipe.epochs, lr=recipe.lr, momentum=recipe.momentum,
                             weight_decay=recipe.weight_decay, batch_size=recipe.batch_size,
                             optimizer=recipe.optimizer, schedule="cosine")
    identity = json.dumps({"recipe": dataclasses.asdict(recipe), "seed": seed, "dataset": real.fingerprint,
                           "space": real.space}, sort_keys=True)
    state = None
    if resume and partial.exists():
        state = torch.load(partial, map_location="cpu", weights_only=True)
        if state.get("identity") != identity:
            raise ConfigError(f"{partial} was written with another recipe, seed or dataset; delete it or rerun "
                              f"with the original settings")
        log.info("teacher %s: resuming after epoch %d", name, int(state["epoch"]))

    def checkpoint(epochs_done: int, make_state) -> None:
        with atomic_path(partial) as tmp:
            torch.save({**make_state(), "identity": identity}, tmp)

    bar = None
    if progress and distributed.is_main():
        from tqdm.auto import tqdm

        bar = tqdm(total=recipe.epochs, initial=int(state["epoch"]) if state else 0, desc=f"teacher {name}")
    started = time.time()
    images, labels = real.train_images, real.train_labels
    if recipe.train_per_class > 0:
        idx = real.sample_indices(recipe.train_per_class, make_generator(seed, "teacher", "subset")).reshape(-1)
        images, labels = images[idx], labels[idx]
    train_classifier(model, images.to(device), labels.to(device), settings,
                     augment=crop_flip(pad, flip), generator=generator, resume=state, checkpoint=checkpoint,
                     progress=(lambda e: bar.update(1)) if bar else None)
    if bar:
        bar.close()
    val, test = _evaluate(model, real, device)
    record = save_teacher(directory, name, model, _meta(
        name, real, {**dataclasses.asdict(recipe), "flip": flip, "pad": pad, "schedule": "cosine"},
        recipe.epochs, seed, val, test, "trained", time.time() - started))
    partial.unlink(missing_ok=True)
    return record


def import_checkpoint(name: str, path: str | Path, real: RealData, directory: str | Path,
                      device: str = "cpu") -> dict[str, Any]:
    """Adopt a local ``state_dict`` file as teacher ``name`` (a registered model) of ``real``.

    Raises:
        ConfigError: The checkpoint does not fit ``name`` built for ``real``'s classes and shape.
    """
    from dsdistill.models import build_model

    model = build_model(name, real.num_classes, real.image_shape, seed=0)  # weights replaced below
    load_into(model, load_state(path), f"checkpoint {path} (model {name}, {real.num_classes} classes, "
                                       f"input {tuple(real.image_shape)})")
    model = model.to(device)
    val, test = _evaluate(model, real, device)
    return save_teacher(directory, name, model, _meta(name, real, {}, 0, 0, val, test, "imported", 0.0,
                                                      source=str(Path(path).resolve())))


def train_teachers(real: RealData, models: list[str], directory: str | Path, *, recipe: TeacherRecipe | None = None,
                   seed: int = 0, device: str = "cpu", resume: bool = False, overwrite: bool = False,
                   checkpoints: dict[str, str] | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Train (or import) a committee into ``directory``; returns every teacher's record in ``models`` order.

    Args:
        real: The dataset (its validation split gives the priors).
        models: Registered model names, one teacher each (e.g. ``resnet18_bn``, ``mobilenetv2``).
        directory: Output directory.
        recipe: Training recipe (default :class:`TeacherRecipe`).
        seed: Run seed (each teacher derives its own init and data-order seeds from it and its name).
        device: ``"cpu"`` or ``"cuda"``.
        resume: Skip finished teachers and continue partial ones from their last epoch.
        overwrite: Retrain finished teachers.
        checkpoints: ``{name: path}`` local state dicts to import instead of training.
        progress: Show progress bars (rank 0).

    Raises:
        ConfigError: Unknown/duplicate names, no validation split, or a finished teacher without
            ``resume``/``overwrite``.
    """
    import dsdistill.models  # noqa: F401  (registers the models)
    from dsdistill.registry import MODELS

    recipe = recipe or TeacherRecipe()
    checkpoints = dict(checkpoints or {})
    names = list(models) + [n for n in checkpoints if n not in models]
    if not names:
        raise ConfigError("no teacher models given; pass --models resnet18_bn,mobilenetv2,...")
    if len(set(names)) != len(names):
        raise ConfigError(f"teacher names must be distinct, got {names}")
    for name in names:
        MODELS.get(name)
    if len(real.val_labels) == 0:
        raise ConfigError("teachers need a validation split for their priors; load the dataset with val_fraction > 0")
    if recipe.epochs < 1 and set(names) - set(checkpoints):
        raise ConfigError(f"--epochs must be >= 1, got {recipe.epochs}")
    directory = Path(directory)
    done = [n for n in names if finished(directory, n)]
    if done and not (resume or overwrite):
        raise ConfigError(f"teacher(s) {', '.join(done)} already exist in {directory}; pass --resume to keep "
                          f"them or --overwrite to retrain")
    directory.mkdir(parents=True, exist_ok=True)
    local = []
    for name in distributed.shard(names):
        if finished(directory, name) and not overwrite:
            local.append(read_meta(directory, name))
        elif name in checkpoints:
            local.append(import_checkpoint(name, checkpoints[name], real, directory, device))
        else:
            local.append(train_one(name, real, directory, recipe, seed=seed, device=device, resume=resume,
                                   progress=progress))
    records = {r["name"]: r for r in distributed.gather(local)}
    ordered = [records[n] for n in names]
    if distributed.is_main():
        write_manifest(directory, ordered)
    distributed.barrier()
    return ordered
