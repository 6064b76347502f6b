"""``train_experts``: N experts into one directory, resumable, split across torchrun processes.

Directory layout: ``expert_XXXXX.h5`` per finished expert (written atomically by the process that
trained it), ``expert_XXXXX.ckpt`` while one is in progress (removed when its file is written),
``expert_XXXXX.timing.json`` (wall-clock times, kept out of the bitwise-reproducible ``.h5``) and
``experts.json``, the manifest rank 0 writes once every expert is done.

An interrupted run (Ctrl-C, SIGTERM, even SIGKILL) rerun with ``resume=True`` keeps every finished
expert and continues the one in progress from its last checkpoint; the files then equal, byte for
byte, those of an uninterrupted run with the same seed on the same CPU set-up.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from dsdistill import distributed
from dsdistill.condenser import Checkpointer
from dsdistill.data.real import RealData
from dsdistill.errors import ConfigError, SyntheticFileError
from dsdistill.experts.recipes import ExpertRecipe, get_recipe
from dsdistill.experts.store import FILE_RE, ExpertStore, expert_path, read_expert_header, write_expert
from dsdistill.experts.trainer import ExpertJob, train_expert
from dsdistill.io.atomic import atomic_write_json
from dsdistill.rng import make_generator

log = logging.getLogger(__name__)
MANIFEST = "experts.json"
_OWN = (FILE_RE, r"^expert_\d{5,}\.ckpt$", r"^expert_\d{5,}\.timing\.json$", r"^experts\.json$")
_TEMP = re.compile(r"^\.(expert_\d{5,}\.(h5|ckpt|timing\.json)|experts\.json)\.tmp-")  # left by a killed run

__all__ = ["train_experts", "prepare_output", "MANIFEST"]


def _own_files(directory: Path) -> list[Path]:
    pats = [p if hasattr(p, "match") else re.compile(p) for p in _OWN]
    return sorted(p for p in directory.iterdir() if any(r.match(p.name) for r in pats)) if directory.is_dir() else []


def prepare_output(output: str | Path, *, resume: bool, overwrite: bool, create: bool = True) -> Path:
    """Check (and with ``create``, on rank 0, create or clear) the output directory before any work.

    Raises:
        ConfigError: ``output`` is a file, or already holds experts and neither ``resume`` nor
            ``overwrite`` was given.
    """
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a directory")
    if not out.parent.is_dir():
        raise ConfigError(f"parent directory {out.parent} of the output does not exist; create it first")
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pass one")
    own = _own_files(out)
    if own and not (resume or overwrite):
        raise ConfigError(f"output {out} already holds experts; pass --resume to continue that run or "
                          f"--overwrite to replace it")
    if not create:
        return out
    distributed.barrier()  # every rank has checked before rank 0 deletes anything
    if distributed.is_main():
        out.mkdir(exist_ok=True)
        if overwrite:
            for p in own:
                p.unlink(missing_ok=True)
        if resume or overwrite:
            for p in out.iterdir():
                if _TEMP.match(p.name):
                    p.unlink(missing_ok=True)
    distributed.barrier()
    return out


def _check_finished(path: Path, job: ExpertJob, real: RealData, dtype: str) -> bool:
    """True if ``path`` is a finished expert made with ``job``'s settings (ConfigError if it differs)."""
    if not path.exists():
        return False
    try:
        h = read_expert_header(path)
    except SyntheticFileError as exc:
        raise ConfigError(f"{exc}; delete it or rerun with --overwrite") from None
    want = {"model": job.model, "model_kwargs": job.model_kwargs, "dataset": real.name, "recipe": job.recipe.name,
            "space": real.space, "seed": job.expert_seed, "epochs": job.epochs, "stored_epochs": job.stored(),
            "dtype": dtype}
    bad = [k for k, v in want.items() if h[k] != v]
    if json.loads(_config_json(path)).get("train_images") != int(real.train_images.shape[0]):
        bad.append("training images")
    if bad:
        raise ConfigError(f"{path} was made with other settings ({', '.join(bad)} differ); use another --output "
                          f"or --overwrite")
    return True


def train_experts(real: RealData, output: str | Path, *, num_experts: int, epochs: int, recipe: str | ExpertRecipe = "mtt",
                  model: str = "convnet", model_kwargs: dict[str, Any] | None = None, keep_epochs: int | None = None,
                  seed: int = 0, dtype: str = "float32", resume: bool = False, overwrite: bool = False,
                  checkpoint_every: int = 1, device: str = "cpu", progress: bool = True,
                  recipe_overrides: dict[str, Any] | None = None, train_per_class: int | None = None) -> ExpertStore:
    """Train ``num_experts`` experts on ``real`` and store them in ``output`` (a directory).

    Under torchrun the experts are split round-robin across ranks (each writes its own files) and
    rank 0 writes the manifest after a barrier; the result does not depend on the number of ranks.

    Args:
        real: Training data.
        output: Directory to create or continue.
        num_experts: N.
        epochs: Epochs per expert.
        recipe: ``"mtt"``, ``"ftd"``, ``"ast"`` or an :class:`ExpertRecipe`.
        model, model_kwargs: Network (``build_model`` name and options).
        keep_epochs: Store only epochs ``0..keep_epochs`` (MTT needs ``max_start_epoch + expert_epochs``);
            None stores all.
        seed: Run seed; expert i's randomness derives from (seed, i).
        dtype: Snapshot storage, ``float32`` or ``float16``.
        resume: Continue a previous run in ``output``.
        overwrite: Replace a previous run in ``output``.
        checkpoint_every: Epochs between checkpoints of the expert in progress (0: none).
        device: Training device.
        progress: Show a progress bar (rank 0 only).
        recipe_overrides: Recipe fields to change (e.g. ``{"lr": 0.02}``).
        train_per_class: Train on a fixed random subset of this many images per class (a budget
            mode for slow machines; the same subset for every expert, drawn from ``seed``).

    Returns:
        The finished :class:`ExpertStore`.
    """
    rec = get_recipe(recipe) if isinstance(recipe, str) else recipe
    rec = rec.with_overrides(**(recipe_overrides or {}))
    if num_experts < 1 or epochs < 1:
        raise ConfigError("--num-experts and --epochs must be at least 1")
    if keep_epochs is not None and not 1 <= keep_epochs <= epochs:
        raise ConfigError(f"--keep-epochs must be in [1, --epochs={epochs}], got {keep_epochs}")
    if dtype not in ("float32", "float16"):
        raise ConfigError(f"--dtype must be float32 or float16, got {dtype!r}")
    out = prepare_output(output, resume=resume, overwrite=overwrite)
    if train_per_class is not None:
        real = subset_per_class(real, train_per_class, seed)
    jobs = [ExpertJob(i, seed, rec, model, dict(model_kwargs or {}), epochs, keep_epochs) for i in range(num_experts)]
    extra = [p.name for p in out.iterdir() if FILE_RE.match(p.name) and int(FILE_RE.match(p.name)[1]) >= num_experts]
    if extra:
        raise ConfigError(f"{out} holds expert files beyond --num-experts {num_experts} ({', '.join(sorted(extra))}); "
                          f"use the original --num-experts or --overwrite")
    for job in jobs:  # every rank validates every finished file: a mismatch stops all of them
        _check_finished(expert_path(out, job.index), job, real, dtype)
    mine = [j for j in distributed.shard(jobs) if not expert_path(out, j.index).exists()]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(mine) * epochs, desc=f"experts ({rec.name})", unit="ep",
               disable=not progress or not distributed.is_main() or None)
    for job in mine:
        path = expert_path(out, job.index)
        ckpt = Checkpointer(path.with_suffix(".ckpt"), every=checkpoint_every, resume=resume)
        started = time.time()

        def on_epoch(e: int, index: int = job.index) -> None:
            bar.update(1)
            log.info("expert %d: epoch %d/%d done", index, e + 1, epochs)

        res = train_expert(job, real, device=device, checkpoint=ckpt, on_epoch=on_epoch)
        meta = {"model": job.model, "model_kwargs": job.model_kwargs, "dataset": real.name, "recipe": rec.name,
                "space": real.space, "num_classes": real.num_classes, "image_shape": real.image_shape,
                "param_names": res["param_names"], "param_shapes": res["param_shapes"], "expert": job.index,
                "seed": job.expert_seed, "epochs_trained": epochs, "test_accuracy": res["test_accuracy"],
                "val_accuracy": res["val_accuracy"]}
        config = {"recipe": asdict(rec), "run_seed": seed, "dataset_fingerprint": real.fingerprint,
                  "train_images": int(real.train_images.shape[0]), "dsa_align_corners": True}
        write_expert(path, res["snapshots"], res["epochs"], meta, dtype=dtype, history=res["history"], config=config)
        atomic_write_json(path.with_suffix(".timing.json"), {
            "expert": job.index, "seconds_this_run": round(time.time() - started, 3),
            "epoch_seconds": [round(s, 3) for s in res["epoch_seconds"]], "device": str(device),
            "threads": torch.get_num_threads()})
        ckpt.remove()
        log.info("expert %d: test accuracy %.4f, val accuracy %.4f", job.index, res["test_accuracy"],
                 res["val_accuracy"])
    bar.close()
    distributed.barrier()
    store = ExpertStore.open(out)
    if distributed.is_main():
        write_manifest(store, seed=seed, dtype=dtype, recipe=rec)
    distributed.barrier()
    return store


def subset_per_class(real: RealData, n: int, seed: int) -> RealData:
    """``real`` with its training split cut to ``n`` random images per class (validation and test kept)."""
    if n < 1:
        raise ConfigError(f"--train-per-class must be at least 1, got {n}")
    if n > int(real.class_counts().min()):
        raise ConfigError(f"--train-per-class {n} exceeds the smallest class ({int(real.class_counts().min())} images)")
    idx = real.sample_indices(n, make_generator(seed, "expert-subset")).reshape(-1).sort().values
    return dataclasses.replace(real, train_images=real.train_images[idx].contiguous(),
                               train_labels=real.train_labels[idx], _class_index=None, _class_counts=None)


def write_manifest(store: ExpertStore, *, seed: int, dtype: str, recipe: ExpertRecipe) -> dict[str, Any]:
    """Write ``experts.json`` (settings, per-expert accuracy and time) atomically and return it."""
    experts = []
    for info in store.infos:
        timing_path = expert_path(store.directory, info["expert"]).with_suffix(".timing.json")
        timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
        secs = timing.get("epoch_seconds", [])
        experts.append({**info, "file": Path(info["file"]).name,
                        "seconds_per_epoch": round(statistics.mean(secs), 3) if secs else None,
                        "threads": timing.get("threads")})
    accs = [e["test_accuracy"] for e in experts]
    manifest = {
        "format": "dsdistill-experts-manifest", "format_version": 1, "model": store.model,
        "model_kwargs": store.model_kwargs, "dataset": store.dataset, "space": store.space,
        "recipe": asdict(recipe), "num_experts": store.num_experts, "epochs": store.epochs,
        "stored_epochs": [store.stored_epochs[0], store.stored_epochs[-1]], "dtype": dtype, "seed": seed,
        "num_params": store.num_params, "processes": distributed.world_size(),
        "train_images": json.loads(_config_json(store.files[0])).get("train_images"),
        "test_accuracy_mean": statistics.mean(accs), "test_accuracy_std": statistics.pstdev(accs),
        "val_accuracy_mean": statistics.mean(e["val_accuracy"] for e in experts),
        "experts": experts,
    }
    atomic_write_json(store.directory / MANIFEST, manifest, overwrite=True)
    return manifest


def _config_json(path: Path) -> str:
    from dsdistill.io.validate import open_h5

    with open_h5(path) as (f, chk):
        ds = chk.dataset(f, "config_json", kinds="S", shape=(), required=False)
        return "{}" if ds is None else chk.text(ds)
