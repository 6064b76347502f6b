"""The student-job loop every image evaluation protocol shares.

An evaluation is a list of independent ``(model, run, kind)`` jobs; each trains one fresh student
(seeded by ``(seed, "student", model, run)`` alone) and records its final test and validation
accuracy. Protocols differ only in how a student is trained (which images, labels, loss and
augmentation), so they hand :func:`run_jobs` a ``train(job, resume, checkpoint, progress)``
callable; everything else lives here once:

* sharding the jobs across torchrun processes and gathering the results in a fixed order;
* skipping jobs a checkpoint has finished, resuming the job in progress from its saved epoch
  (:class:`~dsdistill.evaluators.checkpoint.EvalCheckpoint`), and one SIGINT/SIGTERM guard for the
  whole loop, so a signal between two students is honoured at the next epoch boundary;
* the progress bar (epochs of this rank's jobs) and the seconds each student took, counting the
  time before a resume.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Union

from torch import nn

from dsdistill import distributed
from dsdistill.condenser import Checkpointer, signal_guard
from dsdistill.evaluators.checkpoint import EvalCheckpoint, Job, signature
from dsdistill.evaluators.report import RunResult
from dsdistill.models import build_model
from dsdistill.perf import prepare_model
from dsdistill.rng import derive_seed
from dsdistill.train import accuracy

#: ``train(job, resume, checkpoint, progress) -> (test accuracy, validation accuracy)``; ``resume``
#: is the saved training state or None, ``checkpoint`` the per-epoch hook or None, ``progress``
#: called once per finished epoch.
TrainJob = Callable[[Job, Union[dict, None], Union[Callable, None], Callable[[int], None]], tuple[float, float]]


def plan_jobs(models: Iterable[str], runs: int, kinds: Iterable[str]) -> tuple[list[Job], list[Job]]:
    """All ``(model, run, kind)`` jobs in report order, and this process's share of them."""
    kinds = list(kinds)
    all_jobs = [(m, r, k) for m in models for r in range(runs) for k in kinds]
    return all_jobs, distributed.shard(all_jobs)


def open_checkpoint(checkpoint: Checkpointer | None, syn: Any, real: Any, jobs: list[Job], seed: int,
                    settings: dict[str, Any]) -> EvalCheckpoint | None:
    """The evaluation's checkpoint for this exact evaluation (None without a checkpointer).

    Raises:
        ConfigError: The checkpoint file belongs to another evaluation.
    """
    if checkpoint is None:
        return None
    return EvalCheckpoint(checkpoint, signature(syn, real, jobs, seed, settings))


def new_student(model_name: str, real: Any, seed: int, run: int, device: str) -> nn.Module:
    """A fresh student, initialised from ``(seed, "student", model_name, run)`` (the same for every kind)."""
    return prepare_model(build_model(model_name, real.num_classes, real.image_shape,
                                     seed=derive_seed(seed, "student", model_name, run)), device)


def test_and_val(model: nn.Module, real: Any, device: str) -> tuple[float, float]:
    """Final ``(test accuracy, validation accuracy)`` as fractions (validation NaN without a split)."""
    test = accuracy(model, real.test_images.to(device), real.test_labels)
    val = accuracy(model, real.val_images.to(device), real.val_labels) if len(real.val_labels) else float("nan")
    return test, val


def run_jobs(all_jobs: list[Job], jobs: list[Job], train: TrainJob, *, epochs: int | Callable[[Job], int],
             state: EvalCheckpoint | None, checkpoint: Checkpointer | None, progress: bool) -> list[RunResult]:
    """Run this process's ``jobs`` through ``train`` and return every process's results in ``all_jobs`` order.

    Args:
        all_jobs, jobs: From :func:`plan_jobs`.
        train: Trains one job's student (see :data:`TrainJob`).
        epochs: Epochs of every job, or a function of the job (for the progress bar and checkpoints).
        state: From :func:`open_checkpoint`.
        checkpoint: The checkpointer behind ``state`` (its signal guard wraps the loop).
        progress: Show a progress bar (main process only).
    """
    from tqdm.auto import tqdm

    epochs_of = epochs if callable(epochs) else (lambda _job: epochs)
    bar = tqdm(total=sum(epochs_of(job) for job in jobs), desc="evaluate", unit="ep",
               disable=not progress or not distributed.is_main() or None)
    local: list[RunResult] = []
    with signal_guard(checkpoint):
        for job in jobs:
            model_name, run, kind = job
            if state is not None and job in state.done:
                local.append(state.done[job])
                bar.update(epochs_of(job))
                continue
            resume, before = state.resume_state(job) if state is not None else (None, 0.0)
            bar.update(0 if resume is None else int(resume["epoch"]))
            started = time.time()
            hook = None if state is None else state.epoch_hook(job, epochs_of(job), started, before)
            test, val = train(job, resume, hook, lambda _epoch: bar.update(1))
            local.append(RunResult(model_name, kind, run, test, val, round(before + time.time() - started, 2)))
            if state is not None:
                state.finish(job, local[-1])
            bar.set_postfix({kind[:3]: f"{100 * test:.2f}"})
    bar.close()
    order = {job: i for i, job in enumerate(all_jobs)}
    return sorted(distributed.gather(local), key=lambda r: order[(r.model, r.run, r.kind)])
