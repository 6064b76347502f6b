"""The Python API behind the CLI: ``condense``, ``evaluate_file``, ``catalogue``.

Example:
    >>> from dsdistill.api import condense, evaluate_file          # doctest: +SKIP
    >>> syn = condense("dm", "mnist", ipc=10, iterations=200, output="dm.h5")
    >>> report = evaluate_file("dm.h5", runs=3, epochs=300)
    >>> print(report.table())
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dsdistill.errors import ConfigError
from dsdistill.synthetic import SyntheticSet


def _registries() -> None:
    import dsdistill.evaluators  # noqa: F401
    import dsdistill.methods  # noqa: F401
    import dsdistill.models  # noqa: F401


def catalogue() -> dict[str, list[str]]:
    """Registered names: ``{"methods", "datasets", "models", "protocols"}``."""
    _registries()
    from dsdistill.registry import CONDENSERS, DATASETS, EVALUATORS, MODELS

    from dsdistill.registry import GRAPH_CONDENSERS

    return {"methods": CONDENSERS.names(), "datasets": DATASETS.names(), "models": MODELS.names(),
            "protocols": EVALUATORS.names(), "graph_methods": GRAPH_CONDENSERS.names()}


def _check_output(output: str | os.PathLike | None, overwrite: bool) -> None:
    if output is None:
        return
    from dsdistill.io.atomic import check_overwrite

    path = Path(output)
    check_overwrite(path, overwrite)
    if not path.parent.is_dir():
        raise ConfigError(f"output directory {path.parent} does not exist; create it first")


def condense(method: str, dataset: str, ipc: int, *, output: str | os.PathLike | None = None,
             iterations: int | None = None, params: dict[str, Any] | None = None, seed: int = 0,
             zca: bool = False, overwrite: bool = False, resume: bool = False, checkpoint_every: int = 50,
             data_root: str | None = None, download: bool = False, device: str = "cpu",
             threads: int | None = None, progress: bool = True, deterministic: bool = False) -> SyntheticSet:
    """Run condenser ``method`` on ``dataset`` and (optionally) write the set to ``output``.

    Names are validated before any data is loaded; the output is written atomically at the end,
    so a failed or interrupted run never leaves a file under ``output`` (a checkpoint
    ``output + ".ckpt"`` is kept for ``resume=True`` instead).
    """
    _registries()
    from dsdistill.data.graphs import is_graph_dataset
    from dsdistill.graph_api import condense_graph, is_graph_method

    if is_graph_dataset(dataset) or is_graph_method(method):  # graph datasets/methods: dsdistill.graph_api
        return condense_graph(method, dataset, ipc, output=output, seed=seed, overwrite=overwrite, data_root=data_root,
                              params={**(params or {}), **({} if iterations is None else {"iterations": iterations})},
                              device=device, threads=threads, progress=progress)
    from dsdistill.condenser import Checkpointer
    from dsdistill.data import load_real
    from dsdistill.data.catalogue import PREFIXES, canonical_name
    from dsdistill.io import save_synthetic
    from dsdistill.perf import set_deterministic, set_threads, tune_allocator
    from dsdistill.registry import CONDENSERS, DATASETS

    cls = CONDENSERS.get(method)
    key = canonical_name(dataset)
    if not key.startswith(PREFIXES):
        DATASETS.get(key)
    if ipc <= 0:
        raise ConfigError(f"--ipc must be a positive integer, got {ipc}")
    _check_output(output, overwrite)
    overrides = dict(params or {})
    if iterations is not None:
        overrides["iterations"] = iterations
    condenser = cls.from_settings(key, ipc, overrides)
    from dsdistill import distributed

    if distributed.launched() and not cls.splits_across_processes:
        raise ConfigError(f"method {method!r} does not split its work across torchrun processes (every process "
                          "would repeat the whole run); run it as a single process without torchrun")
    set_threads(threads)
    set_deterministic(deterministic)
    tune_allocator()
    real = load_real(key, data_root, download=download, zca=zca)
    checkpoint = None
    if output is not None and hasattr(condenser.config, "iterations"):
        import dataclasses

        settings = {k: v for k, v in dataclasses.asdict(condenser.config).items() if k != "iterations"}
        checkpoint = Checkpointer(f"{output}.ckpt", every=checkpoint_every, resume=resume, signature={
            "method": method, "dataset": key, "ipc": ipc, "seed": seed, "zca": zca, **settings})
    syn = condenser.condense(real, ipc, seed=seed, device=device, progress=progress, checkpoint=checkpoint)

    if output is not None and distributed.is_main():  # under torchrun (sre2l, cvdd) only rank 0 writes
        save_synthetic(syn, output, overwrite=True)
        if checkpoint is not None:
            checkpoint.remove()
    return syn


def with_protocol_options(protocol: Any, overrides: dict[str, Any]) -> Any:
    """A copy of a protocol recipe (a dataclass) with some fields replaced, checked by name and type.

    Raises:
        ConfigError: An unknown field, or a value of the wrong type.
    """
    import dataclasses
    import math

    fields = {f.name for f in dataclasses.fields(protocol)} - {"name", "description"}
    clean = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(f"protocol {protocol.name!r} has no option {key!r}; it takes: {', '.join(sorted(fields))}")
        default = getattr(protocol, key)
        if isinstance(default, float) and isinstance(value, str):
            from dsdistill.condenser import number_from_text

            value = number_from_text(value)  # "1e-3" is a string to YAML 1.1
        ok = (isinstance(value, bool) if isinstance(default, bool) else
              isinstance(value, int) and not isinstance(value, bool) if isinstance(default, int) else
              isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              if isinstance(default, float) else
              isinstance(value, type(default)))
        if not ok:
            raise ConfigError(f"protocol option {key} must be a {type(default).__name__} (default {default!r}), "
                              f"got {value!r}")
        clean[key] = float(value) if isinstance(default, float) else value
    return dataclasses.replace(protocol, **clean)


def evaluate_file(file: str | os.PathLike, *, models: list[str] | None = None, runs: int = 3,
                  epochs: int | None = None, protocol: str | None = None, lr: float | None = None,
                  batch_size: int | None = None, seed: int = 0, baseline: bool = True,
                  dataset: str | None = None, json_path: str | None = None, data_root: str | None = None,
                  download: bool = False, device: str = "cpu", threads: int | None = None,
                  progress: bool = True, deterministic: bool = False, robustness: bool = False,
                  overwrite: bool = True, resume: bool = False, checkpoint_every: int = 0,
                  teachers: str | None = None, online_teacher: bool = False, full_acc: float | None = None,
                  full_epochs: int = 0, clip_model: str | None = None, clip_weights: str | None = None,
                  protocol_options: dict[str, Any] | None = None):
    """Load a synthetic set file, evaluate it (see :func:`dsdistill.evaluators.evaluate`), optionally
    write the JSON report atomically, and return the :class:`~dsdistill.evaluators.EvalReport`.

    With ``checkpoint_every > 0`` (epochs) finished students and the student in progress are saved
    to ``json_path + ".ckpt"`` (or ``file + ".eval.ckpt"``; ``.rankN`` appended per torchrun
    process) and ``resume=True`` continues from there with bitwise the same numbers; the checkpoint
    is removed once the report is written. ``overwrite=False`` refuses an existing ``json_path``
    before any work (the CLI's default).

    Under ``torchrun`` the (model, run) students are split across processes and gathered; only rank
    0 writes the report. Results equal a single-process run with the same seed.

    Protocols with their own loop (label-light methods: ``infer``, ``nrr``, ``hello``) are objects
    with an ``evaluate_set`` method; they receive ``teachers``, ``online_teacher``, ``full_acc``,
    ``full_epochs``, ``clip_model`` and ``clip_weights`` as ``options``; ``protocol_options``
    overrides their recipe's fields (e.g. ``{"alpha_dbr": 0.5}`` for ``dbr``), checked by name and type."""
    _registries()
    from dsdistill.graph_api import evaluate_graph_file, is_graph_file

    if json_path:
        _check_output(json_path, overwrite)
    if is_graph_file(file):  # graph sets: the graph protocol (dsdistill.graph_api)
        return evaluate_graph_file(file, models=models, runs=runs, epochs=epochs, protocol=protocol, lr=lr,
                                   batch_size=batch_size, seed=seed, baseline=baseline, dataset=dataset,
                                   json_path=json_path, data_root=data_root, threads=threads, progress=progress,
                                   resume=resume, checkpoint_every=checkpoint_every)
    from dsdistill.data import load_real
    from dsdistill.evaluators import evaluate
    from dsdistill.io import atomic_write_json, load_synthetic
    from dsdistill import distributed
    from dsdistill.perf import set_deterministic, set_threads, tune_allocator
    from dsdistill.registry import EVALUATORS, MODELS

    models = models or ["convnet"]
    for name in models:
        MODELS.get(name)
    if protocol:
        if getattr(EVALUATORS.get(protocol), "name", "") == "graph":
            raise ConfigError(f"{file} is an image set; --protocol graph is for graph sets")
    syn = load_synthetic(file)
    set_threads(threads)
    set_deterministic(deterministic)
    tune_allocator()
    distributed.init(device)
    checkpoint = None
    if checkpoint_every > 0 or resume:
        from dsdistill.condenser import Checkpointer

        path = f"{json_path}.ckpt" if json_path else f"{file}.eval.ckpt"
        path += f".rank{distributed.rank()}" if distributed.world_size() > 1 else ""
        checkpoint = Checkpointer(path, every=checkpoint_every, resume=resume)
    zca_eps = float(syn.zca["eps"]) if syn.zca else 0.1
    real = load_real(dataset or syn.dataset, data_root, download=download, zca=syn.space == "zca", zca_eps=zca_eps)
    from dsdistill.evaluators import evaluate_softlabel, protocol_for

    chosen = protocol_for(syn, protocol)
    if protocol_options and not hasattr(chosen, "evaluate_set"):
        raise ConfigError(f"--protocol-option applies to the infer, dbr and hello protocols, not {chosen.name!r}; "
                          "use --epochs/--lr/--batch-size for the others")
    if hasattr(chosen, "evaluate_set"):  # a protocol with its own student loop
        chosen = with_protocol_options(chosen, protocol_options or {})
        options = {"teachers": teachers, "online_teacher": online_teacher, "full_acc": full_acc,
                   "full_epochs": full_epochs, "clip_model": clip_model, "clip_weights": clip_weights}
        report = chosen.evaluate_set(syn, real, models=models, runs=runs, epochs=epochs, lr=lr, batch_size=batch_size,
                                     seed=seed, device=device, baseline=baseline, progress=progress, file=str(file),
                                     checkpoint=checkpoint, options=options)
    elif clip_model or clip_weights:
        raise ConfigError(f"--clip-model/--clip-weights belong to the hello protocol, not {chosen.name!r}")
    elif chosen.name == "softlabel" or teachers or online_teacher:  # evaluators/softlabel.py
        if protocol_for(syn, protocol).name != "softlabel":
            raise ConfigError("--teachers and --online-teacher belong to --protocol softlabel")
        report = evaluate_softlabel(syn, real, models=models, runs=runs, epochs=epochs, lr=lr, batch_size=batch_size,
                                    seed=seed, device=device, baseline=baseline, teachers=teachers,
                                    online_teacher=online_teacher, full_acc=full_acc, full_epochs=full_epochs,
                                    progress=progress, file=str(file), checkpoint=checkpoint)
    else:
        report = evaluate(syn, real, models=models, runs=runs, protocol=protocol, epochs=epochs, lr=lr,
                          batch_size=batch_size, seed=seed, device=device, baseline=baseline, robustness=robustness,
                          progress=progress,
                          file=str(file), checkpoint=checkpoint)
    if json_path and distributed.is_main():
        atomic_write_json(json_path, report.to_dict(), overwrite=True)
    if checkpoint is not None:
        checkpoint.remove()
    return report
