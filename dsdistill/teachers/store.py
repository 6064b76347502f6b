"""Teacher files on disk and the committee loader.

A teachers directory holds, per teacher ``NAME`` (a registered model name):

* ``NAME.pt``: the ``state_dict`` (tensors only) written with ``torch.save``; read back with
  ``torch.load(weights_only=True)``;
* ``NAME.json``: what it is and how good it is: ``model``, ``dataset``, ``dataset_fingerprint``,
  ``num_classes``, ``image_shape``, ``space``, ``epochs``, ``seed``, ``val_accuracy`` (on the
  validation split carved out of the training set; the committee prior), ``test_accuracy``
  (reported for the reader, never used by any code path), ``recipe``, ``sha256`` of ``NAME.pt``.

Both are written atomically, the ``.json`` last, so a ``.json`` marks a finished teacher.
``committee.json`` (written by rank 0 after training) lists the teachers and their priors.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsdistill.errors import ConfigError, DataNotFoundError
from dsdistill.io.atomic import atomic_path, atomic_write_json

MANIFEST = "committee.json"


@dataclass
class Teacher:
    """One trained classifier of a committee.

    Attributes:
        name: Teacher name (its registered model name).
        model: The network, in eval mode, parameters frozen.
        val_accuracy: Accuracy (fraction) on the validation split: the committee prior.
        path: The ``.pt`` file it was loaded from.
        meta: The full ``.json`` record.
    """

    name: str
    model: nn.Module
    val_accuracy: float
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prior(self) -> float:
        """Validation accuracy in percent (CV-DD's priors are percentages, used as softmax(prior / T))."""
        return 100.0 * self.val_accuracy


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has BatchNorm2d layers (the statistics BN-matching condensers need)."""
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_teacher(directory: str | os.PathLike, name: str, model: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``NAME.pt`` then ``NAME.json`` (both atomically) and return the stored record."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / f"{name}.pt") as tmp:
        torch.save(cpu_state_dict(model), tmp)
    record = {**meta, "sha256": file_sha256(directory / f"{name}.pt")}
    atomic_write_json(directory / f"{name}.json", record)
    return record


def finished(directory: str | os.PathLike, name: str) -> bool:
    """True when ``NAME.json`` and ``NAME.pt`` both exist (the json is written last)."""
    directory = Path(directory)
    return (directory / f"{name}.json").exists() and (directory / f"{name}.pt").exists()


def read_meta(directory: str | os.PathLike, name: str) -> dict[str, Any]:
    path = Path(directory) / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"teacher record {path} is unreadable ({exc}); retrain it with --overwrite") from exc


def teacher_names(directory: str | os.PathLike) -> list[str]:
    """Names of the finished teachers in ``directory`` (manifest order if present, else sorted)."""
    directory = Path(directory)
    found = sorted(p.stem for p in directory.glob("*.json") if p.name != MANIFEST and finished(directory, p.stem))
    manifest = directory / MANIFEST
    if manifest.exists():
        try:
            order = [t["name"] for t in json.loads(manifest.read_text()).get("teachers", [])]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            order = []
        return [n for n in order if n in found] + [n for n in found if n not in order]
    return found


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a ``torch.save`` file (``weights_only=True``); accepts ``{"state_dict": ...}``
    / ``{"model": ...}`` wrappers and strips DataParallel's ``module.`` prefix."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataNotFoundError(f"checkpoint {path} does not exist") from None
    except Exception as exc:
        raise ConfigError(f"checkpoint {path} cannot be read as a weights-only torch file ({exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(f"checkpoint {path} is not a state_dict of tensors")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


def state_mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """What keeps ``state`` from loading into a module whose state dict is ``own``, in one line
    (missing keys, unexpected keys, shape mismatches, two examples each); "" when it fits."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    parts = [f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:2])})" if missing else "",
             f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:2])})" if unexpected else "",
             f"{len(wrong)} shape mismatch(es) (e.g. {'; '.join(wrong[:2])})" if wrong else ""]
    return "; ".join(p for p in parts if p)


def load_into(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``model.load_state_dict(state)`` with a one-line ConfigError when it does not fit."""
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise ConfigError(f"{what} does not fit: {problem}")
    model.load_state_dict(state)


def load_committee(directory: str | os.PathLike, names: list[str] | None = None, device: str = "cpu",
                   real: Any = None) -> list["Teacher"]:
    """Load the finished teachers of ``directory`` as frozen eval-mode models.

    Args:
        directory: A directory written by ``dsdistill teachers`` / :func:`train_teachers`.
        names: Teachers to load, in this order (default: all finished ones, manifest order).
        device: Where the models go.
        real: Optional :class:`~dsdistill.data.real.RealData`; when given, every teacher must have
            been trained on that dataset (fingerprint), classes, image shape and space.

    Returns:
        The teachers, in order.

    Raises:
        DataNotFoundError: The directory, or a named teacher, does not exist.
        ConfigError: A teacher does not fit ``real`` or its weights do not fit its model.
    """
    from dsdistill.models import build_model

    directory = Path(directory)
    if not directory.is_dir():
        raise DataNotFoundError(f"teachers directory {directory} does not exist; train a committee with "
                                f"`dsdistill teachers --dataset D --models ... --output {directory}`")
    available = teacher_names(directory)
    names = list(names) if names else available
    if not names:
        raise DataNotFoundError(f"no finished teachers in {directory}; run "
                                f"`dsdistill teachers ... --output {directory}`")
    teachers = []
    for name in names:
        if name not in available:
            raise DataNotFoundError(f"teacher '{name}' not found in {directory} "
                                    f"(available: {', '.join(available) or 'none'})")
        meta = read_meta(directory, name)
        if real is not None:
            check_fits(meta, real, name)
        # seed=0: the init is overwritten below; a fixed seed keeps the global RNG untouched
        model = build_model(meta["model"], int(meta["num_classes"]), tuple(meta["image_shape"]), seed=0)
        load_into(model, load_state(directory / f"{name}.pt"), f"teacher {directory / name}.pt")
        model = model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        teachers.append(Teacher(name, model, float(meta["val_accuracy"]), directory / f"{name}.pt", meta))
    return teachers


def check_fits(meta: dict[str, Any], real: Any, name: str) -> None:
    """Raise ConfigError unless the teacher record ``meta`` was trained on ``real``'s data and space."""
    problems = []
    if int(meta.get("num_classes", -1)) != real.num_classes:
        problems.append(f"{meta.get('num_classes')} classes vs {real.num_classes}")
    if tuple(meta.get("image_shape", ())) != tuple(real.image_shape):
        problems.append(f"image shape {tuple(meta.get('image_shape', ()))} vs {tuple(real.image_shape)}")
    if meta.get("space") != real.space:
        problems.append(f"space {meta.get('space')} vs {real.space}")
    if meta.get("dataset_fingerprint") and real.fingerprint and meta["dataset_fingerprint"] != real.fingerprint:
        problems.append(f"dataset {meta.get('dataset')} (other files) vs {real.name}")
    if problems:
        raise ConfigError(f"teacher '{name}' does not fit {real.name}: {'; '.join(problems)}")


def write_manifest(directory: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """``committee.json``: the teachers and their validation priors (test accuracy only reported).

    Teachers already listed and not in ``records`` keep their place (a later call that adds or
    retrains some teachers extends the committee rather than replacing it).
    """
    path = Path(directory) / MANIFEST
    try:
        old = [t for t in json.loads(path.read_text()).get("teachers", []) if isinstance(t, dict)]
    except (OSError, json.JSONDecodeError, AttributeError):
        old = []
    new = {r["name"]: {"name": r["name"], "model": r["model"], "val_accuracy": r["val_accuracy"],
                       "test_accuracy_reported_only": r.get("test_accuracy")} for r in records}
    teachers = [new.pop(t.get("name"), t) for t in old if finished(directory, t.get("name", ""))] + list(new.values())
    atomic_write_json(Path(directory) / MANIFEST, {"dataset": records[0]["dataset"] if records else None,
                                                   "prior": "val_accuracy", "teachers": teachers})
