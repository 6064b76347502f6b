"""Graph datasets: splits, CV folds, degree labels, the cache copy, HIV without RDKit."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from dsdistill.data.graphs import (canonical_graph_name, graph_data_from_store, is_graph_dataset, load_graph_dataset,
                                   stratified_folds, stratified_split)
from dsdistill.errors import ConfigError, DataNotFoundError, UnknownNameError


def test_names():
    assert canonical_graph_name("IMDB-BINARY") == "imdb-binary" == canonical_graph_name("imdb_binary")
    assert is_graph_dataset("MUTAG") and not is_graph_dataset("mnist")
    with pytest.raises(UnknownNameError, match="unknown graph dataset"):
        load_graph_dataset("cora")


def test_split_is_fixed_stratified_and_disjoint():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    train, val, test = stratified_split(y)
    assert len(train) + len(val) + len(test) == 100 and len(set(train.tolist()) | set(val.tolist()) | set(test.tolist())) == 100
    assert torch.bincount(y[test]).tolist() == [5, 3, 2] and torch.bincount(y[val]).tolist() == [5, 3, 2]
    assert torch.equal(stratified_split(y)[2], test)
    folds = stratified_folds(y, 10)
    assert torch.bincount(folds).tolist() == [10] * 10


def test_cv_fold_and_degree_labels(graph_tools):
    store = graph_tools["make_tiny"](2, 30)
    data = graph_data_from_store("t", store, 2, None, degree=True, fold=3, num_folds=5)
    assert "test fold 3, validation fold 2" in data.split and data.node_labels == "degree"
    assert data.node_vocab.shape[0] == int(data.train.node_label.max()) + 1
    with pytest.raises(ConfigError, match="fold"):
        graph_data_from_store("t", store, 2, torch.eye(5), fold=7, num_folds=5)


def test_mutag_is_copied_to_the_cache(mutag, tmp_path):
    assert (len(mutag.train), len(mutag.val), len(mutag.test)) == (152, 18, 18)
    assert mutag.node_vocab.shape == (7, 7) and mutag.edge_vocab.shape == (4, 4)
    assert mutag.source.endswith("raw")
    from pathlib import Path

    assert not (Path(mutag.source).parent / "processed").exists()  # PyG wrote into the cache only
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_graph_dataset("mutag", tmp_path / "nope")


def test_shipped_mutag_is_the_fallback(tmp_path):
    pytest.importorskip("torch_geometric")
    data = load_graph_dataset("mutag", tmp_path)  # an empty data root: the packaged copy is used
    assert "embedded" in data.source and len(data.train) == 152
    with pytest.raises(DataNotFoundError, match="NCI1 not found"):
        load_graph_dataset("nci1", tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("rdkit") is not None, reason="RDKit is installed")
def test_hiv_without_rdkit_is_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="RDKit, which is not installed; pip install rdkit"):
        load_graph_dataset("hiv")
    from click.testing import CliRunner

    from dsdistill.cli import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["condense", "--method", "mirage", "--dataset", "hiv", "-o", "h.h5"])
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "RDKit" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "h.h5").exists()


def test_pyproject_ships_the_tu_raw_files():
    import tomllib
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["dsdistill.data"]
    assert "embedded/TUDataset/*/raw/*.txt" in patterns
    assert len(list((repo / "data").glob("embedded/TUDataset/*/raw/*.txt"))) == 5


def test_hiv_pipeline_with_a_stub_rdkit(monkeypatch, tmp_path):
    """The CSV -> graphs -> scaffold split path, with a stand-in for RDKit (chains of atoms)."""
    import sys
    import types

    class Atom:
        def __init__(self, c):
            self.c = c

        def GetAtomicNum(self):
            return ord(self.c)

        def GetFormalCharge(self):
            return 0

        def GetIsAromatic(self):
            return self.c.islower()

    class Bond:
        def __init__(self, i):
            self.i = i

        def GetBeginAtomIdx(self):
            return self.i

        def GetEndAtomIdx(self):
            return self.i + 1

        def GetBondType(self):
            return "DOUBLE" if self.i == 0 else "SINGLE"

    class Mol:
        def __init__(self, s):
            self.s = s

        def GetNumAtoms(self):
            return len(self.s)

        def GetAtoms(self):
            return [Atom(c) for c in self.s]

        def GetBonds(self):
            return [Bond(i) for i in range(len(self.s) - 1)]

    chem = types.SimpleNamespace(MolFromSmiles=lambda s: Mol(s) if s != "bad" else None)
    scaffolds = types.SimpleNamespace(MurckoScaffold=types.SimpleNamespace(
        MurckoScaffoldSmiles=lambda mol, includeChirality: mol.s[0]))
    rdkit = types.SimpleNamespace(Chem=chem, RDLogger=types.SimpleNamespace(DisableLog=lambda *_: None))
    monkeypatch.setitem(sys.modules, "rdkit", rdkit)
    monkeypatch.setitem(sys.modules, "rdkit.Chem", chem)
    monkeypatch.setitem(sys.modules, "rdkit.Chem.Scaffolds", scaffolds)
    monkeypatch.setitem(sys.modules, "rdkit.Chem.Scaffolds.MurckoScaffold", scaffolds.MurckoScaffold)
    csv_dir = tmp_path / "ogb" / "moleculenet_hiv"
    csv_dir.mkdir(parents=True)
    rows = ["CCO", "CCN", "CcC", "NCC", "OCC", "bad", "CC", "NN", "OO", "CO", "C"]
    (csv_dir / "HIV.csv").write_text("smiles,activity,HIV_active\n" + "".join(
        f"{s},CI,{i % 2}\n" for i, s in enumerate(rows)))
    data = load_graph_dataset("hiv", tmp_path)
    assert len(data.train) + len(data.val) + len(data.test) == 10  # the unparsable row is skipped
    assert data.split.startswith("Bemis-Murcko") and data.edge_vocab.shape == (5, 5)
    scaffold_of = {i: s[0] for i, s in enumerate(r for r in rows if r != "bad")}
    for split in ("train", "val", "test"):  # a scaffold never straddles two splits
        own = {scaffold_of[int(i)] for i in data.indices[split]}
        others = {scaffold_of[int(i)] for k in ("train", "val", "test") if k != split for i in data.indices[k]}
        assert not own & others
    with pytest.raises(ConfigError, match="scaffold split"):
        load_graph_dataset("hiv", tmp_path, fold=0)
    # the stub-featurised molecules go through Mirage like any graph dataset
    from dsdistill.methods.mirage import Mirage, MirageConfig

    syn = Mirage(MirageConfig(depth=1, min_support=1, budget_bytes=10**6)).condense(data, progress=False)
    assert syn.dataset == "hiv" and sorted(set(syn.labels.tolist())) == [0, 1]
    assert syn.node_degree is not None and syn.node_vocab.shape == data.node_vocab.shape
