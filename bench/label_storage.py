"""Accuracy against total bytes for the soft-label and label-light condensers at one IPC.

Condenses (or reuses, ``--reuse``) one set per method and evaluates each under the protocol its
file asks for: ``softlabel`` for ``sre2l``/``cvdd`` (per-epoch FKD-style replay labels), ``infer``
(static committee logits + Mixup interpolation), ``nrr`` (distance-based representative labels)
and ``hello`` (labels produced online by a CLIP projector). Every protocol trains its own random
real subset of the same IPC with labels of the same kind and size, so each row's "random" column
is that method's own baseline. Bytes come from :func:`dsdistill.evaluators.storage.storage_breakdown`:
images (counted), labels, label generator, and models needed at training time (the frozen CLIP
backbone for ``hello``), plus the per-epoch relabeling yardstick.

Usage (niced, one thread; a row is written after every method)::

    nice -n 19 env OMP_NUM_THREADS=1 python bench/label_storage.py --dataset mnist --ipc 10 \
        --teachers /path/teachers --clip-model NAME --clip-weights PATH --runs 3 \
        --out bench/results/label_storage [--methods sre2l,infer,nrr,hello] [--reuse] \
        [--param sre2l:iterations=100 --param infer:iterations=200 ...] [--epochs method=N ...]
        [--from-report nrr=nrr_eval.json ...]   # a row from a saved evaluate --json report

Writes ``<out>.json`` (reports and settings) and ``<out>.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import yaml

METHODS = ("sre2l", "cvdd", "infer", "nrr", "hello")


def _kv(items: list[str], what: str) -> dict[str, dict]:
    """``["sre2l:iterations=100"]`` -> ``{"sre2l": {"iterations": 100}}``."""
    out: dict[str, dict] = {}
    for item in items:
        try:
            method, rest = item.split(":", 1)
            key, value = rest.split("=", 1)
        except ValueError:
            raise SystemExit(f"{what} expects METHOD:KEY=VALUE, got {item!r}") from None
        out.setdefault(method, {})[key] = yaml.safe_load(value)
    return out


def _b(n: float | None) -> str:
    return "–" if n is None else f"{n / 1e3:,.1f} kB"


def row(method: str, report: dict, seconds: float | None) -> dict:
    """One table row from an evaluation report (``EvalReport.to_dict()`` or its ``--json`` file)."""
    s = report["summary"]
    model = next(iter(s))
    st = report["storage"]
    return {"method": method, "model": model, "synthetic": s[model].get("synthetic"), "random": s[model].get("random"),
            "protocol": report["protocol"].get("name"), "epochs": report["protocol"].get("epochs"),
            "images": st["parts"]["images"], "labels": st["parts"]["labels"], "label_bytes": st["label_bytes"],
            "label_generator": st["parts"]["label_generator"], "models_at_training": st["models_at_training"],
            "training_models": st["training_models"], "total": st["total"],
            "total_with_models": st["total_with_models"], "ratio_to_full": st["ratio_to_full"],
            "counted_images": st["counted_images"], "training_instances": st["training_instances"],
            "per_epoch_label_bytes": st.get("per_epoch_label_bytes"), "condense_seconds": seconds}


def markdown(rows: list[dict], settings: dict) -> str:
    fmt = lambda e: f"{e['mean']:.2f} ± {e['std']:.2f}" if e else "–"  # noqa: E731
    lines = [f"# Accuracy vs bytes: {settings['dataset']} IPC {settings['ipc']}", "",
             f"Student {settings['model']}, {settings['runs']} runs, final-epoch test accuracy (%), mean ± population "
             "std. Each method is evaluated under its own protocol (column 'protocol'); 'random' is a random real "
             "subset of the same IPC with labels of the same kind and size, trained identically. Bytes are "
             "uncompressed as stored; 'labels' counts hard labels + soft/replayed/derived labels + replay "
             "parameters; 'models at training' are not in the file but needed while the student trains.", "",
             "| method | protocol (epochs) | synthetic | random, same labels | gain | images | labels | label "
             "generator | models at training | total (file) | total + models | per-epoch labels, same IPC | "
             "instances (counted/effective) |", "|" + "---|" * 13]
    for r in rows:
        gain = f"{r['synthetic']['mean'] - r['random']['mean']:+.2f}" if r["synthetic"] and r["random"] else "–"
        lines.append(f"| {r['method']} | {r['protocol']} ({r['epochs']}) | {fmt(r['synthetic'])} | {fmt(r['random'])} | "
                     f"{gain} | {_b(r['images'])} | {_b(r['labels'])} | {_b(r['label_generator'])} | "
                     f"{_b(r['models_at_training'])} | {_b(r['total'])} | {_b(r['total_with_models'])} | "
                     f"{_b(r['per_epoch_label_bytes'])} | {r['counted_images']}/{r['training_instances']} |")
    lines += ["", f"Machine: {settings['machine']}; settings: `{json.dumps(settings['params'])}`"]
    if settings.get("from_reports"):
        lines += ["", "Rows taken from saved evaluation reports (EvalReport JSON written by `dsdistill evaluate --json` "
                      "or by the same evaluator functions from Python; not re-run here): " + ", ".join(f"{m}: `{p}`" for m, p in settings["from_reports"].items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--teachers", required=True)
    ap.add_argument("--clip-model", default=None)
    ap.add_argument("--clip-weights", default=None)
    ap.add_argument("--model", default="convnet", help="Student model.")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--epochs", action="append", default=[], help="METHOD=N student epochs (default: protocol's).")
    ap.add_argument("--param", action="append", default=[], help="METHOD:KEY=VALUE condenser setting.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="Reuse <out>_<method>.h5 when it exists.")
    ap.add_argument("--out", default="bench/results/label_storage")
    ap.add_argument("--from-report", action="append", default=[],
                    help="METHOD=REPORT.json: take that method's row from a saved `dsdistill evaluate --json` report "
                         "instead of condensing and evaluating (the table says so)")
    args = ap.parse_args()

    from dsdistill import api

    params = _kv(args.param, "--param")
    epochs = {k: int(v) for k, v in (e.split("=", 1) for e in args.epochs)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"dataset": args.dataset, "ipc": args.ipc, "model": args.model, "runs": args.runs, "seed": args.seed,
                "teachers": args.teachers, "params": params, "epochs": epochs,
                "machine": f"{platform.node()} {platform.processor() or platform.machine()}, torch threads "
                           f"{__import__('torch').get_num_threads()}"}
    rows, reports = [], {}
    saved = dict(item.split("=", 1) for item in args.from_report)
    settings["from_reports"] = saved
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        if method in saved:
            report = json.loads(Path(saved[method]).read_text())
            rows.append(row(method, report, None))
            reports[method] = report
            continue
        path = Path(f"{out}_{method}.h5")
        p = {"teachers": args.teachers, **params.get(method, {})}
        if method == "hello":
            p.update({k: v for k, v in (("clip_model", args.clip_model), ("clip_weights", args.clip_weights)) if v})
        started = time.time()
        if not (args.reuse and path.exists()):
            api.condense(method, args.dataset, args.ipc, output=path, params=p, seed=args.seed, progress=False)
        seconds = round(time.time() - started, 1)
        report = api.evaluate_file(path, models=[args.model], runs=args.runs, epochs=epochs.get(method),
                                   seed=args.seed, progress=False, teachers=args.teachers,
                                   clip_model=args.clip_model if method == "hello" else None,
                                   clip_weights=args.clip_weights if method == "hello" else None)
        reports[method] = report.to_dict()
        rows.append(row(method, reports[method], seconds))
        print(report.table(), flush=True)
        _write(out, settings, rows, reports)  # a row at a time: a long run keeps what it has
    _write(out, settings, rows, reports)
    print(markdown(rows, settings))


def _write(out: Path, settings: dict, rows: list[dict], reports: dict) -> None:
    out.with_suffix(".json").write_text(json.dumps({"settings": settings, "rows": rows, "reports": reports},
                                                   indent=1, default=str))
    out.with_suffix(".md").write_text(markdown(rows, settings))


if __name__ == "__main__":
    main()
