import numpy as np
import pytest
import torch

from dsdistill.data import load_real, stratified_split
from dsdistill.errors import DataNotFoundError, UnknownNameError


def test_arrays_layout_loads_normalised_with_its_own_stats(tiny_real):
    r = tiny_real
    assert r.num_classes == 4 and r.image_shape == (1, 16, 16)
    assert r.class_names == ["class0", "class1", "class2", "class3"]
    assert len(r.train_labels) + len(r.val_labels) == 96 and len(r.test_labels) == 40
    pixels = r.to_pixels(r.train_images)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert len(r.fingerprint) == 16


def test_validation_split_is_stratified_disjoint_and_deterministic():
    labels = torch.arange(5).repeat_interleave(40)
    tr, va = stratified_split(labels, 0.1)
    tr2, va2 = stratified_split(labels, 0.1)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    assert len(set(tr.tolist()) & set(va.tolist())) == 0 and len(tr) + len(va) == 200
    assert torch.bincount(labels[va]).tolist() == [4] * 5


def test_sample_indices_are_distinct_and_of_the_right_class(tiny_real):
    g = torch.Generator().manual_seed(0)
    idx = tiny_real.sample_indices(5, g)
    assert idx.shape == (4, 5)
    for c in range(4):
        assert (tiny_real.train_labels[idx[c]] == c).all()
        assert len(set(idx[c].tolist())) == 5
    batch = tiny_real.sample_all(3, g)
    assert batch.shape == (12, 1, 16, 16)


def test_indices_of_matches_labels(tiny_real):
    for c in range(4):
        idx = tiny_real.indices_of(c)
        assert torch.equal(idx, (tiny_real.train_labels == c).nonzero().flatten())


def test_zca_space(tiny_name):
    r = load_real(tiny_name, zca=True)
    assert r.space == "zca" and r.zca is not None
    back = r.to_pixels(r.train_images)
    assert back.min() > -1e-3 and back.max() < 1 + 1e-3


def test_unknown_dataset_lists_choices():
    with pytest.raises(UnknownNameError, match="choose one of: .*cifar10.*mnist"):
        load_real("imagenet-42")


def test_missing_data_root_and_missing_files_are_clear(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_real("cifar10", tmp_path / "nope")
    with pytest.raises(DataNotFoundError, match=r"CIFAR-10 not found under .*--download"):
        load_real("cifar10", tmp_path)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_real(f"arrays:{tmp_path / 'missing'}")
    (tmp_path / "partial").mkdir()
    np.save(tmp_path / "partial" / "train_images.npy", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataNotFoundError, match="missing train_labels.npy"):
        load_real(f"arrays:{tmp_path / 'partial'}")


def test_fashionmnist_labels_only_names_the_missing_files(shared_root):
    with pytest.raises(DataNotFoundError, match="found only .*labels"):
        load_real("fashionmnist", shared_root)


def test_mnist_real(mnist):
    assert mnist.image_shape == (1, 28, 28) and mnist.num_classes == 10
    assert len(mnist.train_labels) + len(mnist.val_labels) == 60000 and len(mnist.test_labels) == 10000
    counts = torch.bincount(torch.cat([mnist.train_labels, mnist.val_labels])).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # MANIFEST
    assert abs(mnist.train_images.mean().item()) < 0.01 and abs(mnist.train_images.std().item() - 1) < 0.01


def test_shipped_mnist_is_used_without_a_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DSDISTILL_DATA", str(tmp_path))  # an empty root: falls back to the shipped copy
    monkeypatch.setenv("DSDISTILL_CACHE", str(tmp_path / "cache"))
    from dsdistill.data.loaders import load_idx

    raw = load_idx("mnist", tmp_path, download=False)
    assert raw.train_x.shape == (60000, 1, 28, 28) and "embedded" in raw.source
    assert not any((tmp_path / "MNIST").glob("*"))  # nothing written into the data root


@pytest.mark.slow
def test_cifar10_array_layout(shared_root):
    r = load_real("cifar10", shared_root)
    assert r.image_shape == (3, 32, 32) and len(r.test_labels) == 10000
    assert r.class_names[0] == "airplane"
