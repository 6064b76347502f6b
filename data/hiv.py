"""MoleculeNet HIV as a graph dataset: SMILES parsed with RDKit, deterministic scaffold split.

Atom label = (atomic number, formal charge, aromatic), interned over the whole CSV (a label
vocabulary only; labels unseen in training are unused one-hot columns); bond label = bond type
(single, double, triple, aromatic, other). The split groups molecules by Bemis-Murcko scaffold and
fills train (80%), then validation (10%), then test with the groups from largest to smallest, as
OGB's scaffold split does. Without RDKit the loader raises a ConfigError saying so.
"""

from __future__ import annotations

import csv
import os

import torch
from torch import Tensor

from dsdistill.data.graphs import SPLIT_SEED, GraphData, _file_digest
from dsdistill.data.paths import resolve_data_root
from dsdistill.errors import ConfigError, DataNotFoundError
from dsdistill.graphstore import GraphStore

_BONDS = {"SINGLE": 0, "DOUBLE": 1, "TRIPLE": 2, "AROMATIC": 3}


def scaffold_split(scaffolds: list[str], fractions: tuple[float, float] = (0.8, 0.1)) -> tuple[Tensor, ...]:
    """Deterministic scaffold split: groups by scaffold, largest groups first, into train/val/test."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(scaffolds):
        groups.setdefault(s, []).append(i)
    ordered = sorted(groups.values(), key=lambda g: (-len(g), g[0]))
    n, parts = len(scaffolds), ([], [], [])
    for g in ordered:
        if len(parts[0]) + len(g) <= fractions[0] * n:
            parts[0].extend(g)
        elif len(parts[1]) + len(g) <= fractions[1] * n:
            parts[1].extend(g)
        else:
            parts[2].extend(g)
    return tuple(torch.tensor(sorted(p), dtype=torch.int64) for p in parts)


def load_hiv(data_root: str | os.PathLike | None = None, *, fold: int | None = None, num_folds: int = 10,
             seed: int = SPLIT_SEED) -> GraphData:
    """MoleculeNet HIV from its CSV (needs RDKit); scaffold split 80/10/10."""
    try:
        from rdkit import Chem, RDLogger
        from rdkit.Chem.Scaffolds import MurckoScaffold
    except ImportError:
        raise ConfigError("the hiv dataset parses SMILES with RDKit, which is not installed; "
                          "pip install rdkit (or 'dsdistill[hiv]')") from None
    if fold is not None:
        raise ConfigError("hiv uses its scaffold split; cross-validation folds are not supported")
    path = resolve_data_root(data_root) / "ogb" / "moleculenet_hiv" / "HIV.csv"
    if not path.is_file():
        raise DataNotFoundError(f"HIV.csv not found at {path}; pass --data-root")
    RDLogger.DisableLog("rdApp.*")
    atom_ids: dict[tuple, int] = {}
    graphs, scaffolds = [], []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            mol = Chem.MolFromSmiles(row["smiles"])
            if mol is None or mol.GetNumAtoms() == 0:
                continue
            labels = [atom_ids.setdefault((a.GetAtomicNum(), a.GetFormalCharge(), a.GetIsAromatic()), len(atom_ids))
                      for a in mol.GetAtoms()]
            src, dst, bond = [], [], []
            for b in mol.GetBonds():
                i, j, t = b.GetBeginAtomIdx(), b.GetEndAtomIdx(), _BONDS.get(str(b.GetBondType()), 4)
                src += [i, j]
                dst += [j, i]
                bond += [t, t]
            graphs.append((torch.tensor(labels), torch.tensor([src, dst], dtype=torch.int64).reshape(2, -1),
                           torch.tensor(bond, dtype=torch.int64), int(row["HIV_active"])))
            scaffolds.append(MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=True))
    store = GraphStore.from_graphs(graphs)
    train, val, test = scaffold_split(scaffolds)
    return GraphData(name="hiv", train=store.subset(train), val=store.subset(val), test=store.subset(test),
                     num_classes=2, node_vocab=torch.eye(len(atom_ids)), edge_vocab=torch.eye(5),
                     class_names=["inactive", "active"], split="Bemis-Murcko scaffold split 80/10/10",
                     node_labels="atom", fingerprint=_file_digest([path])[:16], source=str(path),
                     indices={"train": train, "val": val, "test": test})
