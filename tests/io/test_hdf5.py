"""Schema-v1 HDF5 I/O: round trips, atomic writes, and refusal of hostile files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dsdistill.io.hdf5 as hdf5
from dsdistill.augment.zca import ZCA
from dsdistill.errors import ConfigError, SyntheticFileError
from dsdistill.io import (FORMAT_VERSION, atomic_path, atomic_write_json, atomic_write_text,
                          describe, load_synthetic, read_header, save_synthetic)
from dsdistill.synthetic import SoftLabels, SyntheticSet

K, IPC, SHAPE = 3, 2, (3, 4, 4)


def make_set(**overrides) -> SyntheticSet:
    g = torch.Generator().manual_seed(0)
    fields = dict(images=torch.randn(K * IPC, *SHAPE, generator=g),
                  labels=torch.arange(K).repeat_interleave(IPC), num_classes=K, method="dm",
                  dataset="toy", ipc=IPC, mean=(0.5, 0.25, 0.125), std=(0.2, 0.3, 0.4))
    fields.update(overrides)
    return SyntheticSet(**fields)


def assert_same(a: SyntheticSet, b: SyntheticSet) -> None:
    assert torch.equal(a.images, b.images) and b.images.dtype == torch.float32
    assert torch.equal(a.labels, b.labels) and b.labels.dtype == torch.int64
    for name in ("num_classes", "method", "dataset", "ipc", "space", "mean", "std", "lr",
                 "class_names", "provenance", "protocol"):
        assert getattr(a, name) == getattr(b, name), name
    assert (a.soft_labels is None) == (b.soft_labels is None)
    if a.soft_labels is not None:
        sa, sb = a.soft_labels, b.soft_labels
        assert torch.equal(sa.values, sb.values)
        assert (sa.kind, sa.temperature, sa.source) == (sb.kind, sb.temperature, sb.source)
    assert (a.zca is None) == (b.zca is None)
    if a.zca is not None:
        for key in ("mean", "matrix", "inverse"):
            assert torch.equal(a.zca[key], b.zca[key]), key
        assert a.zca["eps"] == b.zca["eps"]


@pytest.fixture
def h5(tmp_path: Path) -> Path:
    path = tmp_path / "set.h5"
    save_synthetic(make_set(), path)
    return path


def mutate(path: Path, fn) -> Path:
    with h5py.File(path, "r+") as f:
        fn(f)
    return path


# ---- round trips -------------------------------------------------------------------------------
def zca_set() -> SyntheticSet:
    zca = ZCA(eps=0.1).fit(torch.rand(40, *SHAPE, generator=torch.Generator().manual_seed(1)))
    syn = make_set(space="zca", mean=None, std=None, zca=zca.state())
    syn.images = zca.transform(syn.images.clamp(0, 1))
    return syn


ROUND_TRIPS = {
    "plain": lambda: make_set(),
    "pixel_no_stats": lambda: make_set(space="pixel", mean=None, std=None),
    "soft_logits": lambda: make_set(soft_labels=SoftLabels(
        torch.randn(K * IPC, K), kind="logits", temperature=4.0, source="convnet x10")),
    "soft_probs_fp16": lambda: make_set(soft_labels=SoftLabels(
        torch.softmax(torch.randn(K * IPC, K), 1).half(), kind="probs")),
    "lr": lambda: make_set(lr=float(torch.tensor(0.01)), protocol="tm"),
    "zca": zca_set,
    "names_provenance": lambda: make_set(
        class_names=["cat", "dög", ""], protocol="dc",
        provenance={"seeds": [0, 1], "config": {"iterations": 10, "lr_img": 1.0, "nested": [1]},
                    "dataset_fingerprint": "sha256:abc", "elapsed_s": 3.5, "note": "ünïcode"}),
    "unbalanced": lambda: make_set(images=torch.randn(5, *SHAPE),
                                   labels=torch.tensor([0, 0, 1, 2, 2])),
}


@pytest.mark.parametrize("name", ROUND_TRIPS)
def test_round_trip(tmp_path: Path, name: str) -> None:
    syn = ROUND_TRIPS[name]()
    save_synthetic(syn, tmp_path / "s.h5")
    back = load_synthetic(tmp_path / "s.h5")
    assert_same(syn, back)
    assert back.images.data_ptr() != syn.images.data_ptr()
    assert os.listdir(tmp_path) == ["s.h5"]  # no temp file left behind


def test_maximally_compressible_images_still_load(tmp_path: Path) -> None:
    syn = make_set(images=torch.zeros(K * 700, 3, 32, 32),
                   labels=torch.arange(K).repeat_interleave(700), ipc=700)
    save_synthetic(syn, tmp_path / "z.h5")
    assert os.path.getsize(tmp_path / "z.h5") * 500 < syn.images.numel() * 4  # >500x smaller
    assert torch.equal(load_synthetic(tmp_path / "z.h5").images, syn.images)


def test_schema_layout(tmp_path: Path) -> None:
    syn = ROUND_TRIPS["soft_logits"]()
    syn.lr = 0.5
    save_synthetic(syn, tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5", "r") as f:
        a = f.attrs
        assert a["format"] == b"dsdistill" and a["format_version"] == FORMAT_VERSION
        assert a["encoding-type"] == b"dsdistill.synthetic_set" and a["encoding-version"] == b"1.0.0"
        assert (a["modality"], a["method"], a["num_classes"], a["ipc"]) == (b"image", b"dm", K, IPC)
        assert a["created_by"].decode().startswith("dsdistill ") and a["protocol"] == b""
        assert f["images"].dtype == np.float32 and f["images"].chunks == (IPC, *SHAPE)
        assert f["labels"].dtype == np.int64 and f["lr"].shape == () and f["lr"].dtype == np.float32
        assert f["soft_labels/static"].attrs["kind"] == b"logits"
        assert f["preprocess"].attrs["space"] == b"normalized" and f["preprocess/mean"].shape == (3,)
        assert json.loads(f["provenance/config_json"][()]) == {}
        storage = {key: int(v) for key, v in f["storage"].attrs.items() if key != "description"}
    expected = syn.storage_bytes()
    assert {key: storage[key] for key in expected} == expected
    assert storage["preprocessing"] == 6 * 8


def test_header_and_describe(tmp_path: Path) -> None:
    syn = ROUND_TRIPS["names_provenance"]()
    syn.soft_labels = SoftLabels(torch.randn(K * IPC, K), "logits", 4.0, "teacher")
    syn.lr = 0.25
    save_synthetic(syn, tmp_path / "s.h5")
    header = read_header(tmp_path / "s.h5")
    assert header["method"] == "dm" and header["num_classes"] == K and header["ipc"] == IPC
    assert header["space"] == "normalized" and header["protocol"] == "dc"
    text = describe(tmp_path / "s.h5")
    for needle in ("dm", "toy", "IPC", str(IPC), "3x4x4", "normalized", "mean 0.5",
                   "soft logits", "temperature 4", "learned lr   0.25", "protocol     dc",
                   f"images {K * IPC * 48 * 4:,} B", f"labels {K * IPC * 8} B", "preprocessing",
                   "file ", "seeds [0, 1]", "sha256:abc", "elapsed 3.5 s", "lr_img=1.0", "cat"):
        assert needle in text, needle
    zca_path = tmp_path / "z.h5"
    save_synthetic(zca_set(), zca_path)
    assert "ZCA eps 0.1" in describe(zca_path) and "hard" in describe(zca_path)


def test_graph_modality_dispatch(h5: Path) -> None:
    mutate(h5, lambda f: f.attrs.__setitem__("modality", np.bytes_(b"graph")))
    assert read_header(h5)["modality"] == "graph"
    with pytest.raises(SyntheticFileError, match="pooling"):  # describe() validates graph files fully
        describe(h5)
    with pytest.raises(SyntheticFileError, match="is a graph set; load it with"):
        load_synthetic(h5)


def test_writer_refuses_inconsistent_set(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="labels must lie"):
        save_synthetic(make_set(labels=torch.full((K * IPC,), K)), tmp_path / "s.h5")
    with pytest.raises(ValueError, match="mean must have 3"):
        save_synthetic(make_set(mean=(0.5,)), tmp_path / "s.h5")
    assert not os.listdir(tmp_path)


# ---- atomic writes -----------------------------------------------------------------------------
def test_crash_during_save_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    real_put = hdf5._put

    def put_then_crash(group, name, arr, chunks=None):
        if name == "labels":
            raise RuntimeError("simulated crash")
        return real_put(group, name, arr, chunks)

    monkeypatch.setattr(hdf5, "_put", put_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        save_synthetic(make_set(), tmp_path / "s.h5")
    assert not os.listdir(tmp_path)
    # an existing file survives a crashed overwrite untouched
    (tmp_path / "s.h5").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        save_synthetic(make_set(), tmp_path / "s.h5")
    assert os.listdir(tmp_path) == ["s.h5"] and (tmp_path / "s.h5").read_bytes() == b"old"


def test_atomic_path_cleans_up_and_refuses_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".out.txt.tmp-")
            tmp.write_text("half")
            raise KeyError("boom")
    assert not os.listdir(tmp_path)
    atomic_write_text(target, "v1")
    atomic_write_json(tmp_path / "r.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "r.json").read_text() == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'
    with pytest.raises(ConfigError, match="exists; pass --overwrite to replace it"):
        atomic_write_text(target, "v2", overwrite=False)
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        save_synthetic(make_set(), target, overwrite=False)
    assert target.read_text() == "v1" and sorted(os.listdir(tmp_path)) == ["out.txt", "r.json"]
    atomic_write_text(target, "v2")
    assert target.read_text() == "v2"
    save_synthetic(make_set(), tmp_path / "new.h5", overwrite=False)
    assert load_synthetic(tmp_path / "new.h5").method == "dm"


# ---- rejections --------------------------------------------------------------------------------
def _replace(f, name, **kwargs):
    del f[name]
    f.create_dataset(name, **kwargs)


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _random(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _foreign(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(10)
        f.attrs["format"] = "netcdf"
    return path


def _external(path: Path) -> Path:
    raw = path.parent / "raw.bin"
    raw.write_bytes(bytes(K * IPC * 8))
    return mutate(path, lambda f: _replace(f, "labels", shape=(K * IPC,), dtype="i8",
                                           external=[(str(raw), 0, K * IPC * 8)]))


BAD = {
    "missing": (lambda p: p.parent / "nope.h5", "does not exist"),
    "zero_bytes": (lambda p: (p.write_bytes(b""), p)[1], "not a readable HDF5 file"),
    "truncated": (_truncate, "not a readable HDF5 file"),
    "random_bytes": (_random, "not a readable HDF5 file"),
    "directory": (lambda p: p.parent, "not a regular file"),
    "foreign": (_foreign, r"is not a dsdistill file \(foreign HDF5\)"),
    "future_version": (lambda p: mutate(p, lambda f: f.attrs.__setitem__("format_version", 2)),
                       "written by a newer dsdistill .format version 2.; upgrade dsdistill"),
    "num_classes_str": (lambda p: mutate(p, lambda f: f.attrs.__setitem__("num_classes", "3")),
                        "'num_classes' of / must be an integer"),
    "num_classes_zero": (lambda p: mutate(p, lambda f: f.attrs.__setitem__("num_classes", 0)),
                         "'num_classes' of / is 0, outside"),
    "bad_space": (lambda p: mutate(p, lambda f: f.attrs.__setitem__("space", np.bytes_(b"hsv"))),
                  "space 'hsv' is not one of"),
    "labels_range": (lambda p: mutate(p, lambda f: f["labels"].__setitem__(0, K)),
                     r"labels out of range"),
    "images_ndim": (lambda p: mutate(p, lambda f: _replace(f, "images", data=np.zeros((6, 4, 4), "f4"))),
                    "/images must be 4-D"),
    "images_int": (lambda p: mutate(p, lambda f: _replace(f, "images", data=np.zeros((6, 3, 4, 4), "i4"))),
                   "/images has type integer"),
    "n_mismatch": (lambda p: mutate(p, lambda f: _replace(f, "labels", data=np.zeros(5, "i8"))),
                   r"/labels has 5 entries but /images has 6 \(N mismatch\)"),
    "forged_huge": (lambda p: mutate(p, lambda f: _replace(
        f, "images", shape=(10**6, 3, 512, 512), dtype="f4", chunks=(1, 3, 512, 512), fillvalue=0)),
        r"declares shape \(1000000, 3, 512, 512\)"),
    "forged_bytes": (lambda p: mutate(p, lambda f: _replace(
        f, "images", shape=(2000, 3, 64, 64), dtype="f4", chunks=(1, 3, 64, 64), compression="gzip")),
        "far more than a .*-byte file can hold"),
    "soft_shape": (lambda p: mutate(p, lambda f: f.create_dataset("soft_labels/static",
                                                                  data=np.zeros((6, K + 1), "f4"))),
                   r"/soft_labels/static has shape \(6, 4\), expected \(6, 3\)"),
    "zca_without_matrices": (lambda p: mutate(p, lambda f: [
        obj.attrs.__setitem__("space", np.bytes_(b"zca")) for obj in (f, f["preprocess"])]),
        "no ZCA matrices"),
    "space_disagrees": (lambda p: mutate(p, lambda f: f.attrs.__setitem__("space", np.bytes_(b"zca"))),
                        "/preprocess space 'normalized' differs from the root's 'zca'"),
    "zca_wrong_d": (lambda p: mutate(p, lambda f: [f.create_dataset(
        f"preprocess/zca_{k}", data=np.zeros(s, "f4")) for k, s in
        (("mean", (1, 5)), ("matrix", (5, 5)), ("inverse", (5, 5)))]),
        r"/preprocess/zca_mean has shape \(1, 5\), expected \(1, 48\)"),
    "provenance_not_object": (lambda p: mutate(p, lambda f: _replace(
        f, "provenance/config_json", data=np.bytes_(b"[1, 2]"))), "not a JSON object"),
    "provenance_bad_json": (lambda p: mutate(p, lambda f: _replace(
        f, "provenance/config_json", data=np.bytes_(b"{oops"))), "config_json is not valid JSON"),
    "classes_not_utf8": (lambda p: mutate(p, lambda f: f.create_dataset(
        "classes", data=np.array([b"a", b"\xff", b"c"]))), "/classes is not valid UTF-8"),
    "vlen_string": (lambda p: mutate(p, lambda f: f.attrs.__setitem__("method", "dm")),
                    "must be a fixed-length UTF-8 string, got a variable-length string"),
    "soft_link": (lambda p: mutate(p, lambda f: (f.move("labels", "l2"),
                                                 f.__setitem__("labels", h5py.SoftLink("/l2")))),
                  "/labels is a SoftLink"),
    "external_storage": (_external, "outside the file"),
}


@pytest.mark.parametrize("case", BAD)
def test_rejects(h5: Path, case: str) -> None:
    make, phrase = BAD[case]
    path = make(h5)
    with pytest.raises(SyntheticFileError, match=phrase) as info:
        load_synthetic(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
    if case != "labels_range":  # describe() does not read the labels
        with pytest.raises(SyntheticFileError, match=phrase):
            describe(path)


# ---- fuzzing -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    syn = zca_set()
    syn.soft_labels = SoftLabels(torch.randn(K * IPC, K), "logits", 2.0, "t")
    syn.lr, syn.class_names, syn.provenance = 0.5, ["a", "b", "c"], {"seeds": [1]}
    save_synthetic(syn, d / "valid.h5")
    return d


@settings(max_examples=50, deadline=5000, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.one_of(st.none(), st.floats(0, 1, exclude_max=True)),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                      max_size=8))
def test_corrupted_files_never_escape(fuzz_dir: Path, cut, flips) -> None:
    data = bytearray((fuzz_dir / "valid.h5").read_bytes())
    for where, value in flips:
        data[int(where * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = fuzz_dir / "mutant.h5"
    path.write_bytes(bytes(data))
    try:
        syn = load_synthetic(path)
    except SyntheticFileError:
        return
    assert isinstance(syn, SyntheticSet) and syn.images.dtype == torch.float32
    assert syn.labels.dtype == torch.int64 and int(syn.labels.max()) < syn.num_classes
