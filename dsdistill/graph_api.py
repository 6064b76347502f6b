"""The graph half of the Python API: what ``dsdistill.api.condense`` / ``evaluate_file`` route to for
graph datasets (``mutag``, ``nci1``, ...) and graph files (``modality="graph"``).

Example:
    >>> from dsdistill.api import condense, evaluate_file            # doctest: +SKIP
    >>> syn = condense("mirage", "mutag", ipc=1, output="m.h5")
    >>> print(evaluate_file("m.h5", runs=3).table())
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from dsdistill.errors import ConfigError


def _registries() -> None:
    import dsdistill.data  # noqa: F401
    import dsdistill.evaluators  # noqa: F401
    import dsdistill.methods  # noqa: F401


def is_graph_method(method: str) -> bool:
    """Whether ``method`` is a graph-only condenser (``mirage``, ``doscond``)."""
    _registries()
    from dsdistill.registry import CONDENSERS, GRAPH_CONDENSERS

    return method in GRAPH_CONDENSERS and method not in CONDENSERS


def is_graph_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a graph set (validates the header; SyntheticFileError on a bad file)."""
    from dsdistill.io import read_header

    return read_header(path)["modality"] == "graph"


def condense_graph(method: str, dataset: str, ipc: int, *, output: str | os.PathLike | None = None,
                   params: dict[str, Any] | None = None, seed: int = 0, overwrite: bool = False,
                   data_root: str | None = None, device: str = "cpu", threads: int | None = None,
                   progress: bool = True, fold: int | None = None, **ignored: Any):
    """Run graph condenser ``method`` on graph dataset ``dataset``; write ``output`` atomically.

    ``ipc`` is graphs per class for the subset baselines and gradient matching, and ignored by
    ``mirage`` (its size follows from its threshold search and byte budget). ``fold`` selects a
    stratified 10-fold CV split instead of the fixed 80/10/10 one (recorded in the file, and used
    again by :func:`evaluate_graph_file`).

    Raises:
        UnknownNameError, ConfigError, DataNotFoundError: one clear sentence each.
    """
    _registries()
    from dsdistill.data.graphs import canonical_graph_name, load_graph_dataset
    from dsdistill.io import save_graph_synthetic
    from dsdistill.perf import set_threads
    from dsdistill.registry import GRAPH_CONDENSERS, GRAPH_DATASETS

    key = canonical_graph_name(dataset)
    if key is None:
        raise ConfigError(f"{method} is a graph method and needs a graph dataset ({', '.join(GRAPH_DATASETS.names())}); "
                          f"got '{dataset}'")
    if method not in GRAPH_CONDENSERS:
        raise ConfigError(f"'{method}' is not a graph method; for graph dataset {key} choose one of: "
                          f"{', '.join(GRAPH_CONDENSERS.names())}")
    cls = GRAPH_CONDENSERS.get(method)
    if ipc <= 0:
        raise ConfigError(f"--ipc must be a positive integer, got {ipc}")
    if output is not None:
        path = Path(output)
        if path.exists() and not overwrite:
            raise ConfigError(f"output {path} exists; pass --overwrite to replace it")
        if str(path.parent) and not path.parent.exists():
            raise ConfigError(f"output directory {path.parent} does not exist; create it first")
    condenser = cls.from_settings(key, ipc, dict(params or {}))
    set_threads(threads)
    data = load_graph_dataset(key, data_root, fold=fold)
    syn = condenser.condense(data, ipc, seed=seed, device=device, progress=progress)
    syn.provenance["fold"] = fold  # evaluation must test on the same split
    if output is not None:
        save_graph_synthetic(syn, output, overwrite=True)
    return syn


def evaluate_graph_file(file: str | os.PathLike, *, models: list[str] | None = None, runs: int = 3,
                        epochs: int | None = None, protocol: str | None = None, lr: float | None = None,
                        batch_size: int | None = None, seed: int = 0, baseline: bool = True,
                        dataset: str | None = None, json_path: str | None = None, data_root: str | None = None,
                        threads: int | None = None, progress: bool = True, baselines: tuple[str, ...] | None = None,
                        resume: bool = False, checkpoint_every: int = 0, **ignored: Any):
    """Evaluate a graph file under the ``graph`` protocol (GIN and GCN students by default).

    ``baseline`` adds the random subset of equal bytes; ``baselines`` names any of ``random``,
    ``herding``, ``k-center``, ``full`` explicitly. With ``checkpoint_every > 0`` (or ``resume``)
    every finished student is saved to ``json_path + ".ckpt"`` (else ``file + ".eval.ckpt"``) and
    ``resume=True`` skips them; the checkpoint is removed once the report is written.
    """
    _registries()
    from dsdistill.data.graphs import load_graph_dataset
    from dsdistill.evaluators.graph import evaluate_graph
    from dsdistill.io import atomic_write_json, load_graph_synthetic
    from dsdistill.perf import set_threads

    if protocol and protocol.lower() != "graph":
        raise ConfigError(f"{file} is a graph set; it is evaluated with --protocol graph, not {protocol}")
    syn = load_graph_synthetic(file)
    set_threads(threads)
    fold = syn.provenance.get("fold")
    data = load_graph_dataset(dataset or syn.dataset, data_root, fold=fold if isinstance(fold, int) else None)
    chosen = baselines if baselines is not None else (("random",) if baseline else ())
    models = models or ["gin", "gcn"]
    checkpoint = None
    if checkpoint_every > 0 or resume:
        from dsdistill.condenser import Checkpointer
        from dsdistill.evaluators.checkpoint import EvalCheckpoint

        digest = hashlib.sha256(Path(file).read_bytes()).hexdigest()
        sig = json.dumps({"file": digest, "dataset": data.name, "models": [m.lower() for m in models], "runs": runs,
                          "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,
                          "baselines": list(chosen)}, sort_keys=True)
        path = f"{json_path}.ckpt" if json_path else f"{file}.eval.ckpt"
        checkpoint = EvalCheckpoint(Checkpointer(path, every=checkpoint_every, resume=resume), sig)
    report = evaluate_graph(syn, data, models=models, runs=runs, epochs=epochs, lr=lr,
                            batch_size=batch_size, seed=seed, baselines=tuple(chosen), progress=progress,
                            file=str(file), checkpoint=checkpoint)
    if json_path:
        atomic_write_json(json_path, report.to_dict())
    if checkpoint is not None:
        checkpoint.remove()
    return report
