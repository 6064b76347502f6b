"""The condenser contract, config resolution and the checkpointed iteration loop.

A condenser is registered in ``CONDENSERS`` and has a config dataclass whose defaults are the
paper's recipe; ``recipe(dataset, ipc)`` may adjust them per dataset/IPC, user overrides win.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

import torch

from dsdistill.data.real import RealData
from dsdistill.errors import ConfigError, NumericalError
from dsdistill.synthetic import SyntheticSet

log = logging.getLogger(__name__)


class Condenser:
    """Base class. Subclasses set ``name``, ``Config`` and implement :meth:`condense`.

    Attributes:
        config: The resolved config dataclass instance.
    """

    name: str = ""
    Config: type = object
    protocol: str = "dc"  # evaluation protocol the method's sets are meant for
    #: True when :meth:`condense` splits its work across torchrun processes (``dsdistill.distributed``);
    #: other methods are refused under torchrun instead of repeating the whole run on every rank.
    splits_across_processes: bool = False

    def __init__(self, config: Any) -> None:
        self.config = config

    @classmethod
    def recipe(cls, dataset: str, ipc: int) -> dict[str, Any]:
        """Per-dataset/IPC overrides of the config defaults (the papers' tables)."""
        return {}

    @classmethod
    def from_settings(cls, dataset: str, ipc: int, overrides: dict[str, Any] | None = None) -> "Condenser":
        """Build with defaults -> recipe(dataset, ipc) -> ``overrides`` (None values ignored)."""
        return cls(resolve_config(cls.Config, {**cls.recipe(dataset, ipc), **(overrides or {})}))

    def condense(self, real: RealData, ipc: int, *, seed: int = 0, device: str = "cpu",
                 progress: bool = True, checkpoint: "Checkpointer | None" = None) -> SyntheticSet:
        raise NotImplementedError


def number_from_text(value: Any) -> Any:
    """``"1e-6"`` -> ``1e-06``: YAML 1.1 (``yaml.safe_load``, used for ``-p`` values and config files)
    reads exponent notation without a dot as a string; anything else (including "nan"/"inf" text)
    is returned unchanged."""
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def resolve_config(config_cls: type, overrides: dict[str, Any]) -> Any:
    """Instantiate ``config_cls`` with ``overrides``; unknown keys or bad types raise ConfigError."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for {config_cls.__qualname__}; "
                          f"valid: {', '.join(sorted(fields))}")
    values = {}
    for key, value in overrides.items():
        if value is None:
            continue
        default = fields[key].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"setting {key} must be true or false, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            value = number_from_text(value)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"setting {key} must be a number, got {value!r}")
            value = type(default)(value) if not (isinstance(default, int) and isinstance(value, float)
                                                 and not value.is_integer()) else value
        values[key] = value
    return config_cls(**values)


def check_ipc(real: RealData, ipc: int) -> None:
    """IPC must be positive and no larger than the smallest class of the training split."""
    smallest = int(real.class_counts().min())
    if ipc <= 0:
        raise ConfigError(f"--ipc must be a positive integer, got {ipc}")
    if ipc > smallest:
        raise ConfigError(f"--ipc {ipc} is larger than the smallest class of {real.name} "
                          f"({smallest} training images); choose --ipc <= {smallest}")


class Checkpointer:
    """Periodic checkpoints of an iterative run, resumable exactly.

    The state (tensors, generator states, ints) is written with ``torch.save`` to a temporary
    file and renamed, and read back with ``torch.load(weights_only=True)``. SIGINT/SIGTERM during
    :meth:`guard` request a final checkpoint at the next iteration boundary.

    Args:
        path: Checkpoint file (e.g. ``out.h5.ckpt``).
        every: Save every this many iterations (0 disables periodic saves).
        resume: Load ``path`` at start if it exists.
        signature: What the run is (method, dataset, IPC, seed, settings), as a flat dict of
            JSON-able values. Saved with every checkpoint; resuming a checkpoint whose signature
            differs raises ConfigError naming the differences, instead of silently continuing a
            different run. ``iterations`` is deliberately left out by callers: resuming with more
            iterations extends a run.
    """

    def __init__(self, path: str | os.PathLike, every: int = 50, resume: bool = False,
                 signature: dict[str, Any] | None = None) -> None:
        self.path, self.every, self.resume = Path(path), every, resume
        self.signature = None if signature is None else json.dumps(signature, sort_keys=True, default=str)
        self.stop_requested = False

    def load(self) -> dict[str, Any] | None:
        if self.resume and self.path.exists():
            try:
                state = torch.load(self.path, weights_only=True)
            except Exception as exc:  # corrupt checkpoint: say so rather than silently restart
                raise ConfigError(f"checkpoint {self.path} is unreadable ({exc}); delete it to start over") from exc
            stored = state.pop("run_signature", None) if isinstance(state, dict) else None
            if self.signature is not None and stored is not None and stored != self.signature:
                mine, theirs = json.loads(self.signature), json.loads(stored)
                diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                raise ConfigError(f"checkpoint {self.path} belongs to a different run ({', '.join(diff)} differ); "
                                  "resume with the original settings, or delete it (or use --overwrite) to start over")
            return state
        return None

    def save(self, state: dict[str, Any]) -> None:
        from dsdistill.io.atomic import atomic_path  # temp file, fsync, rename: a kill never leaves half a file

        if self.signature is not None:
            state = {**state, "run_signature": self.signature}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def due(self, iteration: int) -> bool:
        return self.stop_requested or (self.every > 0 and iteration % self.every == 0)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def guard(self) -> "_SignalGuard":
        return _SignalGuard(self)


class _SignalGuard:
    def __init__(self, ckpt: Checkpointer) -> None:
        self.ckpt, self.previous = ckpt, {}

    def __enter__(self) -> "_SignalGuard":
        def handler(signum, frame):
            self.ckpt.stop_requested = True

        if torch.multiprocessing.current_process().name == "MainProcess":
            try:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    self.previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                self.previous = {}
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self.previous.items():
            signal.signal(sig, old)


def signal_guard(checkpoint: "Checkpointer | None"):
    """Context in which SIGINT/SIGTERM request a final checkpoint (a no-op without a checkpointer)."""
    return checkpoint.guard() if checkpoint is not None else contextlib.nullcontext()


def checkpoint_boundary(checkpoint: "Checkpointer | None", iteration: int, save: Callable[[int], None]) -> None:
    """At an iteration boundary: ``save(iteration)`` when due, then stop with :class:`Interrupted`
    if a signal asked for it."""
    if checkpoint is not None and checkpoint.due(iteration):
        save(iteration)
        if checkpoint.stop_requested:
            raise Interrupted(str(checkpoint.path))


class Interrupted(Exception):
    """Raised after a final checkpoint when SIGINT/SIGTERM asked the run to stop."""


def guarded_step(step: Callable[[], torch.Tensor], tensors: list[torch.Tensor], iteration: int,
                 failures: list[int], max_failures: int = 5,
                 hint: str = "lower the image learning rate (lr_img) and retry") -> float | None:
    """Run one optimisation step; if the loss or the tensors become non-finite, roll them back.

    Args:
        step: Performs the update and returns the loss.
        tensors: Tensors the step updates (restored on failure).
        iteration: For the log message.
        failures: Mutable list of iterations that failed (appended to).
        max_failures: Consecutive failures after which NumericalError is raised.
        hint: The advice ending the NumericalError message.

    Returns:
        The loss as a float, or None when the step was rolled back.
    """
    backup = [t.detach().clone() for t in tensors]
    loss = step()
    ok = bool(torch.isfinite(loss).all()) and all(bool(torch.isfinite(t).all()) for t in tensors)
    if ok:
        failures.clear()
        return float(loss)
    with torch.no_grad():
        for t, b in zip(tensors, backup):
            t.copy_(b)
    failures.append(iteration)
    log.warning("non-finite loss or images at iteration %d; step rolled back", iteration)
    if len(failures) >= max_failures:
        raise NumericalError(f"{max_failures} consecutive non-finite steps (iterations {failures}); "
                             f"{hint}")
    return None


def provenance(condenser: Condenser, real: RealData, ipc: int, seed: int, device: str,
               started: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record stored in ``/provenance/config_json`` of every synthetic set."""
    import kornia

    import dsdistill

    return {
        "method": condenser.name,
        "config": dataclasses.asdict(condenser.config),
        "dataset": real.name,
        "dataset_fingerprint": real.fingerprint,
        "dataset_source": real.source,
        "ipc": ipc,
        "seed": seed,
        "device": str(device),
        "elapsed_seconds": round(time.time() - started, 3),
        "versions": {"dsdistill": dsdistill.__version__, "torch": torch.__version__,
                     "kornia": kornia.__version__},
        **(extra or {}),
    }


def package(condenser: Condenser, real: RealData, images: torch.Tensor, ipc: int, *, seed: int,
            device: str, started: float, extra: dict[str, Any] | None = None, **fields: Any) -> SyntheticSet:
    """Wrap class-major ``(K * ipc, C, H, W)`` images into a :class:`SyntheticSet` in ``real``'s space."""
    labels = torch.arange(real.num_classes).repeat_interleave(ipc)
    info = real.preprocess_info()
    return SyntheticSet(
        images=images.detach().float().cpu().contiguous(),
        labels=labels,
        num_classes=real.num_classes,
        method=condenser.name,
        dataset=real.name,
        ipc=ipc,
        space=info["space"],
        mean=info["mean"],
        std=info["std"],
        zca=info["zca"],
        class_names=list(real.class_names),
        provenance=provenance(condenser, real, ipc, seed, device, started, extra),
        protocol=condenser.protocol,
        **fields,
    )
