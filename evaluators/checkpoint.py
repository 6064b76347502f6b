"""Checkpoint and resume for evaluations: finished students and the student in progress.

An evaluation (the dc/tm protocols of :mod:`dsdistill.evaluators.standard`, the ``softlabel``
protocol of :mod:`dsdistill.evaluators.softlabel`) is a list of independent (model, run, kind)
jobs, each a student trained for the protocol's epochs. :class:`EvalCheckpoint` keeps, in one
``torch.save`` file written atomically:

* ``done``: the :class:`~dsdistill.evaluators.report.RunResult` of every finished job (as dicts);
* ``current``: the job in progress with its training state after the last saved epoch (model,
  optimiser, scheduler and generator states, see :func:`dsdistill.train.training_state`);
* ``signature``: what was being evaluated (set content hash, dataset fingerprint, models, runs,
  kinds, seed, protocol settings, rank and world size).

A resumed evaluation skips the finished jobs, restarts the job in progress from its saved epoch
and therefore reports bitwise the same numbers (on CPU) as an uninterrupted one; only the
``seconds`` of a resumed job differ. A checkpoint made by a different evaluation is refused.
SIGINT/SIGTERM (through :meth:`dsdistill.condenser.Checkpointer.guard`) save at the next epoch
boundary and raise :class:`~dsdistill.condenser.Interrupted`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any, Callable

import torch

from dsdistill.condenser import Checkpointer, Interrupted
from dsdistill.errors import ConfigError
from dsdistill.evaluators.report import RunResult

Job = tuple[str, int, str]


def signature(syn: Any, real: Any, jobs: list[Job], seed: int, settings: dict[str, Any]) -> str:
    """A JSON string identifying one evaluation (a checkpoint is only resumed by the same one)."""
    digest = hashlib.sha256(syn.images.detach().cpu().contiguous().numpy().tobytes())
    digest.update(syn.labels.detach().cpu().contiguous().numpy().tobytes())
    if syn.soft_labels is not None:
        digest.update(syn.soft_labels.values.detach().cpu().float().contiguous().numpy().tobytes())
    replay = getattr(syn, "replay", None)
    if replay is not None:  # replayed labels and their augmentation parameters (softlabel protocol)
        for t in (replay.values, replay.indices, replay.crops, replay.flips, replay.partners, replay.mix_boxes,
                  replay.order):
            if t is not None:
                digest.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    for name, comp in sorted(getattr(syn, "components", {}).items()):  # compensators, DBR labels, adapters
        digest.update(f"{name}:{comp.part}:{tuple(comp.values.shape)}:{comp.values.dtype}".encode())
        digest.update(comp.values.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return json.dumps({"set": digest.hexdigest(), "lr": syn.lr, "dataset": real.name,
                       "fingerprint": getattr(real, "fingerprint", None), "jobs": [list(j) for j in jobs],
                       "seed": seed, "protocol": settings}, sort_keys=True, default=str)


class EvalCheckpoint:
    """The evaluation's checkpoint file (one per process under torchrun).

    Args:
        checkpointer: Where and how often (``every`` counts epochs; 0 saves only on a signal).
        signature: From :func:`signature`.
    """

    def __init__(self, checkpointer: Checkpointer, signature: str) -> None:
        self.ckpt, self.signature = checkpointer, signature
        self.done: dict[Job, RunResult] = {}
        self.current: dict[str, Any] | None = None
        state = checkpointer.load()
        if state is not None:
            if state.get("signature") != signature:
                raise ConfigError(f"checkpoint {checkpointer.path} belongs to a different evaluation (other "
                                  f"file, models, runs, seed or settings); delete it or run without --resume")
            for row in state["done"]:
                result = RunResult(**row)
                self.done[(result.model, result.run, result.kind)] = result
            self.current = state["current"]

    @property
    def path(self):
        return self.ckpt.path

    def guard(self):
        return self.ckpt.guard()

    def resume_state(self, job: Job) -> tuple[dict[str, Any] | None, float]:
        """The saved training state of ``job`` (None to start it afresh) and its seconds so far."""
        if self.current is not None and tuple(self.current["job"]) == tuple(job):
            return self.current["train"], float(self.current["seconds"])
        return None, 0.0

    def _save(self, current: dict[str, Any] | None) -> None:
        self.ckpt.save({"signature": self.signature, "current": current,
                        "done": [dataclasses.asdict(r) for r in self.done.values()]})

    def epoch_hook(self, job: Job, epochs: int, started: float,
                   before: float) -> Callable[[int, Callable[[], dict]], None]:
        """The ``checkpoint`` callback of :func:`dsdistill.train.train_classifier` for ``job``."""

        def hook(epochs_done: int, state: Callable[[], dict]) -> None:
            if not self.ckpt.due(epochs_done) or (epochs_done == epochs and not self.ckpt.stop_requested):
                return  # the finished job is saved by finish() with its accuracies
            self._save({"job": list(job), "train": state(), "seconds": before + time.time() - started})
            if self.ckpt.stop_requested:
                raise Interrupted(str(self.ckpt.path))

        return hook

    def finish(self, job: Job, result: RunResult) -> None:
        """Record a finished job (saved at once when checkpointing is on or a stop was requested)."""
        self.done[job] = result
        self.current = None
        if self.ckpt.every > 0 or self.ckpt.stop_requested:
            self._save(None)
        if self.ckpt.stop_requested:
            raise Interrupted(str(self.ckpt.path))

    def remove(self) -> None:
        self.ckpt.remove()
