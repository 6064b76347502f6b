"""Expert files: API round trip, fp16 storage, bitwise-stable writes, hostile files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

import dsdistill.models  # noqa: F401
from dsdistill.errors import ConfigError, DataNotFoundError, SyntheticFileError
from dsdistill.experts import ExpertStore, flatten_params, param_spec, unflatten_params, write_expert
from dsdistill.experts.store import expert_path
from dsdistill.models import build_model


def _net():
    return build_model("convnet", 4, (1, 16, 16), seed=0, width=8)


def _write(directory, index, snaps, epochs, dtype="float32", **extra):
    net = _net()
    names, shapes = param_spec(net)
    meta = dict(model="convnet", dataset="arrays:x", recipe="mtt", space="normalized", num_classes=4,
                image_shape=(1, 16, 16), param_names=names, param_shapes=shapes, expert=index, seed=100 + index,
                epochs_trained=epochs[-1], test_accuracy=0.5, val_accuracy=0.25, model_kwargs={"width": 8})
    meta.update(extra)
    write_expert(expert_path(directory, index), snaps, epochs, meta, dtype=dtype,
                 history={"train_loss": [1.0] * epochs[-1]}, config={"lr": 0.01})


def _snaps(t, p, seed=0):
    return torch.randn(t, p, generator=torch.Generator().manual_seed(seed))


def test_flatten_unflatten_functional_call():
    net = _net()
    flat = flatten_params(net)
    names, shapes = param_spec(net)
    assert flat.dtype == torch.float32 and flat.shape == (sum(p.numel() for p in net.parameters()),)
    params = unflatten_params(flat, names, shapes)
    x = torch.randn(3, 1, 16, 16)
    assert torch.equal(torch.func.functional_call(net, params, (x,)), net(x))
    cl = net.to(memory_format=torch.channels_last)  # memory format does not change the order
    assert torch.equal(flatten_params(cl), flat)
    with pytest.raises(ValueError):
        unflatten_params(flat[:-1], names, shapes)


def test_round_trip_and_store_api(tmp_path):
    p = flatten_params(_net()).numel()
    trajs = [_snaps(4, p, seed=i) for i in range(2)]
    for i in range(2):
        _write(tmp_path, i, trajs[i], [0, 1, 2, 3])
    store = ExpertStore.open(tmp_path)
    assert (store.model, store.dataset, store.recipe, store.space) == ("convnet", "arrays:x", "mtt", "normalized")
    assert store.num_classes == 4 and store.image_shape == (1, 16, 16) and store.num_experts == 2
    assert store.epochs == 3 and store.stored_epochs == [0, 1, 2, 3] and store.num_params == p
    assert store.param_names == param_spec(_net())[0]
    assert torch.equal(store.snapshot(1, 2), trajs[1][2])
    assert torch.equal(store.snapshots(0, [3, 0]), trajs[0][[3, 0]])
    assert torch.equal(store.trajectory(1), trajs[1])
    assert [i["seed"] for i in store.infos] == [100, 101]
    assert store.infos[0]["test_accuracy"] == 0.5 and store.infos[0]["val_accuracy"] == 0.25
    with pytest.raises(ConfigError, match="not stored"):
        store.snapshot(0, 4)
    with pytest.raises(ConfigError, match="out of range"):
        store.snapshot(2, 0)
    assert store.model_kwargs == {"width": 8}
    net = store.build_model(seed=3)
    assert flatten_params(net).numel() == p


def test_build_model_layout_mismatch(tmp_path):
    p = flatten_params(_net()).numel()
    _write(tmp_path, 0, _snaps(2, p), [0, 1], model_kwargs={})
    with pytest.raises(SyntheticFileError, match="do not match"):
        ExpertStore.open(tmp_path).build_model()  # stored layout is width 8, built width 128


def test_fp16_storage(tmp_path):
    p = flatten_params(_net()).numel()
    snaps = _snaps(3, p)
    _write(tmp_path, 0, snaps, [0, 2, 5], dtype="float16")
    store = ExpertStore.open(tmp_path)
    assert store.dtype == "float16" and store.stored_epochs == [0, 2, 5]
    got = store.snapshot(0, 5)
    assert got.dtype == torch.float32 and torch.equal(got, snaps[2].half().float())
    with h5py.File(expert_path(tmp_path, 0), "r") as f:
        assert f["snapshots"].id.get_storage_size() == 3 * (p * 2 + 4)  # fp16 + a fletcher32 sum per row


def test_writes_are_bitwise_stable(tmp_path):
    p = flatten_params(_net()).numel()
    snaps = _snaps(2, p)
    _write(tmp_path / "a", 0, snaps, [0, 1]) if (tmp_path / "a").mkdir() is None else None
    _write(tmp_path / "b", 0, snaps, [0, 1]) if (tmp_path / "b").mkdir() is None else None
    assert expert_path(tmp_path / "a", 0).read_bytes() == expert_path(tmp_path / "b", 0).read_bytes()


def test_missing_and_empty_directory(tmp_path):
    with pytest.raises(DataNotFoundError):
        ExpertStore.open(tmp_path / "nope")
    with pytest.raises(DataNotFoundError):
        ExpertStore.open(tmp_path)


def test_inconsistent_experts(tmp_path):
    p = flatten_params(_net()).numel()
    _write(tmp_path, 0, _snaps(2, p), [0, 1])
    _write(tmp_path, 1, _snaps(2, p), [0, 1], recipe="ftd")
    with pytest.raises(SyntheticFileError, match="recipe differs"):
        ExpertStore.open(tmp_path)


def _mutate(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


@pytest.mark.parametrize("case", ["truncated", "garbage", "foreign", "newer", "huge_shape", "wrong_dtype",
                                  "bad_epochs", "shape_mismatch", "bad_accuracy", "missing", "nan",
                                  "bad_recipe", "vlen_attr"])
def test_corrupt_or_forged_files(tmp_path, case):
    p = flatten_params(_net()).numel()
    _write(tmp_path, 0, _snaps(3, p), [0, 1, 2])
    path = expert_path(tmp_path, 0)
    if case == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "garbage":
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(1000))
    elif case == "foreign":
        path.unlink()
        with h5py.File(path, "w") as f:
            f["x"] = np.zeros(3)
    elif case == "newer":
        _mutate(path, lambda f: f.attrs.__setitem__("format_version", np.int64(7)))
    elif case == "huge_shape":
        def forge(f):
            del f["snapshots"]
            f.create_dataset("snapshots", shape=(3, 10**12), dtype="f4", chunks=(1, 1024))
            del f["param_shapes"]
            f["param_shapes"] = np.array([[10**12] + [-1] * 7] + [[1] + [-1] * 7] * (len(param_spec(_net())[0]) - 1))
        _mutate(path, forge)
    elif case == "wrong_dtype":
        def forge(f):
            data = f["snapshots"][()]
            del f["snapshots"]
            f["snapshots"] = data.astype(np.int32)
        _mutate(path, forge)
    elif case == "bad_epochs":
        def forge(f):
            del f["epochs"]
            f["epochs"] = np.array([0, 2, 1])
        _mutate(path, forge)
    elif case == "shape_mismatch":
        def forge(f):
            data = f["snapshots"][()]
            del f["snapshots"]
            f["snapshots"] = data[:, :-1]
        _mutate(path, forge)
    elif case == "bad_accuracy":
        _mutate(path, lambda f: f.attrs.__setitem__("test_accuracy", 87.5))
    elif case == "missing":
        _mutate(path, lambda f: f.__delitem__("param_names"))
    elif case == "nan":
        def forge(f):
            f["snapshots"][1, 5] = np.nan
        _mutate(path, forge)
    elif case == "bad_recipe":
        _mutate(path, lambda f: f.attrs.__setitem__("recipe", np.array(b"sgd", dtype="S3")))
    elif case == "vlen_attr":
        _mutate(path, lambda f: f.attrs.__setitem__("model", "convnet"))  # variable-length string
    with pytest.raises(SyntheticFileError):
        store = ExpertStore.open(tmp_path)
        store.snapshot(0, 1)
