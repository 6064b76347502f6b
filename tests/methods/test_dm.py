import pytest
import torch

from dsdistill.condenser import Checkpointer, Interrupted
from dsdistill.methods.dm import DM, initial_images
from dsdistill.models import build_model


def test_batched_loss_equals_the_reference_per_class_loop(tiny_real):
    """All classes in one forward == sum over classes of per-class forwards (instance norm is per sample)."""
    K, ipc, n = 4, 3, 8
    net = build_model("convnet", K, tiny_real.image_shape, seed=0)
    g = torch.Generator().manual_seed(0)
    real = tiny_real.sample_all(n, g)
    syn = torch.randn(K * ipc, *tiny_real.image_shape, generator=g)
    batched = (net.embed(real).view(K, n, -1).mean(1) - net.embed(syn).view(K, ipc, -1).mean(1)).pow(2).sum()
    loop = sum((net.embed(real[c * n:(c + 1) * n]).mean(0) - net.embed(syn[c * ipc:(c + 1) * ipc]).mean(0))
               .pow(2).sum() for c in range(K))
    torch.testing.assert_close(batched, loop, rtol=1e-5, atol=1e-5)


def test_real_initialisation_is_class_major(tiny_real):
    images = initial_images(tiny_real, 2, "real", torch.Generator().manual_seed(1))
    flat = tiny_real.train_images.flatten(1)
    for i, img in enumerate(images):
        j = (flat == img.flatten()).all(1).nonzero().flatten()
        assert len(j) >= 1 and tiny_real.train_labels[j[0]] == i // 2


def test_dm_reduces_its_loss_and_is_deterministic(tiny_real):
    cfg = {"iterations": 12, "batch_real": 8}
    a = DM.from_settings("tiny", 2, cfg).condense(tiny_real, 2, seed=3, progress=False)
    b = DM.from_settings("tiny", 2, cfg).condense(tiny_real, 2, seed=3, progress=False)
    c = DM.from_settings("tiny", 2, cfg).condense(tiny_real, 2, seed=4, progress=False)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.images.shape == (8, 1, 16, 16) and a.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert a.provenance["method"] == "dm" and a.provenance["seed"] == 3 and a.protocol == "dc"
    init = initial_images(tiny_real, 2, "real", __import__("dsdistill.rng", fromlist=["x"]).make_generator(3, "dm", "init"))
    assert not torch.equal(a.images, init)  # the images moved


def test_resume_after_interruption_is_bitwise_identical(tiny_real, tmp_path, stop_at):
    cfg = {"iterations": 10, "batch_real": 8}
    full = DM.from_settings("tiny", 2, cfg).condense(tiny_real, 2, seed=7, progress=False)
    with pytest.raises(Interrupted):
        DM.from_settings("tiny", 2, cfg).condense(tiny_real, 2, seed=7, progress=False,
                                                  checkpoint=stop_at(tmp_path / "run.ckpt", 4, every=3))
    assert torch.load(tmp_path / "run.ckpt", weights_only=True)["iteration"] == 4
    resumed = DM.from_settings("tiny", 2, cfg).condense(
        tiny_real, 2, seed=7, progress=False, checkpoint=Checkpointer(tmp_path / "run.ckpt", every=3, resume=True))
    assert torch.equal(full.images, resumed.images)


def test_nan_steps_are_rolled_back_then_stop(tiny_real):
    import pytest

    from dsdistill.errors import NumericalError

    with pytest.raises(NumericalError, match="lr_img"):
        DM.from_settings("tiny", 1, {"iterations": 8, "batch_real": 4, "lr_img": float("inf")}).condense(
            tiny_real, 1, seed=0, progress=False)
