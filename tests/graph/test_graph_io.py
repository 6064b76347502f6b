"""Graph HDF5 files: round trip, describe, and refusal of hostile or inconsistent files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from dsdistill.errors import ConfigError, SyntheticFileError
from dsdistill.graphset import GraphSyntheticSet
from dsdistill.io import describe, load_graph_synthetic, load_synthetic, save_graph_synthetic, save_synthetic
from dsdistill.methods.mirage.forest import build_forest_set
from dsdistill.methods.mirage.trees import compute_tree_ids
from dsdistill.synthetic import SyntheticSet


@pytest.fixture
def forest_set(graph_tools) -> GraphSyntheticSet:
    edge_index = graph_tools["undirected"]([(0, 1), (1, 2), (3, 4)])
    index = compute_tree_ids(torch.tensor([0, 1, 2, 1, 0, 2]), edge_index, None, 2)
    t = index.node_tree.tolist()
    itemsets = [((t[0], t[1]), 5, 0), ((t[5],), 3, 1), ((t[1], t[5]), 2, 2)]  # node 5 is isolated
    return build_forest_set(index, itemsets, node_vocab=torch.eye(3), edge_vocab=torch.ones(1, 1), num_classes=3,
                            method="mirage", dataset="toy", class_names=["a", "b", "c"],
                            provenance={"seed": 0, "search": [{"min_support": 0.5}]})


@pytest.fixture
def path(forest_set, tmp_path) -> Path:
    p = tmp_path / "g.h5"
    save_graph_synthetic(forest_set, p)
    return p


def test_round_trip_is_exact(forest_set, path):
    back = load_graph_synthetic(path)
    for name in ("node_labels", "edge_index", "edge_labels", "tree_ptr", "itemset_trees", "itemset_ptr", "support",
                 "labels", "node_vocab", "edge_vocab", "node_degree"):
        assert torch.equal(getattr(back, name), getattr(forest_set, name)), name
    for name in ("num_classes", "method", "dataset", "ipc", "pooling", "depth", "vocab_kind", "class_names",
                 "provenance", "protocol"):
        assert getattr(back, name) == getattr(forest_set, name), name
    store = back.to_store()
    assert len(store) == 3 and int(store.pool_mask.sum()) == 5 and store.y.tolist() == [0, 1, 2]


def test_describe_and_image_reader_refusal(path):
    text = describe(path)
    for needle in ("graph set", "mirage", "3 training graphs", "depth 2", "trees", "storage", "total"):
        assert needle in text, needle
    with pytest.raises(SyntheticFileError, match="is a graph set; load it with"):
        load_synthetic(path)


def test_graph_reader_refuses_image_files(tmp_path):
    p = tmp_path / "img.h5"
    save_synthetic(SyntheticSet(images=torch.zeros(2, 1, 2, 2), labels=torch.tensor([0, 1]), num_classes=2,
                                method="dm", dataset="toy", ipc=1), p)
    with pytest.raises(SyntheticFileError, match="is an image set"):
        load_graph_synthetic(p)


def test_overwrite_refused(forest_set, path):
    with pytest.raises(ConfigError, match="exists"):
        save_graph_synthetic(forest_set, path, overwrite=False)


def rewrite(path: Path, fn) -> None:
    with h5py.File(path, "r+") as f:
        fn(f)


def replace(name, value):
    def fn(f):
        del f[name]
        f[name] = value
    return fn


@pytest.mark.parametrize("mutation,phrase", [
    (lambda f: f.attrs.__setitem__("format_version", np.int64(7)), "newer dsdistill"),
    (lambda f: f.attrs.__delitem__("format"), "not a dsdistill file"),
    (lambda f: f.attrs.__setitem__("pooling", np.bytes_(b"max")), "pooling"),
    (replace("trees/ptr", np.array([0, 3], dtype=np.int64)), "/trees/ptr"),
    (replace("itemsets/label", np.array([0, 1, 9], dtype=np.int64)), "/itemsets/label"),
    (replace("itemsets/tree_ids", np.array([0, 1, 2, 99, 1], dtype=np.int64)), "tree_ids"),
    (replace("itemsets/support", np.array([1, 0, 1], dtype=np.int64)), "support"),
    (lambda f: f["trees/edge_index"].__setitem__((1, 0), 9), "tree"),
    (replace("vocab/node_features", np.full((3, 3), np.nan, dtype=np.float32)), "non-finite"),
    (lambda f: f.__delitem__("itemsets"), "no /itemsets"),
    (replace("trees/edge_labels", np.zeros(3, dtype=np.int64)), "edge_labels"),
    (lambda f: f.__delitem__("trees/node_degree"), "no /trees/node_degree"),
    (lambda f: f["trees/node_degree"].__setitem__(0, 9), "/trees/node_degree must"),
    (lambda f: f["trees/node_degree"].__setitem__(1, -1), "/trees/node_degree must"),
])
def test_hostile_files_rejected_with_one_sentence(path, mutation, phrase):
    rewrite(path, mutation)
    with pytest.raises(SyntheticFileError) as err:
        load_graph_synthetic(path)
    message = str(err.value)
    assert phrase in message and "\n" not in message and str(path) in message


def test_cycle_in_a_tree_rejected(path):
    def make_cycle(f):
        e = f["trees/edge_index"][()]
        ptr = f["trees/ptr"][()]
        # point the first tree's first child at its own child instead of the root: a 2-cycle
        child = e[0][0]
        grandchild = [e[0][i] for i in range(e.shape[1]) if e[1][i] == child and e[0][i] < ptr[1]]
        if grandchild:
            e[1][0] = grandchild[0]
        del f["trees/edge_index"]
        f["trees/edge_index"] = e
    rewrite(path, make_cycle)
    with pytest.raises(SyntheticFileError, match="cycle|rooted"):
        load_graph_synthetic(path)


def test_truncated_and_foreign_files(path, tmp_path):
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SyntheticFileError, match="truncated or corrupt|inconsistent"):
        load_graph_synthetic(cut)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(SyntheticFileError, match="not a dsdistill file"):
        load_graph_synthetic(foreign)
    with pytest.raises(SyntheticFileError, match="does not exist"):
        load_graph_synthetic(tmp_path / "missing.h5")
