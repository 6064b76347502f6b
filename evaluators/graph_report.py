"""``GraphEvalReport``: an :class:`EvalReport` whose runs also carry ROC-AUC and the paper-rule scores."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dsdistill.evaluators.report import EvalReport, mean_std

KIND_ORDER = ("synthetic", "random", "herding", "k-center", "full")


def _ms(values: list[float]) -> dict[str, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "n": len(values)}


@dataclass
class GraphEvalReport(EvalReport):
    """Graph-protocol results; ``summary()`` stays the accuracy summary of :class:`EvalReport`."""

    def graph_summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{model: {kind: {"acc", "auc", "paper_auc", "paper_acc", "val_acc", "val_auc"}}}`` in percent.

        ``acc``/``auc`` are final-epoch test scores over all runs; ``paper_*`` apply the paper rule
        (test at each run's best-validation-AUC epoch, top ceil(n/2) runs by that validation AUC).
        """
        grouped: dict[str, dict[str, list]] = {}
        for r in self.runs:
            grouped.setdefault(r.model, {}).setdefault(r.kind, []).append(r)
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for model, kinds in grouped.items():
            for kind, rs in kinds.items():
                pct = lambda xs: [None if x is None else 100 * x for x in xs]  # noqa: E731
                entry = {"acc": _ms(pct([r.test_acc for r in rs])), "auc": _ms(pct([r.test_auc for r in rs])),
                         "val_acc": _ms(pct([r.val_acc for r in rs])), "val_auc": _ms(pct([r.val_auc for r in rs]))}
                ranked = [r for r in rs if r.extra and r.extra.get("best_epoch")]
                if ranked:
                    key = lambda r: -1.0 if math.isnan(r.extra["best_val_auc"]) else r.extra["best_val_auc"]  # noqa: E731
                    top = sorted(ranked, key=key, reverse=True)[: math.ceil(len(ranked) / 2)]
                    entry["paper_auc"] = _ms(pct([r.extra["test_auc_at_best_val"] for r in top]))
                    entry["paper_acc"] = _ms(pct([r.extra["test_acc_at_best_val"] for r in top]))
                out.setdefault(model, {})[kind] = entry
        return out

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["graph_summary"] = self.graph_summary()
        return d

    def table(self) -> str:
        """Markdown: one row per (model, kind) with accuracy, AUC, the paper rule and bytes."""
        s = self.graph_summary()
        st = self.storage
        syn_bytes = st.get("synthetic", {}).get("total", 0)
        full = st.get("full_train_bytes") or 0
        base = st.get("baselines", {})
        sizes = {"synthetic": syn_bytes, "full": full, **{k: v.get("bytes") for k, v in base.items()}}
        fmt = lambda e: f"{e['mean']:.2f} ± {e['std']:.2f}" if e and e.get("n") else "–"  # noqa: E731
        took = st.get("distill_seconds")
        lines = [f"{self.method} on {self.dataset}, protocol {self.protocol.get('name')} "
                 f"({self.protocol.get('epochs')} epochs, {self.protocol.get('layers')} layers, "
                 f"split: {self.protocol.get('split')}); final-epoch test scores (%), mean ± std over runs; "
                 f"set: {syn_bytes:,} B ({100 * syn_bytes / full if full else float('nan'):.2f}% of the training "
                 f"set's {full:,} B){f', distilled in {took:.1f} s' if isinstance(took, (int, float)) else ''}",
                 "", "| model | data | accuracy | ROC-AUC | paper rule AUC (top-half by val) | bytes |",
                 "|---|---|---|---|---|---|"]
        for model, kinds in s.items():
            for kind in sorted(kinds, key=lambda k: KIND_ORDER.index(k) if k in KIND_ORDER else 99):
                e = kinds[kind]
                b = sizes.get(kind)
                lines.append(f"| {model} | {kind} | {fmt(e['acc'])} | {fmt(e['auc'])} | {fmt(e.get('paper_auc'))} | "
                             f"{f'{int(b):,}' if b is not None else '–'} |")
        return "\n".join(lines)
