"""Retrain fresh students on a synthetic set and test them on the real test split.

For every (model, run) pair a student is trained on the synthetic set, and (by default) another on
a random real subset of the same IPC under the same protocol, so the gain over random selection is
always printed next to the result. Nothing is selected on the test split: the accuracy reported
is the final epoch's; validation accuracy is recorded next to it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from dsdistill import distributed
from dsdistill.augment import DSA, strategy_for
from dsdistill.data.real import RealData
from dsdistill.errors import ConfigError
from dsdistill.condenser import Checkpointer
from dsdistill.evaluators.jobs import open_checkpoint, plan_jobs, run_jobs, test_and_val
from dsdistill.evaluators.protocols import Protocol, protocol_for
from dsdistill.evaluators.storage import storage_breakdown
from dsdistill.evaluators.report import EvalReport
from dsdistill.models import build_model
from dsdistill.perf import prepare_model
from dsdistill.rng import derive_seed, make_generator
from dsdistill.synthetic import SyntheticSet
from dsdistill.train import train_classifier


def check_compatible(syn: SyntheticSet, real: RealData) -> None:
    """The set and the real data must describe the same task in the same space."""
    if syn.num_classes != real.num_classes or tuple(syn.image_shape) != tuple(real.image_shape):
        raise ConfigError(f"the synthetic set ({syn.dataset}: {syn.num_classes} classes, images "
                          f"{tuple(syn.image_shape)}) does not match dataset {real.name} ({real.num_classes} classes, "
                          f"images {real.image_shape}); pass the dataset the set was made from")
    if syn.space != real.space:
        raise ConfigError(f"the synthetic set lives in '{syn.space}' space but the real data was loaded in "
                          f"'{real.space}' space; load the real data with zca={syn.space == 'zca'}")


def train_and_test(images: torch.Tensor, labels: torch.Tensor, real: RealData, model_name: str,
                   protocol: Protocol, *, soft: torch.Tensor | None, lr_set: SyntheticSet | None,
                   model_seed: int, generator: torch.Generator, device: str,
                   progress: Callable[[int], None] | None = None, resume: dict | None = None,
                   checkpoint: Callable | None = None) -> tuple[float, float]:
    """Train one student under ``protocol``; return final (test accuracy, validation accuracy).

    ``resume``/``checkpoint`` are passed to :func:`~dsdistill.train.train_classifier`."""
    model = prepare_model(build_model(model_name, real.num_classes, real.image_shape, seed=model_seed), device)
    dsa = DSA(strategy_for(real.name)) if protocol.augment == "dsa" else None
    settings = protocol.settings_for(lr_set)
    train_classifier(model, images.to(device), labels.to(device), settings, augment=dsa,
                     soft_targets=None if soft is None else soft.to(device), generator=generator,
                     progress=progress, resume=resume, checkpoint=checkpoint)
    return test_and_val(model, real, device)


def evaluate(
    syn: SyntheticSet,
    real: RealData,
    *,
    models: list[str] | tuple[str, ...] = ("convnet",),
    runs: int = 3,
    protocol: str | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    baseline: bool = True,
    robustness: bool = False,
    progress: bool = True,
    file: str = "",
    checkpoint: Checkpointer | None = None,
) -> EvalReport:
    """Evaluate ``syn`` under a protocol; see the module docstring.

    Args:
        syn: The synthetic set.
        real: Real data of the same dataset and space (test split for reporting).
        models: Student architectures (a cross-architecture table when several).
        runs: Students per model (different seeds); mean ± std is reported.
        protocol: Protocol name; default from the file (see ``protocol_for``).
        epochs, lr, batch_size: Overrides of the protocol's settings (recorded in the report).
        seed: Base seed of student initialisation, shuffling, augmentation and random subsets.
        device: ``"cpu"`` or ``"cuda"``.
        baseline: Also train on random real subsets of the same IPC.
        robustness: Also train without augmentation (kinds ``synthetic_noaug``/``random_noaug``) and,
            for soft-label sets, on the hard labels (``synthetic_hard``): the inputs of the
            label- and augmentation-robust scores of ``dsdistill compare``.
        progress: Show a progress bar.
        file: Path shown in the report.
        checkpoint: Save finished students and the one in progress there every ``checkpoint.every``
            epochs and resume from it (see :mod:`dsdistill.evaluators.checkpoint`); SIGINT/SIGTERM
            save and raise :class:`~dsdistill.condenser.Interrupted`.
    """
    check_compatible(syn, real)
    if protocol_for(syn, protocol).name == "softlabel":  # replayed soft labels: evaluators/softlabel.py
        from dsdistill.evaluators.softlabel import evaluate_softlabel

        return evaluate_softlabel(syn, real, models=models, runs=runs, epochs=epochs, lr=lr, batch_size=batch_size,
                                  seed=seed, device=device, baseline=baseline, progress=progress, file=file,
                                  checkpoint=checkpoint)
    if runs < 1:
        raise ConfigError(f"--runs must be at least 1, got {runs}")
    proto = protocol_for(syn, protocol).with_overrides(epochs=epochs, lr=lr, batch_size=batch_size)
    soft = syn.soft_labels.probabilities() if (proto.use_soft_labels and syn.soft_labels is not None) else None
    kinds = ["synthetic"] + (["random"] if baseline else [])
    if robustness:  # the conditions DD-Ranking's LRS/ARS need (see dsdistill.compare)
        kinds += ["synthetic_noaug"] + (["random_noaug"] if baseline else [])
        kinds += ["synthetic_hard"] if soft is not None else []
    all_jobs, jobs = plan_jobs(models, runs, kinds)
    report = EvalReport(
        file=file, method=syn.method, dataset=syn.dataset, ipc=syn.ipc, num_classes=syn.num_classes,
        protocol={"name": proto.name, "description": proto.description, **vars(proto.settings),
                  "lr_used": proto.settings_for(syn).lr, "augment": proto.augment,
                  "soft_labels": soft is not None},
        settings={"models": list(models), "runs": runs, "seed": seed, "device": device,
                  "processes": distributed.world_size(),
                  "selection": "final epoch (no test-set selection)", "std": "population (ddof=0)"},
    )
    state = open_checkpoint(checkpoint, syn, real, jobs, seed, {**report.protocol, **report.settings})

    def train(job, resume, hook, tick):  # every job is seeded by (seed, kind, model, run) alone
        model_name, run, kind = job
        gen = make_generator(seed, "eval", kind, model_name, run)
        if kind.startswith("synthetic"):
            images, labels, lr_set = syn.images, syn.labels, syn
            soft_t = None if kind == "synthetic_hard" else soft
        else:
            idx = real.sample_indices(syn.ipc, make_generator(seed, "random-subset", run)).reshape(-1)
            images, labels, lr_set, soft_t = real.train_images[idx], real.train_labels[idx], None, None
        run_proto = dataclasses.replace(proto, augment="none") if kind.endswith("_noaug") else proto
        return train_and_test(images, labels, real, model_name, run_proto, soft=soft_t, lr_set=lr_set,
                              model_seed=derive_seed(seed, "student", model_name, run), generator=gen, device=device,
                              progress=tick, resume=resume, checkpoint=hook)

    report.runs = run_jobs(all_jobs, jobs, train, epochs=proto.settings.epochs, state=state, checkpoint=checkpoint,
                           progress=progress)
    report.storage = storage_breakdown(syn, real, epochs=proto.settings.epochs if soft is not None else None)
    return report
