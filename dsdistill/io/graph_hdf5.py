"""Graph sets in the dsdistill HDF5 file (schema v1, ``modality="graph"``): write, read, validate, describe.

Layout (``T`` trees with ``Nn`` nodes and ``E`` edges in all, ``S`` itemsets referring to ``M``
trees in all, ``K`` classes, node vocabulary ``V x F``, edge vocabulary ``Ve x Fe``)::

    /                        attrs format="dsdistill", format_version=1,
                             encoding-type="dsdistill.graph_set", encoding-version="1.1.0",
                             modality="graph", method, dataset, num_classes, ipc, created_by,
                             protocol, pooling ("roots"|"all"), depth, vocab_kind ("dataset"|"set"),
                             content_sha256 (checksum of everything else, see dsdistill.io.checksum;
                             verified on load and by ``info``, absent in files written before it existed)
    /trees/node_labels       int64 (Nn,) in [0, V)
    /trees/edge_index        int64 (2, E) in [0, Nn), grouped by tree; both ends in one tree;
                             with pooling "roots" every tree is a rooted tree with edges child -> parent
    /trees/edge_labels       int64 (E,) in [0, Ve)
    /trees/ptr               int64 (T + 1,) node offsets: 0, strictly increasing, Nn
    /trees/node_degree       int64 (Nn,) >= 0, each node's degree in the training graph it was
                             unrolled from; required with pooling "roots" (GCN normalisation),
                             where it must equal the in-degree in the tree for every node with
                             children (leaves: the representative occurrence's degree);
                             optional with pooling "all" (absent = in-degree)       [1.1.0]
    /itemsets/tree_ids       int64 (M,) in [0, T)
    /itemsets/ptr            int64 (S + 1,) offsets into tree_ids: 0, strictly increasing, M
    /itemsets/support        int64 (S,) >= 1
    /itemsets/label          int64 (S,) in [0, K)
    /vocab/node_features     float32 (V, F), finite
    /vocab/edge_features     float32 (Ve, Fe), finite
    /classes                 fixed-length UTF-8 (K,)                                  [optional]
    /provenance/config_json  fixed-length UTF-8 JSON                                  [optional]
    /storage                 int64 attrs trees, itemsets, vocab, total, total_with_vocab

Validation reuses the image reader's checker (:mod:`dsdistill.io.validate`): every shape, type and
declared size is checked from metadata before any array is read, then the index arrays are checked
for range and consistency (in int64, so unsigned or narrow integer types cannot wrap), and last the
content checksum is verified over the arrays already read. Chunked datasets must hold every chunk
they declare. Any problem is a :class:`~dsdistill.errors.SyntheticFileError` with one sentence
naming the file. No pickle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

import dsdistill
from dsdistill.errors import SyntheticFileError
from dsdistill.graphset import POOLINGS, VOCAB_KINDS, GraphSyntheticSet
from dsdistill.io.atomic import atomic_path, check_overwrite
from dsdistill.io.checksum import DIGEST_ATTR, content_digest
from dsdistill.io.checksum import verify as verify_checksum
from dsdistill.io.validate import FORMAT, FORMAT_VERSION, Checker, check_header, open_h5

ENCODING_TYPE = "dsdistill.graph_set"
ENCODING_VERSION = "1.1.0"  # 1.1.0 added /trees/node_degree
MAX_DEPTH = 64
_ZIP = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


def _text(value: str | list[str]) -> np.ndarray:
    raw = [str(v).encode("utf-8") for v in value] if isinstance(value, list) else str(value).encode()
    longest = max((len(r) for r in raw), default=1) if isinstance(raw, list) else len(raw)
    return np.array(raw, dtype=h5py.string_dtype("utf-8", max(1, longest)))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"provenance value of type {type(obj).__name__} is not JSON-serialisable")


def _put(group: h5py.Group, name: str, t: torch.Tensor, dtype: Any) -> None:
    arr = np.ascontiguousarray(t.detach().cpu().numpy().astype(dtype))
    group.create_dataset(name, data=arr, **(dict(_ZIP, chunks=True) if arr.size and arr.nbytes >= 4096 else {}))


def check_graph_savable(syn: GraphSyntheticSet) -> None:
    """Refuse (ValueError) a set the reader would reject."""
    if syn.pooling not in POOLINGS or syn.vocab_kind not in VOCAB_KINDS:
        raise ValueError(f"pooling must be one of {POOLINGS} and vocab_kind one of {VOCAB_KINDS}")
    if not 0 <= int(syn.depth) <= MAX_DEPTH or int(syn.ipc) < 1 or int(syn.num_classes) < 1:
        raise ValueError("depth must be in [0, 64], ipc and num_classes >= 1")
    if syn.num_itemsets < 1 or syn.num_trees < 1:
        raise ValueError("a graph set needs at least one tree and one itemset")
    if syn.class_names and len(syn.class_names) != syn.num_classes:
        raise ValueError(f"class_names must have {syn.num_classes} entries")


def save_graph_synthetic(syn: GraphSyntheticSet, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
    """Write ``syn`` atomically (temporary file, fsync, rename) as a schema-v1 graph file.

    Raises:
        ConfigError: ``overwrite=False`` and ``path`` exists.
        ValueError: The set is inconsistent (the reader would refuse it).
    """
    check_overwrite(path, overwrite)
    check_graph_savable(syn)
    sizes = syn.storage_bytes()
    with atomic_path(path, overwrite=overwrite) as tmp:
        with h5py.File(tmp, "w") as f:
            root = {"format": FORMAT, "format_version": FORMAT_VERSION, "encoding-type": ENCODING_TYPE,
                    "encoding-version": ENCODING_VERSION, "modality": "graph", "method": syn.method,
                    "dataset": syn.dataset, "num_classes": int(syn.num_classes), "ipc": int(syn.ipc),
                    "created_by": f"dsdistill {dsdistill.__version__}", "protocol": syn.protocol or "",
                    "pooling": syn.pooling, "depth": int(syn.depth), "vocab_kind": syn.vocab_kind}
            for name, value in root.items():
                f.attrs[name] = np.int64(value) if isinstance(value, int) else _text(value)
            trees, items, vocab = f.create_group("trees"), f.create_group("itemsets"), f.create_group("vocab")
            for group, name, t in ((trees, "node_labels", syn.node_labels), (trees, "edge_index", syn.edge_index),
                                   (trees, "edge_labels", syn.edge_labels), (trees, "ptr", syn.tree_ptr),
                                   (items, "tree_ids", syn.itemset_trees), (items, "ptr", syn.itemset_ptr),
                                   (items, "support", syn.support), (items, "label", syn.labels)):
                _put(group, name, t, np.int64)
            if syn.node_degree is not None:
                _put(trees, "node_degree", syn.node_degree, np.int64)
            _put(vocab, "node_features", syn.node_vocab, np.float32)
            _put(vocab, "edge_features", syn.edge_vocab, np.float32)
            if syn.class_names:
                f.create_dataset("classes", data=_text(list(syn.class_names)))
            f.create_group("provenance").create_dataset(
                "config_json", data=_text(json.dumps(syn.provenance, default=_json_default)))
            st = f.create_group("storage")
            for name, value in sizes.items():
                st.attrs[name] = np.int64(value)
            # keep last: the checksum covers every member written above (dsdistill.io.checksum)
            f.attrs[DIGEST_ATTR] = _text(content_digest(f, Checker(Path(tmp), 1 << 62)))


def inspect_graph(f: h5py.File, chk: Checker, header: dict[str, Any]) -> dict[str, Any]:
    """Check a graph file's attributes and structure from metadata only; return its layout."""
    root = f["/"]
    lay: dict[str, Any] = {"pooling": chk.attr_str(root, "pooling"), "vocab_kind": chk.attr_str(root, "vocab_kind"),
                           "depth": chk.attr_int(root, "depth", 0, MAX_DEPTH),
                           "protocol": chk.attr_str(root, "protocol", "") or None}
    if lay["pooling"] not in POOLINGS:
        raise chk.fail(f"pooling {lay['pooling']!r} is not one of {POOLINGS}")
    if lay["vocab_kind"] not in VOCAB_KINDS:
        raise chk.fail(f"vocab_kind {lay['vocab_kind']!r} is not one of {VOCAB_KINDS}")
    trees = chk.member(f, "trees", h5py.Group)
    items = chk.member(f, "itemsets", h5py.Group)
    vocab = chk.member(f, "vocab", h5py.Group)
    lay["node_labels"] = chk.dataset(trees, "node_labels", kinds="iu", ndim=1)
    n = lay["node_labels"].shape[0]
    lay["edge_index"] = chk.dataset(trees, "edge_index", kinds="iu", ndim=2)
    if lay["edge_index"].shape[0] != 2:
        raise chk.fail(f"/trees/edge_index has shape {lay['edge_index'].shape}, expected (2, E)")
    e = lay["edge_index"].shape[1]
    lay["edge_labels"] = chk.dataset(trees, "edge_labels", kinds="iu", shape=(e,))
    lay["tree_ptr"] = chk.dataset(trees, "ptr", kinds="iu", ndim=1)
    lay["node_degree"] = chk.dataset(trees, "node_degree", kinds="iu", shape=(n,), required=False)
    if lay["node_degree"] is None and lay["pooling"] == "roots":
        raise chk.fail("it has computation trees but no /trees/node_degree (the original node degrees GCN "
                       "needs; files written before dsdistill's graph schema 1.1.0 lack it): condense it again")
    lay["tree_ids"] = chk.dataset(items, "tree_ids", kinds="iu", ndim=1)
    lay["item_ptr"] = chk.dataset(items, "ptr", kinds="iu", ndim=1)
    s = lay["item_ptr"].shape[0] - 1
    if s < 1 or lay["tree_ptr"].shape[0] < 2 or n < 1:
        raise chk.fail("it holds no trees or no itemsets (a graph set needs at least one of each)")
    lay["support"] = chk.dataset(items, "support", kinds="iu", shape=(s,))
    lay["label"] = chk.dataset(items, "label", kinds="iu", shape=(s,))
    lay["node_vocab"] = chk.dataset(vocab, "node_features", kinds="f", ndim=2)
    lay["edge_vocab"] = chk.dataset(vocab, "edge_features", kinds="f", ndim=2)
    lay["classes"] = chk.dataset(f, "classes", kinds="S", shape=(header["num_classes"],), required=False)
    prov = chk.member(f, "provenance", h5py.Group, required=False)
    lay["config_json"] = None if prov is None else chk.dataset(prov, "config_json", kinds="S", shape=(),
                                                               required=False)
    for ds in lay.values():
        if isinstance(ds, h5py.Dataset):
            _check_allocated(chk, ds)
    return lay


def _check_allocated(chk: Checker, ds: h5py.Dataset) -> None:
    """Refuse a chunked dataset with chunks never written (the writer writes every chunk).

    Unwritten chunks read as fill values, and a forged header declaring millions of tiny chunks
    takes libhdf5 minutes to read (found by fuzzing: 45 s for 2.4M one-element gzip chunks) while
    passing the declared-bytes budget. The declared chunk count comes from metadata; the written
    count from the chunk index, consulted only when it cannot exceed the file's size.
    """
    if ds.chunks is None or not ds.size:
        return
    declared = int(np.prod([-(-n // c) for n, c in zip(ds.shape, ds.chunks)], dtype=object))
    if declared > chk.size // 8 or ds.id.get_num_chunks() != declared:
        raise chk.fail(f"{ds.name} declares {declared} chunks of {ds.chunks} but the file does not hold them all "
                       "(forged or corrupt header)")


def _offsets_ok(ptr: np.ndarray, end: int) -> bool:
    return bool(ptr[0] == 0 and ptr[-1] == end and (np.diff(ptr) > 0).all())


_INT_KEYS = ("node_labels", "edge_index", "edge_labels", "tree_ptr", "tree_ids", "item_ptr", "support", "label",
             "node_degree")


def read_arrays(chk: Checker, lay: dict[str, Any], num_classes: int,
                raw: dict[str, np.ndarray] | None = None) -> dict[str, torch.Tensor]:
    """Read the arrays and check every index for range and consistency.

    Integers are checked after conversion to int64 (a uint64 beyond int64 becomes negative and
    fails the range checks instead of wrapping a difference), floats after conversion to float32
    (a float64 beyond float32's range becomes inf and fails the finiteness check).

    Args:
        raw: Filled with the arrays as stored, by dataset name (for the checksum, which then need
            not read them again).
    """
    a: dict[str, np.ndarray] = {}
    for k in _INT_KEYS + ("node_vocab", "edge_vocab"):
        if lay[k] is None:
            continue
        arr = np.asarray(lay[k][()])
        if raw is not None:
            raw[lay[k].name] = arr
        with np.errstate(over="ignore", invalid="ignore"):
            a[k] = np.ascontiguousarray(arr, dtype=np.int64 if k in _INT_KEYS else np.float32)
    n, e, t = a["node_labels"].shape[0], a["edge_index"].shape[1], a["tree_ptr"].shape[0] - 1
    v, ve = a["node_vocab"].shape[0], a["edge_vocab"].shape[0]
    degree = a.get("node_degree")
    checks = [
        (_offsets_ok(a["tree_ptr"], n), f"/trees/ptr must run from 0 to {n} strictly increasing (one offset per tree)"),
        (_offsets_ok(a["item_ptr"], a["tree_ids"].shape[0]),
         f"/itemsets/ptr must run from 0 to {a['tree_ids'].shape[0]} strictly increasing"),
        (((a["node_labels"] >= 0) & (a["node_labels"] < v)).all(), f"/trees/node_labels must lie in [0, {v})"),
        (((a["edge_labels"] >= 0) & (a["edge_labels"] < ve)).all(), f"/trees/edge_labels must lie in [0, {ve})"),
        (((a["edge_index"] >= 0) & (a["edge_index"] < n)).all(), f"/trees/edge_index must lie in [0, {n})"),
        (((a["tree_ids"] >= 0) & (a["tree_ids"] < t)).all(), f"/itemsets/tree_ids must lie in [0, {t})"),
        ((a["support"] >= 1).all(), "/itemsets/support must be >= 1"),
        (((a["label"] >= 0) & (a["label"] < num_classes)).all(), f"/itemsets/label must lie in [0, {num_classes})"),
        (np.isfinite(a["node_vocab"]).all() and np.isfinite(a["edge_vocab"]).all(), "/vocab holds non-finite values"),
    ]
    for ok, message in checks:
        if not ok:
            raise chk.fail(message)
    if e:
        tree_of = np.searchsorted(a["tree_ptr"], a["edge_index"], side="right") - 1
        if (tree_of[0] != tree_of[1]).any():
            raise chk.fail("an edge of /trees/edge_index joins two different trees")
        if (np.diff(tree_of[0]) < 0).any():
            raise chk.fail("/trees/edge_index is not grouped by tree")
    if degree is not None:
        in_deg = np.bincount(a["edge_index"][1], minlength=n)
        if (degree < 0).any() or (degree[in_deg > 0] != in_deg[in_deg > 0]).any():
            raise chk.fail("/trees/node_degree must be >= 0 and equal each node's number of in-edges wherever "
                           "it has any")
    if lay["pooling"] == "roots":
        out_deg = np.bincount(a["edge_index"][0], minlength=n)
        is_root = np.zeros(n, dtype=bool)
        is_root[a["tree_ptr"][:-1]] = True
        if (out_deg[is_root] != 0).any() or (out_deg[~is_root] != 1).any():
            raise chk.fail("a tree is not rooted at its first node with one child -> parent edge per other node")
        parent = np.arange(n)
        parent[a["edge_index"][0]] = a["edge_index"][1]
        for _ in range(int(np.ceil(np.log2(max(2, int(np.diff(a["tree_ptr"]).max()))))) + 1):
            parent = parent[parent]  # pointer jumping: every node reaches its root if the tree is acyclic
        if (parent != np.repeat(a["tree_ptr"][:-1], np.diff(a["tree_ptr"]))).any():
            raise chk.fail("a tree of /trees/edge_index has a cycle (child -> parent edges must lead to the root)")
    return {k: torch.from_numpy(arr) for k, arr in a.items()}


def load_graph_synthetic(path: str | os.PathLike[str]) -> GraphSyntheticSet:
    """Read and validate a graph set.

    Raises:
        SyntheticFileError: Missing, truncated, foreign, newer-version, image or inconsistent file.
    """
    with open_h5(path) as (f, chk):
        header = check_header(f, chk)
        if header["modality"] != "graph":
            raise SyntheticFileError(f"{chk.path} is an image set; load it with dsdistill.io.load_synthetic")
        lay = inspect_graph(f, chk, header)
        raw: dict[str, np.ndarray] = {}
        a = read_arrays(chk, lay, header["num_classes"], raw)
        classes = [] if lay["classes"] is None else chk.text(lay["classes"])
        provenance = {} if lay["config_json"] is None else chk.json_object(lay["config_json"])
        verify_checksum(f, chk, raw)  # after all other checks
        return GraphSyntheticSet(
            node_labels=a["node_labels"], edge_index=a["edge_index"], edge_labels=a["edge_labels"],
            tree_ptr=a["tree_ptr"], itemset_trees=a["tree_ids"], itemset_ptr=a["item_ptr"], support=a["support"],
            labels=a["label"], node_vocab=a["node_vocab"], edge_vocab=a["edge_vocab"],
            num_classes=header["num_classes"], method=header["method"], dataset=header["dataset"],
            ipc=header["ipc"], pooling=lay["pooling"], depth=lay["depth"], vocab_kind=lay["vocab_kind"],
            class_names=classes, provenance=provenance, protocol=lay["protocol"] or "graph",
            node_degree=a.get("node_degree"))


def describe_graph_lines(f: h5py.File, chk: Checker, header: dict[str, Any]) -> list[str]:
    """The graph-specific lines of ``dsdistill info`` (validates the whole file first, checksum included:
    the arrays are read anyway, so unlike image files' metadata-only description it costs no extra read)."""
    lay = inspect_graph(f, chk, header)
    raw: dict[str, np.ndarray] = {}
    a = read_arrays(chk, lay, header["num_classes"], raw)
    verify_checksum(f, chk, raw)
    k = header["num_classes"]
    per_class = np.bincount(a["label"].numpy(), minlength=k)
    names = chk.text(lay["classes"]) if lay["classes"] is not None else [str(c) for c in range(k)]
    syn_bytes = GraphSyntheticSet(a["node_labels"], a["edge_index"], a["edge_labels"], a["tree_ptr"], a["tree_ids"],
                                  a["item_ptr"], a["support"], a["label"], a["node_vocab"], a["edge_vocab"], k,
                                  header["method"], header["dataset"], vocab_kind=lay["vocab_kind"],
                                  node_degree=a.get("node_degree")).storage_bytes()
    sizes = np.diff(a["item_ptr"].numpy())
    what = (f"computation trees of depth {lay['depth']}, pooled at their roots" if lay["pooling"] == "roots"
            else "whole graphs, pooled over all nodes")
    lines = [f"  samples      {len(sizes)} training graphs ({', '.join(f'{n}: {c}' for n, c in zip(names, per_class))}),"
             f" {int(sizes.min())}-{int(sizes.max())} trees each, support {int(a['support'].min())}-"
             f"{int(a['support'].max())}",
             f"  trees        {a['tree_ptr'].shape[0] - 1} stored once ({what}); {a['node_labels'].shape[0]} nodes, "
             f"{a['edge_index'].shape[1]} edges"
             + ("; original node degrees stored (GCN normalisation)" if "node_degree" in a else ""),
             f"  features     node vocabulary {tuple(a['node_vocab'].shape)} ({lay['vocab_kind']}), edge vocabulary "
             f"{tuple(a['edge_vocab'].shape)}",
             f"  protocol     {lay['protocol'] or 'none recorded'}",
             f"  storage      trees {syn_bytes['trees']:,} B; itemsets {syn_bytes['itemsets']:,} B; vocab "
             f"{syn_bytes['vocab']:,} B; total {syn_bytes['total']:,} B (vocab counted only when the set's own); "
             f"file {chk.size:,} B on disk"]
    prov = {} if lay["config_json"] is None else chk.json_object(lay["config_json"])
    keys = ("elapsed_seconds", "mining_seconds", "chosen_min_support", "chosen_overlap", "thresholds", "split",
            "dataset_fingerprint")
    shown = ", ".join(f"{key}={json.dumps(prov[key])}" for key in keys if key in prov)
    lines.append(f"  provenance   created by {header['created_by'] or 'unknown'}" + (f"; {shown}" if shown else ""))
    return lines


def describe_graph(path: str | os.PathLike[str]) -> str:
    """Human-readable summary of a graph file (what ``dsdistill info`` prints)."""
    from dsdistill.io.hdf5 import describe

    return describe(path)
