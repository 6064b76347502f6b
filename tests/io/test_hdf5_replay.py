"""Replay labels in the HDF5 file: round trips, storage, describe, refusals and fuzzing."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsdistill.errors import SyntheticFileError
from dsdistill.io import describe, load_synthetic, save_synthetic
from dsdistill.softlabels import ReplayLabels
from dsdistill.synthetic import SyntheticSet

K, IPC, SHAPE, E = 3, 2, (3, 6, 6), 4
N = K * IPC


def replay(mix: bool = True, topk: int | None = None, bssl: bool = False, dtype=torch.float16,
           seed: int = 0) -> ReplayLabels:
    """Replay labels built by hand (no teacher needed): valid indices, random values."""
    g = torch.Generator().manual_seed(seed)
    hw = torch.randint(1, 7, (E, N, 2), generator=g)
    tl = (torch.rand(E, N, 2, generator=g) * (7 - hw)).long()
    crops = torch.cat([tl, hw], -1).to(torch.int16)
    flips = torch.rand(E, N, generator=g) < 0.5
    partners = boxes = order = indices = None
    if mix:
        partners = torch.stack([torch.randperm(N, generator=g) for _ in range(E)]).to(torch.int32)
        a = torch.randint(0, 4, (E, N, 2), generator=g)
        boxes = torch.cat([a, a + torch.randint(0, 3, (E, N, 2), generator=g)], -1).to(torch.int16)
    if bssl:
        order = torch.stack([torch.randperm(N, generator=g) for _ in range(E)]).to(torch.int32)
    if topk:
        p = torch.softmax(torch.randn(E, N, K, generator=g), -1).topk(topk, -1)
        values, indices, kind = p.values.to(dtype), p.indices.to(torch.int16), "probs"
    else:
        values, kind = torch.randn(E, N, K, generator=g).to(dtype), "logits"
    return ReplayLabels(crops, flips, partners, boxes, values, indices, kind=kind, temperature=4.0, num_classes=K,
                        size=(6, 6), order=order, micro_batch=2 if bssl else 0,
                        settings={"average": "logits", "teachers": ["convnet", "mlp"], "weights": [0.5, 0.5]})


def make_set(rp: ReplayLabels | None = None, **kw) -> SyntheticSet:
    g = torch.Generator().manual_seed(0)
    return SyntheticSet(images=torch.randn(N, *SHAPE, generator=g), labels=torch.arange(K).repeat_interleave(IPC),
                        num_classes=K, method="sre2l", dataset="toy", ipc=IPC, mean=(0.5,) * 3, std=(0.25,) * 3,
                        replay=rp if rp is not None else replay(), **kw)


FIELDS = ("crops", "flips", "partners", "mix_boxes", "values", "indices", "order")
VARIANTS = {"cutmix_fp16": lambda: replay(), "nomix_fp32": lambda: replay(mix=False, dtype=torch.float32),
            "topk_bssl": lambda: replay(topk=2, bssl=True)}


@pytest.mark.parametrize("name", VARIANTS)
def test_round_trip(tmp_path: Path, name: str) -> None:
    syn = make_set(VARIANTS[name]())
    save_synthetic(syn, tmp_path / "s.h5")
    back = load_synthetic(tmp_path / "s.h5").replay
    a = syn.replay
    for f in FIELDS:
        x, y = getattr(a, f), getattr(back, f)
        assert (x is None) == (y is None), f
        if x is not None:
            assert torch.equal(x, y) and x.dtype == y.dtype, f
    for f in ("kind", "temperature", "num_classes", "size", "micro_batch", "settings"):
        assert getattr(a, f) == getattr(back, f), f


def test_storage_and_describe(tmp_path: Path) -> None:
    syn = make_set(replay(topk=2, bssl=True))
    save_synthetic(syn, tmp_path / "s.h5")
    sb = syn.storage_bytes()
    assert sb["replay_labels"] == E * N * 2 * (2 + 2)  # fp16 values + int16 indices
    assert sb["replay_params"] == E * N * (8 + 1 + 4 + 8 + 4)  # crops, flips, partners, boxes, order
    assert sb["total"] == sum(v for k, v in sb.items() if k != "total")
    with h5py.File(tmp_path / "s.h5", "r") as f:
        st_ = {k: int(v) for k, v in f["storage"].attrs.items() if k != "description"}
        assert f["soft_labels/replay/flips"].dtype == np.uint8 and "static" not in f["soft_labels"]
        assert json.loads(f["soft_labels/replay/settings_json"][()])["teachers"] == ["convnet", "mlp"]
    assert {k: st_[k] for k in sb} == sb
    text = describe(tmp_path / "s.h5")
    for needle in (f"{E} epochs x {N} samples", "top-2 probs float16", "temperature 4", "CutMix",
                   "micro-batches of 2", "convnet, mlp", f"replay labels {sb['replay_labels']} B",
                   f"replay params {sb['replay_params']} B"):
        assert needle in text, needle


def test_writer_refuses_bad_replay(tmp_path: Path) -> None:
    rp = replay()
    rp.crops[0, 0] = torch.tensor([5, 5, 6, 6], dtype=torch.int16)
    with pytest.raises(ValueError, match="crop box lies outside"):
        save_synthetic(make_set(rp), tmp_path / "s.h5")
    with pytest.raises(ValueError, match="replay labels cover"):
        make_set(replay()).__class__(images=torch.zeros(N + 1, *SHAPE), labels=torch.zeros(N + 1, dtype=torch.long),
                                     num_classes=K, method="x", dataset="toy", ipc=IPC, replay=replay())
    assert not list(tmp_path.iterdir())


def _put(f: h5py.File, name: str, data) -> None:
    path = f"soft_labels/replay/{name}"
    if path in f:
        del f[path]
    f.create_dataset(path, data=data)


def _set(name: str, index, value):
    def fn(f):
        arr = f[f"soft_labels/replay/{name}"][()]
        arr[index] = value
        _put(f, name, arr)
    return fn


BAD = {
    "crop_outside": (_set("crops", (0, 0), [5, 5, 4, 4]), "crop box lies outside"),
    "crop_negative": (_set("crops", (0, 0, 0), -1), r"crops has values outside"),
    "crop_huge": (lambda f: _put(f, "crops", np.full((E, N, 4), 2**40, dtype=np.int64)), "crops has values outside"),
    "partner_range": (_set("partners", (1, 2), N), "CutMix partner index lies outside"),
    "box_outside": (_set("mix_boxes", (0, 0), [0, 0, 7, 2]), "mix_boxes has values outside"),
    "box_inverted": (_set("mix_boxes", (0, 0), [3, 0, 1, 2]), "CutMix box lies outside"),
    "flip_two": (_set("flips", (0, 0), 2), "flips holds values other than 0 and 1"),
    "index_range": (_set("indices", (0, 0, 0), K), "top-k class index lies outside"),
    "order_not_perm": (lambda f: _put(f, "order", np.zeros((E, N), "i4")), "not a permutation"),
    "values_nan": (_set("values", (0, 0, 0), np.nan), "not all finite"),
    "values_shape": (lambda f: _put(f, "values", np.zeros((E, N, K + 1), "f2")), "indices has shape"),
    "values_wide": (lambda f: (_put(f, "values", np.zeros((E, N, K + 1), "f2")),
                               _put(f, "indices", np.zeros((E, N, K + 1), "i2"))), "values has shape"),
    "crops_shape": (lambda f: _put(f, "crops", np.zeros((E, N + 1, 4), "i2")), r"crops has shape"),
    "crops_zero_epochs": (lambda f: _put(f, "crops", np.zeros((0, N, 4), "i2")), r"expected \(E >= 1"),
    "flips_float": (lambda f: _put(f, "flips", np.zeros((E, N), "f4")), "flips has type float"),
    "partners_alone": (lambda f: f.__delitem__("soft_labels/replay/mix_boxes"), "needs both partners and mix_boxes"),
    "bad_kind": (lambda f: f["soft_labels/replay"].attrs.__setitem__("kind", np.bytes_(b"logits")),
                 "top-k labels must be 'probs'"),
    "order_without_microbatch": (lambda f: f["soft_labels/replay"].attrs.__setitem__("micro_batch", 0),
                                 "order without a micro_batch"),
    "no_temperature": (lambda f: f["soft_labels/replay"].attrs.__delitem__("temperature"), "no attribute 'temperature'"),
    "size_zero": (lambda f: f["soft_labels/replay"].attrs.__setitem__("height", 0), "'height'.*outside"),
    "forged_values": (lambda f: (f.__delitem__("soft_labels/replay/values"), f.create_dataset(
        "soft_labels/replay/values", shape=(E, N, 10**7), dtype="f2", chunks=(1, 1, 1000), compression="gzip")),
        "far more than|values has shape"),
}


@pytest.mark.parametrize("case", BAD)
def test_rejects(tmp_path: Path, case: str) -> None:
    fn, phrase = BAD[case]
    path = tmp_path / "s.h5"
    save_synthetic(make_set(replay(topk=2, bssl=True)), path)
    with h5py.File(path, "r+") as f:
        fn(f)
    with pytest.raises(SyntheticFileError, match=phrase) as info:
        load_synthetic(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("fuzz_replay")
    out = []
    for name, make in VARIANTS.items():
        save_synthetic(make_set(make()), d / f"{name}.h5")
        out.append(d / f"{name}.h5")
    return out


@settings(max_examples=60, deadline=5000, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 2), cut=st.one_of(st.none(), st.floats(0, 1, exclude_max=True)),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8))
def test_corrupted_replay_files_never_escape(fuzz_files: list[Path], which, cut, flips) -> None:
    src = fuzz_files[which]
    data = bytearray(src.read_bytes())
    for where, value in flips:
        data[int(where * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = src.parent / "mutant.h5"
    path.write_bytes(bytes(data))
    try:
        syn = load_synthetic(path)
    except SyntheticFileError:
        return
    rp = syn.replay
    if rp is not None:  # whatever loads is internally consistent and replayable
        assert rp.problem(syn.num_images) == "" and rp.range_problem(tuple(syn.images.shape[2:])) == ""
        x = rp.inputs(syn.images, rp.epochs - 1, torch.arange(syn.num_images))
        assert x.shape == (syn.num_images, syn.images.shape[1], *rp.size)
        assert torch.isfinite(rp.targets(0, torch.arange(syn.num_images))).all() or rp.kind == "logits"
