"""The ``mirage`` condenser: frequent computation-tree sets per class, searched on validation.

Pipeline (Mirage, Gupta et al., ICLR 2024; official code idea-iitd/Mirage):

1. depth-L computation trees of every node of every *training* graph, with canonical ids
   (:mod:`.trees`);
2. each graph becomes the transaction of its distinct tree ids;
3. FP-growth per class (:mod:`.fpgrowth`, :mod:`.mine`);
4. each kept itemset is stored as one training graph: the forest of its trees, roots marked,
   labelled with the class, with its support (:mod:`.forest`).

Threshold choice. ``min_support > 0`` fixes it (a count, or a fraction of each class). With the
default ``min_support = 0`` the condenser walks ``search_grid`` (fractions, high to low), skips
thresholds whose set leaves a class empty or exceeds the byte budget (``budget_bytes``, else
``budget_ratio`` x the training split's bytes, same accounting as ``GraphSyntheticSet.storage_bytes``),
trains ``search_runs`` quick ``search_model`` students on each remaining set and keeps the one with
the best mean of validation accuracy and ROC-AUC (ties: fewer bytes). The official code sweeps
hand-set absolute thresholds per dataset and keeps the best *top-5-of-10 validation AUC*; selection
here uses the validation split only, never the test split.

Other deviations from the official code (see also :mod:`.trees` and :mod:`.mine`):

* The evaluation protocol reports final-epoch mean ± std over all seeds; the official top-5-of-10
  rule is available in the report, labelled as such (``dsdistill.evaluators.graph``).
* ``ipc`` is ignored (the set's size follows from the threshold and budget); the file's ``ipc``
  header is the largest number of itemsets of a class.
* Overlap. The official C++ path computes the "frequent in the other class" filter and then
  disables it (keep); session-1's ``"auto"`` dropped unless a class was left empty, which on DD
  left one class with 1-10 itemsets against 64 and a majority-class student. Now ``"auto"`` makes
  both the dropped and the kept set of every threshold a candidate and validation chooses.
* Per-class cap. The official code keeps every frequent itemset; ``max_itemsets_per_class`` (64)
  keeps the top ones by support. Besides bounding the set it keeps the classes comparable: at one
  relative threshold the class of larger graphs has many more frequent itemsets (DD: 812 vs 60 at
  0.2), and uncapped DD sets gave students that called every validation graph the majority class.
  Even capped, DD students are poorly calibrated: a mean-pooled student averages per-tree logits
  over ~280 nodes whose trees are mostly not in the set, and its validation predictions are often
  all one class (validation AUC stays ~0.7).
* Frequency weighting is off in the official code; ``support`` is stored and the graph protocol
  weights by it when the set stores an itemset under two classes ("keep"; identical inputs with
  different labels, see :func:`dsdistill.evaluators.graph_train.settings_for`) or when asked
  (``weight_by_support``). The search trains its students the same way.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from dsdistill.condenser import Condenser
from dsdistill.errors import ConfigError
from dsdistill.graphset import GraphSyntheticSet, subset_bytes
from dsdistill.registry import GRAPH_CONDENSERS
from dsdistill.rng import derive_seed

from .forest import build_forest_set, forest_bytes
from .fpgrowth import TooManyItemsets
from .mine import mine_classes, select_itemsets, thresholds_for
from .trees import coarsen_labels, compute_tree_ids, transactions

# DD: Mirage's config uses 1-hop trees over 16 hand-picked node labels (with all 89 labels almost every
# tree is unique). We keep the most frequent labels instead; 8 was chosen on the validation split among
# {4, 8, 16} (chosen set's validation AUC 0.58 / 0.65 / 0.57, seed 0) and re-checked in session 3 with
# the per-class cap of 64 among {2, 3, 4, 8}: best candidate's validation accuracy / AUC of two GIN
# students 0.58 / 0.46, 0.59 / 0.57, 0.62 / 0.57, 0.64 / 0.70. Fewer labels make the frequent trees cover
# more of a graph's nodes (trees in >= 20% of training graphs: 11% of validation nodes with 8 labels,
# 69% with 4) but every graph of both classes then contains them, and low thresholds exceed the
# enumeration limit. Depth 2 is worse still: even with one label, trees in >= 20% of graphs cover 9%.
RECIPES = {"dd": {"depth": 1, "top_labels": 8}}


@dataclass
class MirageConfig:
    """Settings of :class:`Mirage` (see module docstring).

    Attributes:
        depth: Computation-tree depth L (students use L layers).
        edge_labels: Include edge labels in tree identity.
        top_labels: Keep only this many most frequent node labels, merge the rest (0 = keep all;
            see :func:`.trees.coarsen_labels`).
        min_support: 0 = search; >= 1 absolute count per class; in (0, 1) fraction of each class.
        search_grid: Fractions tried, high to low, when searching.
        max_itemset_size: Largest number of trees in one itemset (0 = unbounded).
        max_itemsets_per_class: Keep at most this many itemsets per class (0 = all).
        overlap: ``"drop"`` itemsets frequent in another class too, ``"keep"`` them, or ``"auto"``:
            both sets are candidates at every threshold and validation chooses.
        budget_bytes: Byte budget of the set (0 = ``budget_ratio`` of the training split).
        budget_ratio: Budget as a fraction of the training split's bytes.
        enumeration_limit: Abort mining a threshold past this many itemsets in one class.
        search_model: Student used to score thresholds on validation.
        search_epochs, search_runs, search_lr, search_min_steps: Its training (as the graph protocol).
    """

    depth: int = 2
    edge_labels: bool = True
    top_labels: int = 0
    min_support: float = 0.0
    search_grid: tuple = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01)
    max_itemset_size: int = 3
    max_itemsets_per_class: int = 64
    overlap: str = "auto"
    budget_bytes: int = 0
    budget_ratio: float = 0.1
    enumeration_limit: int = 100_000
    search_model: str = "gin"
    search_epochs: int = 100
    search_runs: int = 2
    search_lr: float = 0.001
    search_min_steps: int = 500


@GRAPH_CONDENSERS.register("mirage")
class Mirage(Condenser):
    """Model-agnostic graph distillation by frequent computation-tree mining."""

    name = "mirage"
    Config = MirageConfig
    protocol = "graph"

    @classmethod
    def recipe(cls, dataset: str, ipc: int) -> dict:
        return dict(RECIPES.get(dataset, {}))

    def _check(self) -> None:
        cfg = self.config
        if cfg.depth < 1 or cfg.overlap not in ("drop", "keep", "auto") or cfg.max_itemset_size < 0:
            raise ConfigError(f"mirage needs depth >= 1, overlap drop|keep|auto, max_itemset_size >= 0; got "
                              f"{cfg.depth}, {cfg.overlap!r}, {cfg.max_itemset_size}")
        if cfg.min_support < 0:
            raise ConfigError(f"min_support must be 0 (search), a fraction in (0, 1) or a count >= 1, got {cfg.min_support}")
        if not cfg.min_support and not all(0 < float(r) < 1 for r in cfg.search_grid):
            raise ConfigError(f"search_grid must hold fractions in (0, 1), got {cfg.search_grid}")

    def condense(self, data, ipc: int = 0, *, seed: int = 0, device: str = "cpu", progress: bool = True,
                 checkpoint=None) -> GraphSyntheticSet:
        """Distil ``data`` (:class:`~dsdistill.data.graphs.GraphData`); ``ipc`` is ignored."""
        self._check()
        cfg, started, cpu_started = self.config, time.time(), time.process_time()
        train = data.train
        labels, vocab, vocab_kind = train.node_label, data.node_vocab, "dataset"
        if 0 < cfg.top_labels < int((torch.bincount(labels) > 0).sum()):
            labels, vocab = coarsen_labels(labels, data.node_vocab, cfg.top_labels)
            vocab_kind = "set"
        vocab_bytes = 4 * (vocab.numel() + data.edge_vocab.numel()) if vocab_kind == "set" else 0
        index = compute_tree_ids(labels, train.edge_index, train.edge_label if cfg.edge_labels else None, cfg.depth)
        trans = transactions(index.node_tree, train.node_ptr)
        by_class = [[trans[g] for g in train.class_indices(c).tolist()] for c in range(data.num_classes)]
        sizes = [len(t) for t in by_class]
        tree_seconds = time.time() - started
        budget = cfg.budget_bytes or int(cfg.budget_ratio * subset_bytes(train))
        grid = [cfg.min_support] if cfg.min_support else sorted({float(r) for r in cfg.search_grid}, reverse=True)
        log, candidates, seen, mine_seconds, size_cache = [], [], set(), 0.0, {}
        for rel in grid:
            thetas = thresholds_for(rel, sizes)
            entry = {"min_support": rel, "thresholds": thetas}
            t0 = time.time()
            try:
                mined = mine_classes(by_class, thetas, max_size=cfg.max_itemset_size, limit=cfg.enumeration_limit)
            except TooManyItemsets:
                mine_seconds += time.time() - t0
                log.append({**entry, "status": f"more than {cfg.enumeration_limit} itemsets in a class; stopped"})
                break
            mine_seconds += time.time() - t0
            for overlap in (["drop", "keep"] if cfg.overlap == "auto" else [cfg.overlap]):
                t0 = time.time()
                itemsets = select_itemsets(mined, overlap=overlap, cap=cfg.max_itemsets_per_class)
                per_class = [sum(1 for _, _, c in itemsets if c == k) for k in range(data.num_classes)]
                nbytes = forest_bytes(index, itemsets, size_cache, vocab_bytes)
                mine_seconds += time.time() - t0
                row = dict(entry, frequent=[len(m) for m in mined], overlap=overlap, kept=per_class, bytes=nbytes)
                key = tuple(itemsets)
                if min(per_class) == 0:
                    row["status"] = "a class has no itemset"
                elif nbytes > budget:
                    row["status"] = f"over budget ({budget} B)"
                elif key in seen:
                    row["status"] = "same set as another candidate"
                else:
                    seen.add(key)
                    row["status"] = "candidate"
                    candidates.append((len(log), itemsets, nbytes))
                log.append(row)
        if not candidates:
            raise ConfigError(f"mirage found no threshold whose itemsets cover every class of {data.name} within "
                              f"{budget} bytes (depth {cfg.depth}); lower min_support / search_grid, raise "
                              f"budget_ratio")
        search_started, mining_cpu = time.time(), time.process_time() - cpu_started
        best = None
        for pos, itemsets, nbytes in candidates:
            if len(candidates) == 1:
                best = (0.0, -nbytes, pos, itemsets)
                break
            acc, auc = self._score(index, itemsets, data, vocab, seed, pos)
            log[pos].update(val_acc=acc, val_auc=auc)
            score = (acc + (auc if auc == auc else acc)) / 2
            if best is None or (score, -nbytes) > best[:2]:
                best = (score, -nbytes, pos, itemsets)
        _, _, pos, itemsets = best
        log[pos]["status"] = "chosen"
        elapsed = time.time() - started
        prov = {"method": self.name, "config": asdict(self.config), "dataset": data.name, "seed": seed,
                "split": data.split, "dataset_fingerprint": data.fingerprint, "budget_bytes": budget,
                "chosen_min_support": log[pos]["min_support"], "chosen_overlap": log[pos].get("overlap"),
                "thresholds": log[pos]["thresholds"],
                "unique_trees": index.num_trees, "training_graphs_per_class": sizes, "search": log,
                "tree_seconds": round(tree_seconds, 3), "mining_seconds": round(tree_seconds + mine_seconds, 3),
                "search_seconds": round(time.time() - search_started, 3), "elapsed_seconds": round(elapsed, 3),
                "mining_cpu_seconds": round(mining_cpu, 3),
                "elapsed_cpu_seconds": round(time.process_time() - cpu_started, 3),
                "versions": {"torch": torch.__version__}}
        return build_forest_set(index, itemsets, node_vocab=vocab, edge_vocab=data.edge_vocab,
                                num_classes=data.num_classes, method=self.name, dataset=data.name,
                                class_names=data.class_names, provenance=prov, vocab_kind=vocab_kind)

    def _score(self, index, itemsets, data, vocab, seed: int, pos: int) -> tuple[float, float]:
        """Mean validation (accuracy, ROC-AUC) of ``search_runs`` quick students on the candidate set."""
        from dsdistill.evaluators.graph_models import build_graph_student
        from dsdistill.evaluators.graph_train import GraphTrainSettings, Scorer, settings_for, train_graph_student

        cfg = self.config
        syn = build_forest_set(index, itemsets, node_vocab=vocab, edge_vocab=data.edge_vocab,
                               num_classes=data.num_classes, method=self.name, dataset=data.name)
        store = syn.to_store()
        scorer = Scorer(data.val, data.node_vocab, data.num_classes)
        settings = settings_for(syn, GraphTrainSettings(epochs=cfg.search_epochs, lr=cfg.search_lr,
                                                        min_steps=cfg.search_min_steps))
        scores = []
        for run in range(cfg.search_runs):
            model = build_graph_student(cfg.search_model, data.feature_dim, data.num_classes, layers=cfg.depth,
                                        seed=derive_seed(seed, "mirage-search-init", pos, run))
            train_graph_student(model, store, vocab, settings,
                                seed=derive_seed(seed, "mirage-search", pos, run))
            scores.append(scorer(model))
        return (sum(s[0] for s in scores) / len(scores), sum(s[1] for s in scores) / len(scores))
