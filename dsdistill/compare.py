"""A leaderboard from evaluation reports: method x dataset x IPC x model.

Each row shows the final-epoch test accuracy (mean ± population std over students), the random
real subset at the same IPC under the same protocol, the hard-label accuracy when known, the
storage of the set, and DD-Ranking-style robustness scores:

* **LRS** (label-robust score): ``HLR = Acc(full, hard) - Acc(syn, hard)``,
  ``IOR = Acc(syn, any) - Acc(random, any)``, ``alpha = w*IOR - (1-w)*HLR`` (w = 0.5),
  ``LRS = (e^alpha - e^-1) / (e - e^-1)``.
* **ARS** (augmentation-robust score): ``beta = g*(syn_aug - rnd_aug) + (1-g)*(syn_noaug - rnd_noaug)``
  (g = 0.5), normalised the same way.

Accuracies enter as **fractions** in [0, 1], so ``alpha, beta`` lie in [-1, 1] and LRS/ARS in
[0, 1]. DD-Ranking's published code (v0.2.0) feeds accuracies in **percent** into ``exp``, so its
scores leave [0, 1] and are not comparable with these; its ``hard_label.py`` also appends each
run's LRS to its list twice (the mean is unchanged, the std and count are not). Here the scores
are computed once from the mean accuracies.

Where the inputs come from (a row pools every report with the same method, dataset, IPC, model
and epochs; a report's protocol says which condition its runs measure):

* syn/random with or without augmentation: reports whose ``protocol.augment`` is ``"none"``
  are the no-augmentation condition; run kinds ``synthetic_noaug`` / ``random_noaug`` also count;
* hard-label accuracy: a report with ``protocol.soft_labels`` false (for a hard-label set that
  is the main result itself), or runs of kind ``synthetic_hard``;
* full-data accuracy: runs of kind ``full``, or ``full_acc={"dataset:model": fraction}``.

When an input is missing the score is left empty and the notes say which one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsdistill.errors import ConfigError

W_LRS = 0.5
GAMMA_ARS = 0.5
_E, _INV_E = math.e, math.exp(-1.0)


def _normalise(x: float) -> float:
    """``(e^x - e^-1) / (e - e^-1)``: [-1, 1] -> [0, 1], clamped against rounding."""
    return min(1.0, max(0.0, (math.exp(x) - _INV_E) / (_E - _INV_E)))


def _fraction(value: float, what: str) -> float:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{what} must be an accuracy fraction in [0, 1], got {value!r} "
                          f"(percentages must be divided by 100)")
    return float(value)


def label_robust_score(full_hard: float, syn_hard: float, syn_any: float, rnd_any: float,
                       w: float = W_LRS) -> tuple[float, float, float]:
    """LRS from accuracy fractions.

    Returns:
        ``(lrs, hlr, ior)`` with ``lrs`` in [0, 1] and ``hlr, ior`` in [-1, 1].
    """
    full_hard, syn_hard, syn_any, rnd_any = (_fraction(v, n) for v, n in (
        (full_hard, "full-data accuracy"), (syn_hard, "hard-label accuracy"), (syn_any, "synthetic accuracy"),
        (rnd_any, "random-subset accuracy")))
    hlr, ior = full_hard - syn_hard, syn_any - rnd_any
    return _normalise(w * ior - (1 - w) * hlr), hlr, ior


def augmentation_robust_score(syn_aug: float, rnd_aug: float, syn_noaug: float, rnd_noaug: float,
                              gamma: float = GAMMA_ARS) -> float:
    """ARS in [0, 1] from accuracy fractions."""
    vals = [_fraction(v, n) for v, n in ((syn_aug, "synthetic accuracy"), (rnd_aug, "random accuracy"),
                                         (syn_noaug, "synthetic no-aug accuracy"),
                                         (rnd_noaug, "random no-aug accuracy"))]
    return _normalise(gamma * (vals[0] - vals[1]) + (1 - gamma) * (vals[2] - vals[3]))


@dataclass
class Row:
    """One leaderboard row; accuracies are lists of per-student fractions."""

    dataset: str
    ipc: int
    method: str
    model: str
    epochs: Any
    protocol: str = ""
    syn: list[float] = field(default_factory=list)
    random: list[float] = field(default_factory=list)
    hard: list[float] | None = None
    full: float | None = None
    storage_bytes: int | None = None
    storage_ratio: float | None = None
    lrs: float | None = None
    hlr: float | None = None
    ior: float | None = None
    ars: float | None = None
    lrs_note: str = ""
    ars_note: str = ""
    reports: list[str] = field(default_factory=list)


def _stats(values: list[float] | None) -> tuple[float, float, int] | None:
    """Mean and population std in percent, and n (the convention of EvalReport.summary)."""
    if not values:
        return None
    pct = [100 * v for v in values]
    return statistics.fmean(pct), statistics.pstdev(pct) if len(pct) > 1 else 0.0, len(pct)


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check one ``dsdistill evaluate --json`` report (one-line ConfigError otherwise)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"report {p} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise ConfigError(f"report {p} is not valid JSON ({type(err).__name__})") from None
    check_report(data, str(p))
    return data


def check_report(data: Any, name: str) -> None:
    """Raise ConfigError unless ``data`` looks like ``EvalReport.to_dict()``."""
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or not isinstance(data.get("protocol"), dict):
        raise ConfigError(f"{name} is not a dsdistill evaluation report (needs 'runs' and 'protocol'); "
                          f"write one with `dsdistill evaluate FILE --json REPORT.json`")
    for key in ("method", "dataset", "ipc"):
        if key not in data:
            raise ConfigError(f"{name} is not a dsdistill evaluation report (no {key!r})")
    for run in data["runs"]:
        if not isinstance(run, dict) or not {"model", "kind", "test_acc"} <= set(run):
            raise ConfigError(f"{name} has a run without model/kind/test_acc")
        _fraction(run["test_acc"], f"test_acc in {name}")


def _conditions(report: dict[str, Any]) -> list[tuple[str, str, str, bool, float]]:
    """``(model, who, labels, aug, acc)`` for every run; who is syn, random or full."""
    proto = report["protocol"]
    labels = "soft" if proto.get("soft_labels") else "hard"
    aug = str(proto.get("augment", "dsa")).lower() not in ("none", "", "false")
    out = []
    for run in report["runs"]:
        kind, acc = str(run["kind"]), float(run["test_acc"])
        who = {"synthetic": "syn", "random": "random", "full": "full", "synthetic_hard": "syn",
               "synthetic_noaug": "syn", "random_noaug": "random"}.get(kind)
        if who is None:
            continue
        # random subsets and the full set are always trained on hard labels
        lab = labels if who == "syn" and kind != "synthetic_hard" else "hard"
        out.append((str(run["model"]), who, lab, aug and not kind.endswith("_noaug"), acc))
    return out


def leaderboard(reports: list[dict[str, Any] | Any], full_acc: dict[str, float] | None = None) -> list[Row]:
    """Rows for the given reports (dicts from ``EvalReport.to_dict()`` or EvalReport objects).

    Args:
        reports: The reports; those of one (method, dataset, IPC, model, epochs) are pooled.
        full_acc: Full-data hard-label accuracy fractions keyed ``"dataset:model"`` or ``"dataset"``.

    Returns:
        Rows sorted by dataset, IPC, method, model.
    """
    full_acc = {k.lower(): _fraction(v, f"--full-acc {k}") for k, v in (full_acc or {}).items()}
    cells: dict[tuple, dict[tuple, list[float]]] = {}
    info: dict[tuple, dict[str, Any]] = {}
    for i, rep in enumerate(reports):
        rep = rep.to_dict() if hasattr(rep, "to_dict") else rep
        name = str(rep.get("file") or f"report {i + 1}") if isinstance(rep, dict) else f"report {i + 1}"
        check_report(rep, name)
        epochs = rep["protocol"].get("epochs")
        for model, who, labels, aug, acc in _conditions(rep):
            key = (str(rep["dataset"]), int(rep["ipc"]), str(rep["method"]), model, epochs)
            cells.setdefault(key, {}).setdefault((who, labels, aug), []).append(acc)
            meta = info.setdefault(key, {"protocols": {}, "reports": [], "storage": None, "ratio": None})
            if who == "syn":
                meta["protocols"][(labels, aug)] = rep["protocol"].get("name", "")
            if name not in meta["reports"]:
                meta["reports"].append(name)
            storage = rep.get("storage") or {}
            if meta["storage"] is None and isinstance(storage.get("synthetic"), dict):
                meta["storage"] = storage["synthetic"].get("total")
                meta["ratio"] = storage.get("ratio_to_full")
    rows = []
    for key in sorted(cells, key=lambda k: (k[0], k[1], k[2], k[3], str(k[4]))):
        rows.append(_row(key, cells[key], info[key], full_acc))
    return rows


def _row(key: tuple, cell: dict[tuple, list[float]], meta: dict[str, Any], full_acc: dict[str, float]) -> Row:
    dataset, ipc, method, model, epochs = key
    syn_conds = [(lab, aug) for (who, lab, aug) in cell if who == "syn"]
    labels = "soft" if any(lab == "soft" for lab, _ in syn_conds) else "hard"
    aug = any(a for lab, a in syn_conds if lab == labels) if syn_conds else True
    row = Row(dataset, ipc, method, model, epochs, protocol=meta["protocols"].get((labels, aug), ""),
              syn=cell.get(("syn", labels, aug), []), random=cell.get(("random", "hard", aug), []),
              hard=cell.get(("syn", "hard", aug)), storage_bytes=meta["storage"], storage_ratio=meta["ratio"],
              reports=meta["reports"])
    full_runs = [v for (who, _, _), vals in cell.items() if who == "full" for v in vals]
    row.full = statistics.fmean(full_runs) if full_runs else full_acc.get(f"{dataset}:{model}".lower(),
                                                                          full_acc.get(dataset.lower()))
    mean = lambda v: statistics.fmean(v) if v else None  # noqa: E731
    missing = [what for what, ok in (("the synthetic accuracy", row.syn), ("a random-subset baseline", row.random),
                                     ("a hard-label accuracy (evaluate the set with soft labels off)", row.hard),
                                     ("the full-data accuracy (pass --full-acc DATASET:MODEL=FRACTION or add "
                                      "'full' runs)", row.full is not None)) if not ok]
    if missing:
        row.lrs_note = "LRS needs " + "; ".join(missing)
    else:
        row.lrs, row.hlr, row.ior = label_robust_score(row.full, mean(row.hard), mean(row.syn), mean(row.random))
    other = [cell.get(("syn", labels, not aug)), cell.get(("random", "hard", not aug))]
    if not aug:
        row.ars_note = "ARS needs runs with augmentation (only no-augmentation runs were found)"
    elif not (row.syn and row.random and all(other)):
        row.ars_note = ("ARS needs synthetic and random runs without augmentation (a report whose protocol "
                        "augment is 'none', or synthetic_noaug/random_noaug runs)")
    else:
        row.ars = augmentation_robust_score(mean(row.syn), mean(row.random), mean(other[0]), mean(other[1]))
    return row


def _fmt(stats: tuple[float, float, int] | None) -> str:
    return "–" if stats is None else f"{stats[0]:.2f} ± {stats[1]:.2f} (n={stats[2]})"


def _storage(row: Row) -> str:
    if row.storage_bytes is None:
        return "–"
    text = f"{row.storage_bytes / 1024:.1f} KiB"
    return text + (f" ({100 * row.storage_ratio:.3f}% of full)" if row.storage_ratio else "")


def to_markdown(rows: list[Row]) -> str:
    """The leaderboard as a markdown table plus notes (definitions and why scores are empty)."""
    lines = ["| dataset | IPC | method | model | protocol (epochs) | accuracy % | random % | gain | "
             "hard-label % | storage | LRS | ARS |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in rows:
        s, rnd, hard = _stats(r.syn), _stats(r.random), _stats(r.hard)
        gain = f"{s[0] - rnd[0]:+.2f}" if s and rnd else "–"
        score = (lambda v, n: f"{v:.3f}" if v is not None else f"–[{n}]")  # noqa: E731
        ref = len(notes) + 1
        lrs = score(r.lrs, ref)
        if r.lrs is None:
            notes.append(f"[{ref}] {r.method}/{r.dataset}/IPC{r.ipc}/{r.model}: {r.lrs_note}")
        ref = len(notes) + 1
        ars = score(r.ars, ref)
        if r.ars is None:
            notes.append(f"[{ref}] {r.method}/{r.dataset}/IPC{r.ipc}/{r.model}: {r.ars_note}")
        lines.append(f"| {r.dataset} | {r.ipc} | {r.method} | {r.model} | {r.protocol} ({r.epochs}) | {_fmt(s)} | "
                     f"{_fmt(rnd)} | {gain} | {_fmt(hard)} | {_storage(r)} | {lrs} | {ars} |")
    lines += ["", "Final-epoch test accuracy, mean ± population std over students. LRS/ARS follow DD-Ranking's "
              "definitions with accuracy fractions (so they lie in [0, 1]; DD-Ranking's code uses percent).", ""]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


CSV_COLUMNS = ["dataset", "ipc", "method", "model", "protocol", "epochs", "acc_mean_pct", "acc_std_pct", "acc_n",
               "random_mean_pct", "random_std_pct", "random_n", "gain_pct", "hard_mean_pct", "hard_std_pct", "hard_n",
               "full_acc", "storage_bytes", "storage_ratio", "lrs", "hlr", "ior", "ars", "lrs_note", "ars_note",
               "reports"]


def to_csv(rows: list[Row]) -> str:
    """The leaderboard as CSV (accuracies in percent, LRS/ARS/HLR/IOR/full_acc as fractions)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        s, rnd, hard = (_stats(v) or ("", "", 0) for v in (r.syn, r.random, r.hard))
        gain = s[0] - rnd[0] if r.syn and r.random else ""
        writer.writerow([r.dataset, r.ipc, r.method, r.model, r.protocol, r.epochs, *s, *rnd, gain, *hard,
                         "" if r.full is None else r.full, "" if r.storage_bytes is None else r.storage_bytes,
                         "" if r.storage_ratio is None else r.storage_ratio,
                         *("" if v is None else v for v in (r.lrs, r.hlr, r.ior, r.ars)),
                         r.lrs_note, r.ars_note, ";".join(r.reports)])
    return buf.getvalue()


def compare_files(paths: list[str | os.PathLike[str]], output: str | os.PathLike[str], *,
                  full_acc: dict[str, float] | None = None, overwrite: bool = True) -> list[Row]:
    """Read reports, write ``output`` (markdown) and the CSV beside it (same stem, ``.csv``).

    Both texts are built before anything is written, so bad input leaves no file.
    """
    from dsdistill.io.atomic import atomic_write_text, check_overwrite

    if not paths:
        raise ConfigError("give at least one report JSON")
    out = Path(output)
    csv_path = out.with_suffix(".csv")
    if csv_path == out:
        raise ConfigError(f"output {out} must not end in .csv (the CSV is written beside it)")
    for p in (out, csv_path):
        check_overwrite(p, overwrite)
    if str(out.parent) and not out.parent.is_dir():
        raise ConfigError(f"output directory {out.parent} does not exist; create it first")
    rows = leaderboard([load_report(p) for p in paths], full_acc)
    md, table = to_markdown(rows), to_csv(rows)
    atomic_write_text(csv_path, table, overwrite=overwrite)
    atomic_write_text(out, md, overwrite=overwrite)
    return rows


def parse_full_acc(items: tuple[str, ...] | list[str]) -> dict[str, float]:
    """``("mnist:convnet=0.99", "cifar10=0.85")`` -> ``{"mnist:convnet": 0.99, "cifar10": 0.85}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise ConfigError(f"--full-acc expects DATASET[:MODEL]=FRACTION, got {item!r}")
    return out


__all__ = ["label_robust_score", "augmentation_robust_score", "leaderboard", "to_markdown", "to_csv",
           "compare_files", "load_report", "parse_full_acc", "Row"]
