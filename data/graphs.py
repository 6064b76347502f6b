"""Graph-classification datasets: TU benchmarks through PyG, MoleculeNet HIV through RDKit.

Names (``GRAPH_DATASETS``; also listed in ``DATASETS`` with a loader that refuses the image path):
``mutag``, ``proteins``, ``nci1``, ``imdb-binary``, ``enzymes`` (6 classes), ``dd`` and ``hiv``.

* TU datasets are read with :class:`torch_geometric.datasets.TUDataset` from
  ``<data root>/TUDataset/<NAME>/raw``. The raw files are first COPIED into the writable cache
  (``cache_dir("graphs", "<NAME>-<content hash>")``) so PyG's ``processed/`` folder never lands
  next to the shared raw files, and a changed raw file gets a fresh cache. MUTAG ships with the
  package (``data/embedded/TUDataset/MUTAG/raw``) and is the fallback when the root lacks it.
* Every node and edge carries a *categorical* label, as Mirage needs: the TU node label (the
  argmax of PyG's one-hot ``x``; continuous node attributes of PROTEINS/ENZYMES are not used), the
  TU edge label (MUTAG) or 0, and for featureless IMDB-BINARY the node degree, capped at the largest
  degree of the training split (what Mirage's IMDB-B script uses; PyG's ``OneHotDegree`` would cap
  at the dataset maximum, i.e. peek at the test split). Node features are the one-hot rows of the
  vocabulary ``node_vocab`` (``(V, V)`` identity for TU data).
* Splits are fixed: stratified 80/10/10 with seed ``SPLIT_SEED`` (Mirage, DosCond and KiDD use
  one seeded 80/10/10 split, unstratified), or ``fold=i`` of a stratified ``num_folds``-fold CV in
  which fold ``i`` is the test set and fold ``i - 1`` the validation set (PyG's kernel benchmark).
* ``hiv`` parses ``<root>/ogb/moleculenet_hiv/HIV.csv`` with RDKit (atom label = (atomic number,
  formal charge, aromatic); bond label = bond type) and uses a deterministic Bemis-Murcko scaffold
  split 80/10/10 (largest scaffold groups to train, as OGB's scaffold split). Without RDKit it
  raises a ConfigError saying so.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from dsdistill.data.paths import EMBEDDED_ROOT, cache_dir, resolve_data_root
from dsdistill.errors import ConfigError, DataNotFoundError
from dsdistill.graphstore import GraphStore
from dsdistill.registry import DATASETS, GRAPH_DATASETS

SPLIT_SEED = 20240607
TU_NAMES = {"mutag": "MUTAG", "proteins": "PROTEINS", "nci1": "NCI1", "imdb-binary": "IMDB-BINARY",
            "enzymes": "ENZYMES", "dd": "DD"}
_ALIASES = {"imdbbinary": "imdb-binary", "imdbb": "imdb-binary", "hiv": "hiv"}


@dataclass
class GraphData:
    """Train/validation/test splits of one graph-classification dataset.

    Attributes:
        name: Canonical name (``"mutag"``...).
        train, val, test: The splits as :class:`GraphStore` (categorical node/edge labels).
        num_classes: K.
        node_vocab: ``(V, F)`` float32; node feature of label ``v`` is ``node_vocab[v]``.
        edge_vocab: ``(Ve, Fe)`` float32 (``(1, 1)`` ones when the data has no edge labels).
        class_names: Length-K names.
        split: Description of the split (recorded in reports).
        node_labels: ``"tu"``, ``"degree"`` or ``"atom"``.
        fingerprint: Content hash of the raw files.
        source: Where the files were read from.
        indices: ``{"train", "val", "test"}`` indices into the whole dataset.
    """

    name: str
    train: GraphStore
    val: GraphStore
    test: GraphStore
    num_classes: int
    node_vocab: Tensor
    edge_vocab: Tensor
    class_names: list[str]
    split: str = ""
    node_labels: str = "tu"
    fingerprint: str = ""
    source: str = ""
    indices: dict[str, Tensor] = field(default_factory=dict, repr=False)

    @property
    def feature_dim(self) -> int:
        return int(self.node_vocab.shape[1])

    def class_counts(self) -> Tensor:
        """``(K,)`` training graphs per class."""
        return torch.bincount(self.train.y, minlength=self.num_classes)


def canonical_graph_name(name: str) -> str | None:
    """``"IMDB-BINARY"`` -> ``"imdb-binary"``; None when ``name`` is not a graph dataset."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    for canonical in TU_NAMES:
        if key == canonical.replace("-", ""):
            return canonical
    return _ALIASES.get(key)


def is_graph_dataset(name: str) -> bool:
    """Whether ``name`` names a graph dataset (routes the CLI and API to the graph path)."""
    return isinstance(name, str) and canonical_graph_name(name) is not None


def stratified_split(y: Tensor, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                     seed: int = SPLIT_SEED) -> tuple[Tensor, Tensor, Tensor]:
    """Fixed per-class split of ``range(len(y))`` into sorted (train, val, test) index tensors.

    Each class gives ``round(f_val * n_c)`` graphs to validation and ``round(f_test * n_c)`` to test
    (at least one each when the class has 3+ graphs).
    """
    gen = torch.Generator().manual_seed(seed)
    parts: tuple[list[Tensor], list[Tensor], list[Tensor]] = ([], [], [])
    for c in range(int(y.max()) + 1 if len(y) else 0):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val, n_test = (round(f * len(idx)) for f in fractions[1:])
        if len(idx) >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test:n_test + n_val])
        parts[0].append(idx[n_test + n_val:])
    return tuple(torch.cat(p).sort().values if p else torch.zeros(0, dtype=torch.int64) for p in parts)


def stratified_folds(y: Tensor, num_folds: int = 10, seed: int = SPLIT_SEED) -> Tensor:
    """``(G,)`` fold id of every graph: per class, a seeded shuffle dealt round-robin into folds."""
    gen = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(y), dtype=torch.int64)
    offset = 0
    for c in range(int(y.max()) + 1 if len(y) else 0):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        fold[idx] = (torch.arange(len(idx)) + offset) % num_folds
        offset += len(idx)  # continue dealing where the previous class stopped: balanced fold sizes
    return fold


def split_indices(y: Tensor, fold: int | None, num_folds: int, seed: int) -> tuple[tuple[Tensor, ...], str]:
    """(train, val, test) indices and a description: the fixed 80/10/10 split or CV fold ``fold``."""
    if fold is None:
        return stratified_split(y, seed=seed), f"stratified 80/10/10, seed {seed}"
    if not 0 <= fold < num_folds or num_folds < 3:
        raise ConfigError(f"fold must be in [0, {num_folds}) with at least 3 folds, got fold {fold} of {num_folds}")
    fold_of = stratified_folds(y, num_folds, seed)
    test, val = fold_of == fold, fold_of == (fold - 1) % num_folds
    parts = (torch.nonzero(~test & ~val).flatten(), torch.nonzero(val).flatten(), torch.nonzero(test).flatten())
    return parts, f"stratified {num_folds}-fold CV, seed {seed}: test fold {fold}, validation fold {(fold - 1) % num_folds}"


def degree_labels(store: GraphStore, cap: int) -> Tensor:
    """``(N,)`` in-degree of every node, clipped to ``cap``."""
    deg = torch.bincount(store.edge_index[1], minlength=store.num_nodes)
    return deg.clamp(max=cap)


def graph_data_from_store(name: str, store: GraphStore, num_classes: int, node_vocab: Tensor | None,
                          edge_vocab: Tensor | None = None, *, fold: int | None = None, num_folds: int = 10,
                          seed: int = SPLIT_SEED, degree: bool = False, class_names: list[str] | None = None,
                          fingerprint: str = "", source: str = "", node_labels: str = "tu") -> GraphData:
    """Split a whole dataset held as one store into :class:`GraphData`.

    Args:
        store: All graphs; ``store.node_label`` is ignored when ``degree`` is True.
        node_vocab: ``(V, F)`` float32, or None with ``degree=True`` (one-hot degrees are built).
        degree: Use capped node degrees as node labels (cap = max degree of the training split).
    """
    (train, val, test), split = split_indices(store.y, fold, num_folds, seed)
    if degree:
        deg = torch.bincount(store.edge_index[1], minlength=store.num_nodes)
        in_train = torch.zeros(len(store), dtype=torch.bool)
        in_train[train] = True
        cap = int(deg[in_train[store.graph_of_node()]].max()) if len(train) else 0
        store = GraphStore(deg.clamp(max=cap), store.edge_index, store.edge_label, store.node_ptr,
                           store.edge_ptr, store.y)
        node_vocab, node_labels = torch.eye(cap + 1), "degree"
    if edge_vocab is None:
        edge_vocab = torch.ones(1, 1)
    return GraphData(name=name, train=store.subset(train), val=store.subset(val), test=store.subset(test),
                     num_classes=num_classes, node_vocab=node_vocab.float(), edge_vocab=edge_vocab.float(),
                     class_names=class_names or [str(c) for c in range(num_classes)], split=split,
                     node_labels=node_labels, fingerprint=fingerprint, source=source,
                     indices={"train": train, "val": val, "test": test})


def _file_digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def tu_raw_dir(tu_name: str, data_root: str | os.PathLike | None) -> Path:
    """``<root>/TUDataset/<NAME>/raw``, else the shipped copy, else DataNotFoundError."""
    root = resolve_data_root(data_root)
    if data_root is not None and not root.is_dir():
        raise DataNotFoundError(f"data root {root} does not exist; pass an existing --data-root directory")
    for raw in (root / "TUDataset" / tu_name / "raw", EMBEDDED_ROOT / "TUDataset" / tu_name / "raw"):
        if (raw / f"{tu_name}_A.txt").is_file() and (raw / f"{tu_name}_graph_indicator.txt").is_file():
            return raw
    raise DataNotFoundError(f"{tu_name} not found: put its TU raw files ({tu_name}_A.txt, "
                            f"{tu_name}_graph_indicator.txt, ...) in {root / 'TUDataset' / tu_name / 'raw'} "
                            f"or pass --data-root")


def _pyg_tu(tu_name: str, raw: Path):
    """Copy ``raw`` into the cache and open it with PyG's TUDataset there; return (dataset, digest)."""
    try:
        from torch_geometric.datasets import TUDataset
    except ImportError:
        raise ConfigError("graph datasets need torch_geometric; install it with pip install "
                          "'dsdistill[graph]'") from None
    files = sorted(raw.glob(f"{tu_name}_*.txt"))
    digest = _file_digest(files)
    root = cache_dir("graphs", f"{tu_name}-{digest[:12]}")
    dest = root / tu_name / "raw"
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        target = dest / f.name
        if not target.exists() or target.stat().st_size != f.stat().st_size:
            tmp = target.with_name(f".{f.name}.tmp-{os.getpid()}")
            shutil.copyfile(f, tmp)
            os.replace(tmp, target)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        dataset = TUDataset(str(root), tu_name)  # silences PyG's "Processing..." on first use
    return dataset, digest


def load_tu(name: str, data_root: str | os.PathLike | None = None, *, fold: int | None = None,
            num_folds: int = 10, seed: int = SPLIT_SEED) -> GraphData:
    """Load TU dataset ``name`` (a key of ``TU_NAMES``) as :class:`GraphData` (see module docstring)."""
    tu_name = TU_NAMES[name]
    raw = tu_raw_dir(tu_name, data_root)
    ds, digest = _pyg_tu(tu_name, raw)
    graphs = []
    for d in ds:
        x, ea = d.x, d.edge_attr
        node_label = x.argmax(1) if x is not None and x.shape[1] else torch.zeros(d.num_nodes, dtype=torch.int64)
        edge_label = ea.argmax(1) if ea is not None and ea.dim() == 2 and ea.shape[1] else None
        graphs.append((node_label, d.edge_index, edge_label, int(d.y)))
    store = GraphStore.from_graphs(graphs)
    featureless = ds.num_node_features == 0
    node_vocab = None if featureless else torch.eye(ds.num_node_features)
    edge_vocab = torch.eye(ds.num_edge_features) if ds.num_edge_features else None
    return graph_data_from_store(name, store, int(store.y.max()) + 1, node_vocab, edge_vocab, fold=fold,
                                 num_folds=num_folds, seed=seed, degree=featureless, fingerprint=digest[:16],
                                 source=str(raw))


def _load_hiv(data_root, **kw) -> GraphData:
    from dsdistill.data.hiv import load_hiv

    return load_hiv(data_root, **kw)


def _refuse_image_path(name: str):
    def loader(*args, **kwargs):
        raise ConfigError(f"{name} is a graph dataset; use a graph method (dsdistill list shows them) "
                          f"or dsdistill.data.graphs.load_graph_dataset")

    loader.modality = "graph"
    return loader


for _name in TU_NAMES:
    GRAPH_DATASETS.register(_name)(lambda root, _n=_name, **kw: load_tu(_n, root, **kw))
GRAPH_DATASETS.register("hiv")(lambda root, **kw: _load_hiv(root, **kw))
for _name in (*TU_NAMES, "hiv"):
    if _name not in DATASETS:
        DATASETS.register(_name)(_refuse_image_path(_name))


def load_graph_dataset(name: str, data_root: str | os.PathLike | None = None, *, fold: int | None = None,
                       num_folds: int = 10, seed: int = SPLIT_SEED) -> GraphData:
    """Load graph dataset ``name`` (see module docstring).

    Args:
        name: ``mutag``, ``proteins``, ``nci1``, ``imdb-binary``, ``enzymes``, ``dd`` or ``hiv``.
        data_root: Folder holding ``TUDataset/`` and ``ogb/`` (default: the shared data root).
        fold: None for the fixed 80/10/10 split, else the CV fold used as test set.
        num_folds: Folds of the CV.
        seed: Split seed (keep the default to compare with recorded results).

    Raises:
        UnknownNameError, DataNotFoundError, ConfigError: one clear sentence each.
    """
    key = canonical_graph_name(name)
    loader = GRAPH_DATASETS.get(key or name)
    return loader(data_root, fold=fold, num_folds=num_folds, seed=seed)
