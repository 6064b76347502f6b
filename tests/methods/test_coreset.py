import pytest
import torch

from dsdistill.methods.coreset import herding, k_center
from dsdistill.registry import CONDENSERS


def test_herding_tracks_the_mean_better_than_random():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(500, 16, generator=g) * torch.linspace(0.1, 3, 16)
    idx = herding(feats, 10)
    assert len(set(idx.tolist())) == 10
    gap = (feats[idx].mean(0) - feats.mean(0)).norm()
    rand_gaps = [(feats[torch.randperm(500, generator=g)[:10]].mean(0) - feats.mean(0)).norm() for _ in range(50)]
    assert gap < min(rand_gaps)


def test_k_center_covers_clusters():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    g = torch.Generator().manual_seed(0)
    feats = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centres])
    idx = k_center(feats, 4)
    assert sorted((idx // 50).tolist()) == [0, 1, 2, 3]  # one pick per cluster


@pytest.mark.parametrize("name", ["random", "herding", "k-center"])
def test_selection_condensers_pick_real_images_of_each_class(name, tiny_real):
    cls = CONDENSERS.get(name)
    params = {} if name == "random" else {"embed_epochs": 1, "embed_train_size": 40}
    syn = cls.from_settings("tiny", 3, params).condense(tiny_real, 3, seed=0, progress=False)
    idx = torch.tensor(syn.provenance["selected_indices"])
    assert torch.equal(syn.images, tiny_real.train_images[idx])
    assert torch.equal(tiny_real.train_labels[idx], syn.labels)
    again = cls.from_settings("tiny", 3, params).condense(tiny_real, 3, seed=0, progress=False)
    assert torch.equal(syn.images, again.images)
