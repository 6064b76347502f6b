"""Property-based fuzzing of the HDF5 reader: every mutated file is a clean error or an equal load.

Two hypothesis tests mutate valid files (a small uncompressed set with every optional part, and a
larger gzip-compressed one):

* ``bytes``: truncation, bit flips and byte overwrites anywhere in the file;
* ``structure`` (through h5py): datasets recast to wrong dtypes, reshaped, replaced by forged huge
  declared shapes, single values changed, members and whole groups deleted, attributes deleted or
  replaced by values of wrong types (ints, floats, strings, variable-length strings, arrays,
  bools, NaN, huge numbers), the checksum deleted.

The oracle: ``load_synthetic`` either raises :class:`SyntheticFileError` with one line naming the
file, or returns a set equal to the original in every field (a mutation of unused bytes, or of
the checksum attribute alone). Any other exception, a crash, a hang (each case must finish in
``CASE_SECONDS``) or a load that differs from the original (a silent wrong result) fails.
``describe`` (``dsdistill info``) must also end in SyntheticFileError or a text.

``DSD_FUZZ_EXAMPLES`` (default 200 per test, i.e. 400 files) and ``DSD_FUZZ_RANDOM=1`` (a fresh
random seed instead of hypothesis' derandomised one) scale it up; ``DSD_FUZZ_REPORT=FILE`` appends
the outcome counts as JSON lines.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dsdistill.augment.zca import ZCA
from dsdistill.cli import main
from dsdistill.errors import SyntheticFileError
from dsdistill.io import describe, load_synthetic, save_synthetic
from dsdistill.io.checksum import DIGEST_ATTR
from dsdistill.synthetic import SoftLabels, SyntheticSet

EXAMPLES = int(os.environ.get("DSD_FUZZ_EXAMPLES", "200"))
CASE_SECONDS = 2.0
OUTCOMES: collections.Counter = collections.Counter()
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("DSD_FUZZ_RANDOM"),
                database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                  HealthCheck.filter_too_much])


def full_set() -> SyntheticSet:
    """3 classes x 2 images of 3x4x4, ZCA space, soft logits, lr, class names, provenance (uncompressed)."""
    g = torch.Generator().manual_seed(0)
    zca = ZCA(eps=0.1).fit(torch.rand(40, 3, 4, 4, generator=g))
    return SyntheticSet(images=zca.transform(torch.rand(6, 3, 4, 4, generator=g)),
                        labels=torch.arange(3).repeat_interleave(2), num_classes=3, method="dm", dataset="toy",
                        ipc=2, space="zca", zca=zca.state(), class_names=["a", "bé", "c"], lr=0.03, protocol="tm",
                        soft_labels=SoftLabels(torch.randn(6, 3, generator=g), "logits", 2.0, "teacher"),
                        provenance={"seeds": [1, 2], "config": {"iterations": 5}, "elapsed_seconds": 1.5})


def big_set() -> SyntheticSet:
    """4 classes x 5 images of 1x16x16 (gzip-compressed chunks), normalized, fp16 probabilities."""
    g = torch.Generator().manual_seed(1)
    return SyntheticSet(images=torch.randn(20, 1, 16, 16, generator=g), labels=torch.arange(4).repeat_interleave(5),
                        num_classes=4, method="random", dataset="tiny", ipc=5, mean=(0.5,), std=(0.25,),
                        soft_labels=SoftLabels(torch.softmax(torch.randn(20, 4, generator=g), 1).half(), "probs"))


BASES = {"full": full_set, "big": big_set}


class Originals(dict):
    def __repr__(self) -> str:  # keeps hypothesis' failure reports readable
        return f"<valid files {sorted(self)}>"


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, tuple[bytes, SyntheticSet]]:
    d = tmp_path_factory.mktemp("fuzz_originals")
    out = Originals()
    for name, make in BASES.items():
        save_synthetic(make(), d / f"{name}.h5")
        out[name] = ((d / f"{name}.h5").read_bytes(), load_synthetic(d / f"{name}.h5"))
    with h5py.File(d / "big.h5", "r") as f:  # the big set's data really goes through the gzip filter
        assert f["images"].compression == "gzip" and f["images"].chunks is not None
    return out


def same(a: SyntheticSet, b: SyntheticSet) -> bool:
    """Every field equal, tensors bitwise."""
    tensors = [(a.images, b.images), (a.labels, b.labels)]
    if (a.soft_labels is None) != (b.soft_labels is None) or (a.zca is None) != (b.zca is None):
        return False
    if a.soft_labels is not None:
        tensors.append((a.soft_labels.values, b.soft_labels.values))
        if (a.soft_labels.kind, a.soft_labels.temperature, a.soft_labels.source) != (
                b.soft_labels.kind, b.soft_labels.temperature, b.soft_labels.source):
            return False
    if a.zca is not None:
        tensors += [(a.zca[k], b.zca[k]) for k in ("mean", "matrix", "inverse")]
        if a.zca["eps"] != b.zca["eps"]:
            return False
    if not all(x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y) for x, y in tensors):
        return False
    return all(getattr(a, f) == getattr(b, f) for f in ("num_classes", "method", "dataset", "ipc", "space",
                                                      "mean", "std", "lr", "class_names", "provenance",
                                                      "protocol"))


def check(path: Path, original: SyntheticSet, kind: str) -> str:
    """Apply the oracle to one mutated file; return the outcome."""
    started = time.monotonic()
    try:
        loaded = load_synthetic(path)
    except SyntheticFileError as err:
        text = str(err)
        assert text.startswith(str(path)) and "\n" not in text and len(text) < 600, text
        outcome = "error"
    else:
        assert same(original, loaded), f"{kind}: a mutated file loaded as a different set (silent wrong result)"
        outcome = "equal"
    try:
        assert isinstance(describe(path), str)
    except SyntheticFileError:
        pass
    elapsed = time.monotonic() - started
    assert elapsed < CASE_SECONDS, f"{kind}: took {elapsed:.2f} s"
    OUTCOMES[(kind, outcome)] += 1
    OUTCOMES[(kind, "max_ms")] = max(OUTCOMES[(kind, "max_ms")], int(1000 * elapsed))
    return outcome


# ---- byte-level mutations ------------------------------------------------------------------------
byte_edits = st.lists(st.tuples(st.sampled_from(["flip", "set"]), st.floats(0, 1, exclude_max=True),
                                st.integers(0, 255)), min_size=0, max_size=6)


@FUZZ
@given(base=st.sampled_from(sorted(BASES)), edits=byte_edits,
       cut=st.one_of(st.none(), st.floats(0, 1, exclude_max=True)))
def test_byte_mutations(originals, tmp_path_factory, fuzz_bytes, base, edits, cut) -> None:
    raw, original = originals[base]
    data = fuzz_bytes(raw, edits, cut)
    path = tmp_path_factory.getbasetemp() / f"bytes-{base}.h5"
    path.write_bytes(data)
    check(path, original, "truncation+bytes" if cut is not None else "bytes")


# ---- structural mutations ------------------------------------------------------------------------
DATASETS = ["images", "labels", "soft_labels/static", "lr", "preprocess/mean", "preprocess/std",
            "preprocess/zca_mean", "preprocess/zca_matrix", "preprocess/zca_inverse", "classes",
            "provenance/config_json"]
GROUPS = ["soft_labels", "preprocess", "provenance", "storage"]
ATTRS = [("/", a) for a in ("format", "format_version", "encoding-version", "modality", "method", "dataset",
                            "num_classes", "ipc", "space", "protocol", "created_by", DIGEST_ATTR)] + [
    ("soft_labels/static", "kind"), ("soft_labels/static", "temperature"), ("soft_labels/static", "source"),
    ("preprocess", "space"), ("preprocess", "zca_eps"), ("storage", "total"), ("storage", "description")]
DTYPES = ["i1", "u1", "i4", "i8", "f2", "f4", "f8", "S8", "bool"]
BAD_VALUES = {"int": np.int64(3), "negative": np.int64(-1), "huge": np.int64(2**62), "float": 0.5, "nan": np.nan,
              "str": np.bytes_(b"x"), "vlen": "vlen-string", "array": np.arange(3), "bool": np.bool_(True),
              "empty": np.bytes_(b"")}


def _replace(f: h5py.File, name: str, **kwargs) -> None:
    del f[name]
    f.create_dataset(name, **kwargs)


def apply(f: h5py.File, op: tuple) -> str:
    """Apply one structural mutation; return its kind (skipped when the target is absent)."""
    kind, target, arg = op
    if kind in ("retype", "reshape", "huge", "value", "delete") and target not in f:
        return "skipped"
    if kind in ("retype", "reshape", "value", "huge") and f[target].size > 10**5:  # already forged huge: reading it
        return "skipped"  # here (in the mutator, not the reader) would allocate gigabytes
    if kind == "retype":
        ds = f[target]
        if ds.dtype.kind == "S" or arg == "S8":
            _replace(f, target, data=np.zeros(ds.shape, arg))
        else:
            _replace(f, target, data=np.asarray(ds[()]).astype(arg))
    elif kind == "reshape":
        arr = np.asarray(f[target][()])
        if arr.ndim == 0:
            new = arr.reshape(1)
        elif arg % 2:
            new = arr.reshape(-1) if arr.ndim > 1 else arr.reshape(1, -1)
        else:
            new = np.concatenate([arr, arr[:1]])
        _replace(f, target, data=new)
    elif kind == "huge":
        shape = f[target].shape or (1,)
        big = (10 ** (3 + arg % 7) * max(1, shape[0]), *shape[1:])
        _replace(f, target, shape=big, dtype=f[target].dtype if f[target].dtype.kind != "S" else "f4",
                 chunks=(1, *shape[1:]), compression="gzip" if arg % 2 else None)
    elif kind == "value":
        ds = f[target]
        if ds.dtype.kind == "S" or ds.size == 0:
            return "skipped"
        flat = np.asarray(ds[()]).reshape(-1).copy()
        i, kind_ = arg % flat.size, ds.dtype.kind
        with np.errstate(over="ignore"):  # int8 127 + 1 wraps: still a change
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
    elif kind == "nochecksum":
        del f.attrs[DIGEST_ATTR]
    return kind


structural_op = st.one_of(
    st.tuples(st.just("retype"), st.sampled_from(DATASETS), st.sampled_from(DTYPES)),
    st.tuples(st.just("reshape"), st.sampled_from(DATASETS), st.integers(0, 9)),
    st.tuples(st.just("huge"), st.sampled_from(DATASETS), st.integers(0, 9)),
    st.tuples(st.just("value"), st.sampled_from(DATASETS), st.integers(0, 10**6)),
    st.tuples(st.just("delete"), st.sampled_from(DATASETS + GROUPS), st.none()),
    st.tuples(st.just("attr"), st.sampled_from(ATTRS), st.sampled_from(sorted(BAD_VALUES))),
    # removing the checksum is a mutation of its own ("nochecksum"); removed *and* combined with a
    # content change it is a forgery of a legacy (unchecksummed) file, which no reader can tell apart
    st.tuples(st.just("delattr"), st.sampled_from([a for a in ATTRS if a[1] != DIGEST_ATTR]), st.none()),
)


@FUZZ
@given(base=st.sampled_from(sorted(BASES)),
       ops=st.one_of(st.just([("nochecksum", None, None)]), st.lists(structural_op, min_size=1, max_size=3)))
def test_structural_mutations(originals, tmp_path_factory, base, ops) -> None:
    raw, original = originals[base]
    path = tmp_path_factory.getbasetemp() / f"struct-{base}.h5"
    path.write_bytes(raw)
    with h5py.File(path, "r+") as f:
        kinds = [apply(f, op) for op in ops]
    done = [k for k in kinds if k != "skipped"]
    assume(done)  # targets absent from this base: discarded, not counted as an example
    check(path, original, "+".join(sorted(set(done))))


def test_zz_record_outcomes() -> None:
    """Runs after the fuzz tests of this module: optional JSON report of the counts."""
    report = os.environ.get("DSD_FUZZ_REPORT")
    if report and OUTCOMES:
        with open(report, "a") as fh:
            fh.write(json.dumps({"examples": EXAMPLES, "outcomes": {f"{k[0]}|{k[1]}": v for k, v in
                                                                     sorted(OUTCOMES.items())}}) + "\n")


# ---- the CLI on mutated files --------------------------------------------------------------------
def _flip_label(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f["labels"][0] = 1


def _forge_shape(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        _replace(f, "images", shape=(10**7, 1, 16, 16), dtype="f4", chunks=(1, 1, 16, 16))


def _attr_type(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f.attrs["ipc"] = "five"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:3000])


CLI_CASES = {"truncated": (_truncate, "not a readable HDF5 file", True),
             "forged_shape": (_forge_shape, "declares shape (10000000, 1, 16, 16)", True),
             "attr_type": (_attr_type, "'ipc' of / must be an integer", True),
             "flipped_label": (_flip_label, "content checksum does not match", False)}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_on_mutated_file_prints_one_error_line(originals, tmp_path, case) -> None:
    mutate, phrase, info_fails = CLI_CASES[case]
    path = tmp_path / "m.h5"
    path.write_bytes(originals["big"][0])
    mutate(path)
    commands = [["evaluate", str(path), "--epochs", "1", "--runs", "1", "-q"]] + (
        [["info", str(path)]] if info_fails else [])  # info reads metadata only; load verifies the checksum
    for args in commands:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and phrase in lines[0], lines
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_real_process_on_a_corrupt_file(originals, tmp_path) -> None:
    path = tmp_path / "m.h5"
    path.write_bytes(originals["big"][0])
    _flip_label(path)
    proc = subprocess.run([sys.executable, "-m", "dsdistill", "evaluate", str(path), "--epochs", "1", "-q"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {path} is inconsistent: its content checksum does not match (the file was modified or corrupted "
        "after it was written)"]
