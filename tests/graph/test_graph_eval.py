"""The graph protocol: metrics, the report (final epoch and the labelled paper rule), baselines."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

import dsdistill.evaluators  # noqa: F401
import dsdistill.methods  # noqa: F401
from dsdistill.errors import ConfigError
from dsdistill.evaluators.graph_train import roc_auc
from dsdistill.graphset import subset_bytes
from dsdistill.registry import EVALUATORS, GRAPH_CONDENSERS

pytest.importorskip("torch_geometric")
from dsdistill.evaluators.graph import evaluate_graph  # noqa: E402


def brute_auc(scores, y):
    pos = [s for s, t in zip(scores, y) if t == 1]
    neg = [s for s, t in zip(scores, y) if t == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_roc_auc_matches_pairwise_definition_with_ties():
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 5, (40,), generator=g).float()
    y = torch.randint(0, 2, (40,), generator=g)
    scores = torch.stack([-s, s], 1)
    assert math.isclose(roc_auc(scores, y, 2), brute_auc(s.tolist(), y.tolist()), rel_tol=1e-9)
    assert math.isnan(roc_auc(scores, torch.zeros(40, dtype=torch.int64), 2))
    three = torch.eye(3)[torch.tensor([0, 1, 2, 0])]
    assert roc_auc(three, torch.tensor([0, 1, 2, 0]), 3) == 1.0


@pytest.fixture(scope="module")
def mirage_set(tiny3, fast_mirage):
    return GRAPH_CONDENSERS.get("mirage").from_settings("tiny3", 1, {**fast_mirage, "min_support": 0.3}).condense(
        tiny3, 1, seed=0)


def test_report_has_every_kind_metric_and_size(mirage_set, tiny3):
    report = evaluate_graph(mirage_set, tiny3, models=["gin", "gat"], runs=2, epochs=4, eval_every=2, min_steps=0,
                            baselines=("random", "herding", "k-center", "full"), progress=False)
    kinds = {(r.model, r.kind) for r in report.runs}
    assert kinds == {(m, k) for m in ("gin", "gat") for k in ("synthetic", "random", "herding", "k-center", "full")}
    assert all(0 <= r.test_acc <= 1 and r.test_auc is not None and r.extra["best_epoch"] in (2, 4)
               for r in report.runs)
    s = report.graph_summary()["gin"]
    assert s["synthetic"]["acc"]["n"] == 2 and s["synthetic"]["paper_auc"]["n"] == 1  # top half of 2 runs
    st = report.storage
    assert st["full_train_bytes"] == subset_bytes(tiny3.train) and st["synthetic"]["total"] < st["full_train_bytes"]
    assert st["baselines"]["random"]["bytes"] <= max(st["synthetic"]["total"], 2000)
    table = report.table()
    assert "paper rule" in table and "| gin | full |" in table and "ROC-AUC" in table
    data = json.loads(json.dumps(report.to_dict()))
    assert data["settings"]["selection"].startswith("final epoch") and "graph_summary" in data


def test_students_learn_the_tiny_task(tiny3):
    full = GRAPH_CONDENSERS.get("random").from_settings("tiny3", 16, {}).condense(tiny3, 16, seed=0)
    report = evaluate_graph(full, tiny3, models=["gin"], runs=1, epochs=40, min_steps=0, lr=0.01, baselines=(),
                            progress=False)
    assert report.runs[0].test_acc >= 0.8


def test_bad_settings_are_clear_errors(mirage_set, tiny3):
    with pytest.raises(ConfigError, match="unknown graph model"):
        evaluate_graph(mirage_set, tiny3, models=["convnet"], runs=1, progress=False)
    with pytest.raises(ConfigError, match="unknown baseline"):
        evaluate_graph(mirage_set, tiny3, baselines=("best",), runs=1, progress=False)
    assert "graph" in EVALUATORS and EVALUATORS.get("graph").layers_for(mirage_set) == mirage_set.depth
