"""``EvalReport``: every number an evaluation produced, and the settings that produced it."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RunResult:
    """One trained student.

    Attributes:
        model: Student architecture.
        kind: ``"synthetic"`` (the evaluated set) or ``"random"`` (random real subset, same IPC).
        run: Run index (seed offset).
        test_acc: Final-epoch accuracy on the official test split (fraction).
        val_acc: Final-epoch accuracy on the validation split (fraction).
        seconds: Wall time of the run.
        test_auc, val_auc: Final-epoch ROC-AUC (graph protocol; None elsewhere).
        extra: Protocol-specific per-run data (graph protocol: the paper-rule best-val epoch).
    """

    model: str
    kind: str
    run: int
    test_acc: float
    val_acc: float
    seconds: float
    test_auc: float | None = None
    val_auc: float | None = None
    extra: dict[str, Any] | None = None


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population std (ddof=0, as ``numpy.std`` and the field's tables)."""
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def cell(entry: dict[str, float] | None) -> str:
    """A summary entry as ``"mean ± std (n=N)"`` (``"–"`` when missing)."""
    return f"{entry['mean']:.2f} ± {entry['std']:.2f} (n={entry['n']})" if entry else "–"


def gain_cell(syn: dict[str, float] | None, rnd: dict[str, float] | None) -> str:
    """The synthetic set's gain over the random subset in points (``"–"`` when either is missing)."""
    return f"{syn['mean'] - rnd['mean']:+.2f}" if syn and rnd else "–"


@dataclass
class EvalReport:
    """Results of evaluating one synthetic set.

    Attributes:
        file: Path of the evaluated file (or "" for in-memory sets).
        method, dataset, ipc, num_classes: From the set.
        protocol: Protocol name and its settings.
        runs: Every student (synthetic and random baseline).
        storage: Bytes by part of the synthetic set, of the full training set, and their ratio.
        settings: Everything else (seed, device, epochs, models).
    """

    file: str
    method: str
    dataset: str
    ipc: int
    num_classes: int
    protocol: dict[str, Any]
    runs: list[RunResult] = field(default_factory=list)
    storage: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{model: {kind: {"mean", "std", "n", "val_mean"}}}`` over runs (accuracy in percent)."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for r in self.runs:
            out.setdefault(r.model, {}).setdefault(r.kind, {"acc": [], "val": []})
            out[r.model][r.kind]["acc"].append(100 * r.test_acc)
            out[r.model][r.kind]["val"].append(100 * r.val_acc)
        result: dict[str, dict[str, dict[str, float]]] = {}
        for model, kinds in out.items():
            for kind, v in kinds.items():
                mean, std = mean_std(v["acc"])
                result.setdefault(model, {})[kind] = {"mean": mean, "std": std, "n": len(v["acc"]),
                                                      "val_mean": mean_std(v["val"])[0]}
        return result

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = self.summary()
        return d

    def table(self) -> str:
        """A markdown table: model | synthetic | random subset | storage."""
        s, kb = self.summary(), self.storage.get("synthetic", {}).get("total", 0) / 1024
        ratio = self.storage.get("ratio_to_full")
        lines = [f"{self.method} on {self.dataset}, IPC {self.ipc}, protocol {self.protocol.get('name')} "
                 f"({self.protocol.get('epochs')} epochs), final-epoch test accuracy (%), mean ± std over runs",
                 "", "| model | synthetic | random real subset | gain | storage |", "|---|---|---|---|---|"]
        for model, kinds in s.items():
            syn, rnd = kinds.get("synthetic"), kinds.get("random")
            store = f"{kb:.1f} KiB" + (f" ({100 * ratio:.3f}% of full)" if ratio else "")
            lines.append(f"| {model} | {cell(syn)} | {cell(rnd)} | {gain_cell(syn, rnd)} | {store} |")
        from dsdistill.evaluators.storage import storage_lines

        extra = storage_lines(self.storage)
        return "\n".join(lines + ([""] + extra if extra else []))
