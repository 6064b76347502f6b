"""Property-based fuzzing of the graph-set reader: every mutated file is a clean error or an equal load.

Two valid files are mutated: a small Mirage forest (computation trees of depth 2 with stored node
degrees, uncompressed) and a graph subset (whole graphs pooled over all nodes, big enough that
its index arrays go through the gzip filter).

* ``bytes``: truncation, bit flips and byte overwrites anywhere in the file;
* ``structure`` (through h5py): datasets recast to wrong dtypes (narrow and unsigned integers,
  floats, strings), reshaped, replaced by forged huge declared shapes, single values changed,
  index entries poked to out-of-range values (tree ids, node ids, ptr offsets, labels, degrees:
  -1, the bound itself, 2**31, 2**62, the int64 extremes), members and whole groups deleted,
  attributes deleted or replaced by values of wrong types, the checksum deleted.

The oracle: ``load_graph_synthetic`` either raises :class:`SyntheticFileError` with one line
naming the file, or returns a set equal to the original (every tensor bitwise, with its dtype;
every other field). Any other exception, a crash, a hang (``CASE_SECONDS`` per case) or a
different set fails. ``describe`` (``dsdistill info``) must end in SyntheticFileError or a text.

A file without its checksum and with other changes is a forged legacy file, which no reader can
tell from a genuine one; those cases (``legacy+...``) exercise the range and consistency checks
behind the checksum, with a weaker oracle: an error, or a set that is internally consistent
(:meth:`GraphSyntheticSet.to_store` works and it saves and loads back equal).

``DSD_FUZZ_EXAMPLES`` (default 200 per test), ``DSD_FUZZ_RANDOM=1`` and ``DSD_FUZZ_REPORT=FILE``
work as in ``tests/io/test_fuzz_hdf5.py``.
"""

from __future__ import annotations

import collections
import json
import os
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dsdistill.cli import main
from dsdistill.errors import SyntheticFileError
from dsdistill.graphset import GraphSyntheticSet
from dsdistill.io import describe, load_graph_synthetic, save_graph_synthetic
from dsdistill.io.checksum import DIGEST_ATTR
from dsdistill.methods.mirage.forest import build_forest_set
from dsdistill.methods.mirage.trees import compute_tree_ids

EXAMPLES = int(os.environ.get("DSD_FUZZ_EXAMPLES", "200"))
CASE_SECONDS = 2.0
OUTCOMES: collections.Counter = collections.Counter()
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("DSD_FUZZ_RANDOM"),
                database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                  HealthCheck.filter_too_much])
TENSORS = ("node_labels", "edge_index", "edge_labels", "tree_ptr", "itemset_trees", "itemset_ptr", "support",
           "labels", "node_vocab", "edge_vocab", "node_degree")
FIELDS = ("num_classes", "method", "dataset", "ipc", "pooling", "depth", "vocab_kind", "class_names", "provenance",
          "protocol")


def mirage_set(tools) -> GraphSyntheticSet:
    """Depth-2 computation trees of a 6-node graph, three itemsets of three classes (as test_graph_io)."""
    edge_index = tools["undirected"]([(0, 1), (1, 2), (3, 4)])
    index = compute_tree_ids(torch.tensor([0, 1, 2, 1, 0, 2]), edge_index, None, 2)
    t = index.node_tree.tolist()
    itemsets = [((t[0], t[1]), 5, 0), ((t[5],), 3, 1), ((t[1], t[5]), 2, 2)]
    return build_forest_set(index, itemsets, node_vocab=torch.eye(3), edge_vocab=torch.ones(1, 1), num_classes=3,
                            method="mirage", dataset="toy", class_names=["a", "b", "c"],
                            provenance={"seed": 0, "search": [{"min_support": 0.5}]})


def subset_set(tools) -> GraphSyntheticSet:
    """40 whole graphs of a 3-class tiny dataset (edge_index and the node arrays are gzip-compressed)."""
    store = tools["make_tiny"](3, 20)
    idx = torch.arange(0, 60, 3).repeat(2) + torch.arange(40) % 2
    return GraphSyntheticSet.from_subset(store, idx, torch.eye(5), torch.ones(1, 1), 3, method="random",
                                         dataset="tiny3", provenance={"seed": 1})


class Originals(dict):
    def __repr__(self) -> str:  # keeps hypothesis' failure reports readable
        return f"<valid files {sorted(self)}>"


@pytest.fixture(scope="module")
def originals(tmp_path_factory, graph_tools) -> dict[str, tuple[bytes, GraphSyntheticSet]]:
    d = tmp_path_factory.mktemp("graph_fuzz_originals")
    out = Originals()
    for name, make in (("mirage", mirage_set), ("subset", subset_set)):
        save_graph_synthetic(make(graph_tools), d / f"{name}.h5")
        out[name] = ((d / f"{name}.h5").read_bytes(), load_graph_synthetic(d / f"{name}.h5"))
    with h5py.File(d / "subset.h5", "r") as f:  # the subset's arrays really go through the gzip filter
        assert f["trees/edge_index"].compression == "gzip" and f.attrs[DIGEST_ATTR]
    assert out["mirage"][1].node_degree is not None and out["mirage"][1].pooling == "roots"
    return out


def same(a: GraphSyntheticSet, b: GraphSyntheticSet) -> bool:
    """Every field equal, tensors bitwise (dtype and shape included)."""
    for name in TENSORS:
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None):
            return False
        if x is not None and not (x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)):
            return False
    return all(getattr(a, f) == getattr(b, f) for f in FIELDS)


def consistent(syn: GraphSyntheticSet, tmp: Path) -> bool:
    """A legacy (unchecksummed) load must at least be a usable set that round-trips."""
    store = syn.to_store()
    assert len(store) == syn.num_itemsets
    save_graph_synthetic(syn, tmp)
    return same(syn, load_graph_synthetic(tmp))


def check(path: Path, original: GraphSyntheticSet, kind: str) -> str:
    """Apply the oracle to one mutated file; return the outcome."""
    started = time.monotonic()
    try:
        loaded = load_graph_synthetic(path)
    except SyntheticFileError as err:
        text = str(err)
        assert text.startswith(str(path)) and "\n" not in text and len(text) < 600, text
        outcome = "error"
    else:
        if same(original, loaded):
            outcome = "equal"
        else:
            assert kind.startswith("legacy"), f"{kind}: a mutated file loaded as a different set (silent wrong result)"
            assert consistent(loaded, path.with_suffix(".resaved.h5")), f"{kind}: an inconsistent set loaded"
            outcome = "valid-different"
    try:
        assert isinstance(describe(path), str)
    except SyntheticFileError:
        pass
    elapsed = time.monotonic() - started
    assert elapsed < CASE_SECONDS, f"{kind}: took {elapsed:.2f} s"
    OUTCOMES[(kind, outcome)] += 1
    OUTCOMES[("all", outcome)] += 1
    OUTCOMES[("all", "max_ms")] = max(OUTCOMES[("all", "max_ms")], int(1000 * elapsed))
    return outcome


# ---- byte-level mutations ------------------------------------------------------------------------
byte_edits = st.lists(st.tuples(st.sampled_from(["flip", "set"]), st.floats(0, 1, exclude_max=True),
                                st.integers(0, 255)), min_size=0, max_size=6)


@FUZZ
@given(base=st.sampled_from(["mirage", "subset"]), edits=byte_edits,
       cut=st.one_of(st.none(), st.floats(0, 1, exclude_max=True)))
def test_byte_mutations(originals, tmp_path_factory, fuzz_bytes, base, edits, cut) -> None:
    raw, original = originals[base]
    data = fuzz_bytes(raw, edits, cut)
    path = tmp_path_factory.getbasetemp() / f"gbytes-{base}.h5"
    path.write_bytes(data)
    check(path, original, "truncation+bytes" if cut is not None else "bytes")


# ---- structural mutations ------------------------------------------------------------------------
INDEX = ["trees/node_labels", "trees/edge_index", "trees/edge_labels", "trees/ptr", "trees/node_degree",
         "itemsets/tree_ids", "itemsets/ptr", "itemsets/support", "itemsets/label"]
DATASETS = INDEX + ["vocab/node_features", "vocab/edge_features", "classes", "provenance/config_json"]
GROUPS = ["trees", "itemsets", "vocab", "provenance", "storage"]
ATTRS = [("/", a) for a in ("format", "format_version", "encoding-type", "encoding-version", "modality", "method",
                            "dataset", "num_classes", "ipc", "created_by", "protocol", "pooling", "depth",
                            "vocab_kind", DIGEST_ATTR)] + [
    ("storage", a) for a in ("trees", "itemsets", "vocab", "total", "total_with_vocab")]
DTYPES = ["i1", "u1", "i2", "u4", "i4", "u8", "f2", "f4", "f8", "S8", "bool"]
BAD_VALUES = {"int": np.int64(3), "negative": np.int64(-1), "huge": np.int64(2**62), "float": 0.5, "nan": np.nan,
              "str": np.bytes_(b"x"), "vlen": "vlen-string", "array": np.arange(3), "bool": np.bool_(True),
              "empty": np.bytes_(b""), "roots": np.bytes_(b"roots"), "all": np.bytes_(b"all"),
              "set": np.bytes_(b"set"), "depth65": np.int64(65)}
# out-of-range index values: relative to the dataset's own bound ("n" = its largest value + 1) or absolute
POKES = ["-1", "n", "n+5", "0", "2**31", "2**62", "int64max", "int64min"]


def _replace(f: h5py.File, name: str, **kwargs) -> None:
    del f[name]
    f.create_dataset(name, **kwargs)


def _poke_value(arr: np.ndarray, which: str) -> int:
    bound = int(arr.max()) + 1 if arr.size else 1
    return {"-1": -1, "n": bound, "n+5": bound + 5, "0": 0, "2**31": 2**31, "2**62": 2**62,
            "int64max": 2**63 - 1, "int64min": -2**63}[which]


def apply(f: h5py.File, op: tuple) -> str:
    """Apply one structural mutation; return its kind (skipped when the target is absent)."""
    kind, target, arg = op
    if kind in ("retype", "reshape", "huge", "value", "poke", "delete") and target not in f:
        return "skipped"
    if kind in ("retype", "reshape", "value", "poke", "huge") and f[target].size > 10**5:  # already forged huge
        return "skipped"
    if kind == "retype":
        ds = f[target]
        if ds.dtype.kind == "S" or arg == "S8":
            _replace(f, target, data=np.zeros(ds.shape, arg))
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                _replace(f, target, data=np.asarray(ds[()]).astype(arg))
    elif kind == "reshape":
        arr = np.asarray(f[target][()])
        if arr.ndim == 0:
            new = arr.reshape(1)
        elif arg % 3 == 1:
            new = arr.reshape(-1) if arr.ndim > 1 else arr.reshape(1, -1)
        elif arg % 3 == 2 and arr.shape[0] > 1:
            new = arr[:-1]
        else:
            new = np.concatenate([arr, arr[:1]])
        _replace(f, target, data=new)
    elif kind == "huge":
        shape = f[target].shape or (1,)
        big = (10 ** (3 + arg % 5) * max(1, shape[0]), *shape[1:])
        _replace(f, target, shape=big, dtype=f[target].dtype if f[target].dtype.kind != "S" else "f4",
                 chunks=(1, *shape[1:]), compression="gzip" if arg % 2 else None)
    elif kind in ("value", "poke"):
        ds = f[target]
        if ds.dtype.kind == "S" or ds.size == 0:
            return "skipped"
        flat = np.asarray(ds[()]).reshape(-1).copy()
        i, kind_ = arg[0] % flat.size, ds.dtype.kind
        if kind == "poke":
            if kind_ not in "iu":
                return "skipped"
            info = np.iinfo(ds.dtype)
            flat[i] = min(max(_poke_value(flat, arg[1]), int(info.min)), int(info.max))
        else:
            with np.errstate(over="ignore"):
                flat[i] = (not flat[i]) if kind_ == "b" else flat[i] + 1 if kind_ in "iu" else -flat[i] + 1
        ds[...] = flat.reshape(ds.shape)
    elif kind == "delete":
        del f[target]
    elif kind in ("attr", "delattr"):
        obj_name, attr = target
        if obj_name not in f or attr not in f[obj_name].attrs:
            return "skipped"
        if kind == "delattr":
            del f[obj_name].attrs[attr]
        else:
            f[obj_name].attrs[attr] = BAD_VALUES[arg]
    return kind


structural_op = st.one_of(
    st.tuples(st.just("retype"), st.sampled_from(DATASETS), st.sampled_from(DTYPES)),
    st.tuples(st.just("reshape"), st.sampled_from(DATASETS), st.integers(0, 9)),
    st.tuples(st.just("huge"), st.sampled_from(DATASETS), st.integers(0, 9)),
    st.tuples(st.just("value"), st.sampled_from(DATASETS), st.tuples(st.integers(0, 10**6))),
    st.tuples(st.just("poke"), st.sampled_from(INDEX), st.tuples(st.integers(0, 10**6), st.sampled_from(POKES))),
    st.tuples(st.just("delete"), st.sampled_from(DATASETS + GROUPS), st.none()),
    st.tuples(st.just("attr"), st.sampled_from(ATTRS), st.sampled_from(sorted(BAD_VALUES))),
    st.tuples(st.just("delattr"), st.sampled_from([a for a in ATTRS if a[1] != DIGEST_ATTR]), st.none()),
)


@FUZZ
@given(base=st.sampled_from(["mirage", "subset"]), ops=st.lists(structural_op, min_size=0, max_size=3),
       legacy=st.integers(0, 3))
def test_structural_mutations(originals, tmp_path_factory, base, ops, legacy) -> None:
    """One in four cases also deletes the checksum (a forged legacy file: the checks behind it)."""
    raw, original = originals[base]
    path = tmp_path_factory.getbasetemp() / f"gstruct-{base}.h5"
    path.write_bytes(raw)
    with h5py.File(path, "r+") as f:
        done = [k for k in (apply(f, op) for op in ops) if k != "skipped"]
        if legacy == 0 and DIGEST_ATTR in f.attrs:
            del f.attrs[DIGEST_ATTR]
            done = ["legacy"] + sorted(set(done)) if done else ["nochecksum"]
    assume(done)  # targets absent from this base: discarded, not counted as an example
    kind = "+".join(done if done[0] == "legacy" else sorted(set(done)))
    check(path, original, kind)


@settings(FUZZ, max_examples=max(1, EXAMPLES // 2))
@given(base=st.sampled_from(["mirage", "subset"]),
       pokes=st.lists(st.tuples(st.sampled_from(INDEX), st.integers(0, 10**6), st.sampled_from(POKES)),
                      min_size=1, max_size=2))
def test_out_of_range_indices_without_checksum(originals, tmp_path_factory, base, pokes) -> None:
    """Index entries forced out of range in a file without its checksum: only the range and
    consistency checks stand between them and an indexing crash (or a silently wrong set)."""
    raw, original = originals[base]
    path = tmp_path_factory.getbasetemp() / f"gpoke-{base}.h5"
    path.write_bytes(raw)
    with h5py.File(path, "r+") as f:
        del f.attrs[DIGEST_ATTR]
        done = [apply(f, ("poke", target, (where, value))) for target, where, value in pokes]
    assume("poke" in done)
    check(path, original, "legacy+poke-only")


def test_zz_record_outcomes() -> None:
    """Runs after the fuzz tests of this module: optional JSON report of the counts."""
    report = os.environ.get("DSD_FUZZ_REPORT")
    if report and OUTCOMES:
        with open(report, "a") as fh:
            fh.write(json.dumps({"examples": EXAMPLES, "graph_outcomes": {f"{k[0]}|{k[1]}": v for k, v in
                                                                           sorted(OUTCOMES.items())}}) + "\n")


# ---- targeted holes and the CLI ------------------------------------------------------------------
def _flip_label(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f["itemsets/label"][0] = (int(f["itemsets/label"][0]) + 1) % 3


def _forge_shape(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        _replace(f, "trees/node_labels", shape=(10**9,), dtype="i8", chunks=(1,))


def _attr_type(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f.attrs["depth"] = "two"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:3000])


def _tree_id_out_of_range(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f["itemsets/tree_ids"][0] = 10**6


CLI_CASES = {"truncated": (_truncate, "not a readable HDF5 file"),
             "forged_shape": (_forge_shape, "declares shape (1000000000,)"),
             "attr_type": (_attr_type, "'depth' of / must be an integer"),
             "tree_id": (_tree_id_out_of_range, "/itemsets/tree_ids must lie in"),
             "flipped_label": (_flip_label, "content checksum does not match")}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_on_mutated_graph_file_prints_one_error_line(originals, tmp_path, case) -> None:
    mutate, phrase = CLI_CASES[case]
    path = tmp_path / "m.h5"
    path.write_bytes(originals["mirage"][0])
    mutate(path)
    for args in (["info", str(path)], ["evaluate", str(path), "--epochs", "1", "--runs", "1", "-q"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and phrase in lines[0], lines
        assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("dtype", ["u8", "f8"])
def test_wide_types_cannot_wrap_past_the_checks(originals, tmp_path, dtype) -> None:
    """Without a checksum: a uint64 ptr with a 'decreasing' step (whose uint64 difference wraps to a
    huge positive number) and float64 vocab values beyond float32 must be refused, not loaded."""
    path = tmp_path / "w.h5"
    path.write_bytes(originals["subset"][0])
    with h5py.File(path, "r+") as f:
        del f.attrs[DIGEST_ATTR]
        if dtype == "u8":
            ptr = f["trees/ptr"][()].astype("u8")
            ptr[1], ptr[2] = ptr[2], ptr[1]
            _replace(f, "trees/ptr", data=ptr)
        else:
            vocab = f["vocab/node_features"][()].astype("f8")
            vocab[0, 0] = 1e300
            _replace(f, "vocab/node_features", data=vocab)
    with pytest.raises(SyntheticFileError, match="/trees/ptr must run|non-finite"):
        load_graph_synthetic(path)


def test_checksum_written_and_legacy_files_load(originals, tmp_path) -> None:
    raw, original = originals["mirage"]
    path = tmp_path / "legacy.h5"
    path.write_bytes(raw)
    with h5py.File(path, "r+") as f:
        assert len(f.attrs[DIGEST_ATTR]) == 64
        del f.attrs[DIGEST_ATTR]
    assert same(load_graph_synthetic(path), original)
