"""Graph distillation table: full data, Mirage, random and herding subsets of equal bytes.

For each dataset: Mirage is condensed with its default search (threshold chosen on the
validation split against its byte budget), then GIN and GCN students are trained under the
``graph`` protocol on the Mirage set, on a random and a herding subset of real training graphs with
the same bytes, and on the whole training split. Everything is final-epoch test accuracy and
ROC-AUC, mean ± population std over ``--runs`` seeds, on the fixed stratified 80/10/10 split.
Mirage's mining time (computation trees + FP-growth over every threshold tried) and its total
distillation time (mining + the validation search) are measured on this machine's CPU.

Usage (niced, one thread; results are written after every dataset)::

    nice -n 19 env OMP_NUM_THREADS=1 python bench/graph_table.py --runs 3 --epochs 100 \
        --out bench/results/graph_table

Writes ``<out>.json`` (every run, every setting) and ``<out>.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

DATASETS = ("mutag", "proteins", "nci1", "imdb-binary", "dd")
KINDS = ("full", "synthetic", "random", "herding")


def fmt(entry: dict | None) -> str:
    return f"{entry['mean']:.1f} ± {entry['std']:.1f}" if entry and entry.get("n") else "–"


def markdown(results: dict, settings: dict) -> str:
    lines = [
        "# Graph distillation: Mirage vs random and herding subsets of equal bytes",
        "",
        f"Protocol `graph`: {settings['epochs']} epochs (at least 500 steps), Adam lr 0.001, weight decay 5e-4, batch 32, hidden 64, "
        f"linear head, mean pooling (roots on Mirage forests), layers = Mirage tree depth; final-epoch test "
        f"scores in %, mean ± std over {settings['runs']} seeds; stratified 80/10/10 split (seed 20240607). "
        f"Mirage: default search (validation split only), search students {settings['search']}. "
        f"Subsets: same bytes as the Mirage set (int64 node labels + edges + edge labels + offsets), at least one "
        f"graph per class. CPU: {settings['cpu']}, 1 thread, niced, shared with other jobs (times are wall clock).",
        "",
        "| dataset | model | full acc | Mirage acc | random acc | herding acc | full AUC | Mirage AUC | "
        "random AUC | herding AUC | Mirage AUC, paper rule* | Mirage > random (acc) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        for model, kinds in r["summary"].items():
            acc = {k: kinds.get(k, {}).get("acc") for k in KINDS}
            auc = {k: kinds.get(k, {}).get("auc") for k in KINDS}
            win = (acc["synthetic"] and acc["random"] and acc["synthetic"]["mean"] > acc["random"]["mean"])
            lines.append(f"| {name} | {model} | " + " | ".join(fmt(acc[k]) for k in KINDS) + " | "
                         + " | ".join(fmt(auc[k]) for k in KINDS) + f" | {fmt(kinds.get('synthetic', {}).get('paper_auc'))}"
                         + f" | {'yes' if win else 'no'} |")
    lines += ["", "| dataset | Mirage bytes | training-set bytes | ratio | Mirage graphs (per class) | trees | "
                  "random subset (graphs, bytes) | herding subset (graphs, bytes) | depth | chosen min support | "
                  "mining s | distillation s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        st, m = r["storage"], r["mirage"]
        base = st.get("baselines", {})
        sub = lambda k: f"{base[k]['graphs']:.1f}, {base[k]['bytes']:,.0f}" if k in base else "–"  # noqa: E731
        lines.append(f"| {name} | {st['synthetic']['total']:,} | {st['full_train_bytes']:,} | "
                     f"{100 * st['ratio_to_full']:.2f}% | {st['training_instances']} ({m['per_class']}) | {st['trees']} | "
                     f"{sub('random')} | {sub('herding')} | {m['depth']} | {m['chosen_min_support']} | "
                     f"{m['mining_seconds']:.1f} | {m['elapsed_seconds']:.1f} |")
    wins = sum(1 for r in results.values() if r["summary"].get("gin", {}).get("synthetic", {}).get("acc", {}).get(
        "mean", -1) > r["summary"].get("gin", {}).get("random", {}).get("acc", {}).get("mean", 101))
    lines += ["", f"Mirage beats the random subset of equal bytes (GIN accuracy) on {wins} of {len(results)} datasets.",
              "", "*Paper rule (Mirage's official code, for comparison only): each seed's test AUC at its best "
              "validation-AUC epoch (checked every 10 epochs), mean ± std over the top half of seeds by validation AUC "
              "(top-5 of 10 in the paper). It selects on validation twice and is optimistic; every other column is "
              "the final epoch over all seeds."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--models", default="gin,gcn")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--search-epochs", type=int, default=100)
    ap.add_argument("--search-runs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default="bench/results/graph_table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import dsdistill.evaluators  # noqa: F401
    import dsdistill.methods  # noqa: F401
    from dsdistill.data.graphs import load_graph_dataset
    from dsdistill.evaluators.graph import GRAPH, evaluate_graph
    from dsdistill.io import atomic_write_json, atomic_write_text
    from dsdistill.registry import GRAPH_CONDENSERS

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"runs": args.runs, "epochs": args.epochs, "models": args.models.split(","), "seed": args.seed,
                "search": f"{args.search_runs} x GIN, {args.search_epochs} epochs", "threads": args.threads,
                "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                "protocol": GRAPH.description}
    results: dict = {}
    if out.with_suffix(".json").exists():  # resume: keep datasets already measured with the same settings
        previous = json.loads(out.with_suffix(".json").read_text())
        if previous.get("settings") == settings:
            results = previous["results"]
    for name in args.datasets.split(","):
        if name in results:
            continue
        started = time.time()
        data = load_graph_dataset(name, args.data_root)
        mirage = GRAPH_CONDENSERS.get("mirage").from_settings(name, 1, {"search_epochs": args.search_epochs,
                                                                        "search_runs": args.search_runs})
        syn = mirage.condense(data, 1, seed=args.seed, progress=False)
        report = evaluate_graph(syn, data, models=settings["models"], runs=args.runs, epochs=args.epochs,
                                seed=args.seed, baselines=("random", "herding", "full"), progress=False)
        p = syn.provenance
        results[name] = {
            "summary": report.graph_summary(), "storage": report.storage, "report": report.to_dict(),
            "mirage": {"depth": syn.depth, "chosen_min_support": p["chosen_min_support"],
                       "thresholds": p["thresholds"], "per_class": syn.class_counts().tolist(),
                       "mining_seconds": p["mining_seconds"], "search_seconds": p["search_seconds"],
                       "elapsed_seconds": p["elapsed_seconds"], "unique_trees": p["unique_trees"], "search": p["search"]},
            "dataset": {"train": len(data.train), "val": len(data.val), "test": len(data.test),
                        "classes": data.num_classes, "split": data.split},
            "wall_seconds": round(time.time() - started, 1)}
        atomic_write_json(out.with_suffix(".json"), {"settings": settings, "results": results}, overwrite=True)
        atomic_write_text(out.with_suffix(".md"), markdown(results, settings), overwrite=True)
        print(f"{name}: done in {time.time() - started:.0f} s", flush=True)
    atomic_write_text(out.with_suffix(".md"), markdown(results, settings), overwrite=True)
    print(markdown(results, settings))


if __name__ == "__main__":
    main()
