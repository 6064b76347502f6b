"""The mirage condenser and the graph baselines on tiny generated data (3 classes) and MUTAG."""

from __future__ import annotations

import pytest
import torch

import dsdistill.methods  # noqa: F401
from dsdistill.errors import ConfigError
from dsdistill.io import load_graph_synthetic, save_graph_synthetic
from dsdistill.methods.mirage.mine import select_itemsets, thresholds_for
from dsdistill.registry import CONDENSERS, GRAPH_CONDENSERS

pytest.importorskip("torch_geometric")


def test_more_than_two_classes_and_isolated_nodes(tiny3, fast_mirage, tmp_path):
    syn = GRAPH_CONDENSERS.get("mirage").from_settings("tiny3", 1, {**fast_mirage, "min_support": 0.3}).condense(
        tiny3, 1, seed=0)
    assert syn.class_counts().tolist() == [sum(1 for c in syn.labels.tolist() if c == k) for k in range(3)]
    assert (syn.class_counts() > 0).all() and syn.num_classes == 3
    # label 4 only occurs on isolated nodes (every third graph); their one-node tree is frequent enough
    single = [t for t in range(syn.num_trees) if syn.tree_ptr[t + 1] - syn.tree_ptr[t] == 1]
    assert any(int(syn.node_labels[syn.tree_ptr[t]]) == 4 for t in single)
    store = syn.to_store()
    assert int(store.pool_mask.sum()) == int(syn.itemset_sizes().sum())  # one pooled root per tree
    save_graph_synthetic(syn, tmp_path / "m.h5")
    assert torch.equal(load_graph_synthetic(tmp_path / "m.h5").node_labels, syn.node_labels)


def test_search_is_recorded_and_chooses_on_validation(tiny3, fast_mirage):
    syn = GRAPH_CONDENSERS.get("mirage").from_settings("tiny3", 1, fast_mirage).condense(tiny3, 1, seed=0)
    log = syn.provenance["search"]
    # overlap "auto": the dropped and the kept set of every threshold are both considered
    assert [(e["min_support"], e["overlap"]) for e in log] == [(r, o) for r in (0.5, 0.3, 0.1) for o in ("drop", "keep")]
    assert syn.provenance["chosen_overlap"] in ("drop", "keep")
    chosen = [e for e in log if e["status"] == "chosen"]
    assert len(chosen) == 1 and syn.provenance["chosen_min_support"] == chosen[0]["min_support"]
    assert all("val_acc" in e for e in log if e["status"] in ("candidate", "chosen")) or len(
        [e for e in log if e["status"] in ("candidate", "chosen")]) == 1
    assert syn.storage_bytes()["total"] <= syn.provenance["budget_bytes"]
    prov = syn.provenance  # CPU seconds beside wall seconds (the shared machine's wall time includes waiting)
    assert 0 <= prov["mining_cpu_seconds"] <= prov["elapsed_cpu_seconds"]
    again = GRAPH_CONDENSERS.get("mirage").from_settings("tiny3", 1, fast_mirage).condense(tiny3, 1, seed=0)
    assert torch.equal(again.node_labels, syn.node_labels) and torch.equal(again.labels, syn.labels)


def test_overlap_filter_and_thresholds():
    mined = [{(1,): 5, (2,): 4, (1, 2): 3}, {(1,): 6, (3,): 2}, {(4,): 9}]
    kept = select_itemsets(mined, overlap="drop")
    assert [(p, c) for p, _, c in kept] == [((2,), 0), ((1, 2), 0), ((3,), 1), ((4,), 2)]
    assert len(select_itemsets(mined, overlap="keep", cap=1)) == 3
    assert thresholds_for(0.25, [10, 41]) == [3, 11] and thresholds_for(7, [10, 41]) == [7, 7]


def test_shared_itemsets_are_trained_with_support_weights(graph_tools):
    from dsdistill.evaluators.graph_train import GraphTrainSettings, settings_for
    from dsdistill.methods.mirage.forest import build_forest_set
    from dsdistill.methods.mirage.trees import compute_tree_ids

    index = compute_tree_ids(torch.tensor([0, 1, 2]), graph_tools["undirected"]([(0, 1), (1, 2)]), None, 1)
    t = index.node_tree.tolist()
    make = lambda items: build_forest_set(index, items, node_vocab=torch.eye(3), edge_vocab=torch.ones(1, 1),  # noqa: E731
                                          num_classes=2, method="mirage", dataset="toy")
    shared = make([((t[0], t[1]), 9, 0), ((t[1], t[0]), 3, 1), ((t[2],), 4, 1)])
    apart = make([((t[0], t[1]), 9, 0), ((t[2],), 4, 1)])
    assert shared.has_shared_itemsets() and not apart.has_shared_itemsets()
    assert settings_for(shared, GraphTrainSettings()).weight_by_support
    assert not settings_for(apart, GraphTrainSettings()).weight_by_support


def test_impossible_budget_is_one_clear_error(tiny3, fast_mirage):
    with pytest.raises(ConfigError, match="no threshold"):
        GRAPH_CONDENSERS.get("mirage").from_settings("tiny3", 1, {**fast_mirage, "budget_bytes": 10}).condense(tiny3, 1)


def test_mutag_end_to_end(mutag, fast_mirage):
    syn = GRAPH_CONDENSERS.get("mirage").from_settings("mutag", 1, {**fast_mirage, "budget_ratio": 0.1}).condense(
        mutag, 1, seed=0)
    assert syn.depth == 2 and syn.pooling == "roots" and (syn.class_counts() > 0).all()
    assert syn.provenance["mining_seconds"] < 60 and syn.storage_bytes()["total"] < 0.1 * 170_760


@pytest.mark.parametrize("name", ["random", "herding", "k-center"])
def test_subset_baselines(name, tiny3):
    syn = GRAPH_CONDENSERS.get(name).from_settings("tiny3", 2, {}).condense(tiny3, 2, seed=0)
    assert syn.pooling == "all" and syn.class_counts().tolist() == [2, 2, 2]
    budget = GRAPH_CONDENSERS.get(name).from_settings("tiny3", 1, {"budget_bytes": 3000}).condense(tiny3, 1, seed=0)
    assert budget.storage_bytes()["total"] <= 3000 and (budget.class_counts() >= 1).all()


def test_doscond_runs_and_round_trips(tiny3, tmp_path):
    syn = GRAPH_CONDENSERS.get("doscond").from_settings("tiny3", 1, {"iterations": 3, "batch_real": 8}).condense(
        tiny3, 1, seed=0, progress=False)
    assert syn.vocab_kind == "set" and syn.num_itemsets == 3 and torch.isfinite(syn.node_vocab).all()
    save_graph_synthetic(syn, tmp_path / "d.h5")
    back = load_graph_synthetic(tmp_path / "d.h5")
    assert torch.equal(back.node_vocab, syn.node_vocab) and back.storage_bytes()["total"] > back.storage_bytes()["trees"]


def test_graph_methods_stay_out_of_the_image_registry():
    assert "mirage" not in CONDENSERS and "doscond" not in CONDENSERS
    assert {"mirage", "doscond", "random", "herding", "k-center"} <= set(GRAPH_CONDENSERS.names())
