"""SRe2L recover: BN loss, augmentation, clipping, RDED patches, the condenser, resume, torchrun, leakage."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import dsdistill.methods  # noqa: F401
from dsdistill.cli import main
from dsdistill.condenser import Checkpointer, Interrupted
from dsdistill.errors import ConfigError, DataNotFoundError
from dsdistill.io import load_synthetic
from dsdistill.methods.sre2l.patches import class_patches, select_patches, stitch
from dsdistill.methods.sre2l.recover import BNStatLoss, ValidRange, batch_augment, committee_loss, cosine_lr
from dsdistill.registry import CONDENSERS

FAST = {"iterations": 3, "label_epochs": 2, "patch_pool": 8, "classes_per_batch": 2}


def _bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(5))
    net(torch.randn(2, 3, 4, 4))
    for bn in (net[0], net[2]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return net.eval()


def test_bn_loss_matches_hand_computation():
    net = _bn_net()
    hooks = BNStatLoss(net)
    x = torch.randn(6, 3, 4, 4)
    net(x)

    def dist(inp, bn):
        mean = inp.mean((0, 2, 3))
        var = ((inp - mean.view(1, -1, 1, 1)) ** 2).mean((0, 2, 3))  # biased
        return (bn.running_mean - mean).pow(2).sum().sqrt() + (bn.running_var - var).pow(2).sum().sqrt()

    first = dist(x, net[0])
    second = dist(net[1](net[0](x)), net[2])
    assert torch.allclose(hooks.total(10.0), 10 * first + second, atol=1e-5)
    assert torch.allclose(hooks.total(1.0), first + second, atol=1e-5)
    assert torch.allclose(hooks.total(10.0) - hooks.total(1.0), 9 * hooks.layers[0], atol=1e-5)  # first BN x10
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    loss, parts = committee_loss(x, targets, [net], [hooks], [0.7], r_bn=0.01, first_bn_multiplier=10.0)
    expected = 0.7 * (F.cross_entropy(net(x), targets) + 0.01 * (10 * first + second))
    assert torch.allclose(loss, expected, atol=1e-5) and len(parts) == 1
    hooks.remove()
    assert not net[0]._forward_hooks


def test_batch_augment_is_one_draw_for_the_batch_and_reproducible():
    x = torch.randn(1, 1, 8, 8).repeat(3, 1, 1, 1)
    out = batch_augment(x, torch.Generator().manual_seed(1), random_crop=True, crop_scale_min=0.08, flip=True,
                        jitter=2)
    again = batch_augment(x, torch.Generator().manual_seed(1), random_crop=True, crop_scale_min=0.08, flip=True,
                          jitter=2)
    assert out.shape == x.shape and torch.equal(out, again)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    rolled = batch_augment(x, torch.Generator().manual_seed(1), random_crop=False, crop_scale_min=1, flip=False,
                           jitter=3)
    assert torch.equal(torch.sort(rolled.flatten()).values, torch.sort(x.flatten()).values)  # a pure roll
    assert cosine_lr(0.25, 0, 10) == 0.25 and cosine_lr(0.25, 5, 10) == pytest.approx(0.125)


def test_clip_to_valid_range(tiny_real):
    clip = ValidRange(tiny_real)
    x = torch.randn(4, 1, 16, 16) * 50
    clip.clip_(x)
    pixels = tiny_real.to_pixels(x)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert math.isclose(float(pixels.min()), 0, abs_tol=1e-5) and math.isclose(float(pixels.max()), 1, abs_tol=1e-5)


def test_rded_selection_picks_lowest_cross_entropy():
    scores = torch.tensor([[3.0, 0.5, 2.0], [0.1, 4.0, 5.0], [1.0, 1.5, 0.9], [7.0, 6.0, 8.0]])
    crops = torch.arange(12.0).view(4, 3, 1, 1, 1)  # crop (i, j) has value 3 i + j
    chosen, chosen_scores = select_patches(crops, scores, 3)
    assert chosen.flatten().tolist() == [3.0, 1.0, 8.0]  # best per image: 0.5, 0.1, 0.9, 6.0 -> 3 smallest
    assert chosen_scores.tolist() == pytest.approx([0.1, 0.5, 0.9])


def test_class_patches_follow_the_scorer():
    # Constant images; the scorer is confident exactly in proportion to the brightness, so the
    # kept patches are the brightest images whatever the crop.
    values = torch.arange(10.0)
    images = values.view(10, 1, 1, 1).expand(10, 1, 8, 8).clone()

    def scorer(x):
        bright = x.mean((1, 2, 3))
        return torch.stack([bright, -bright], 1)

    out = class_patches(images, 0, 2, scorer, torch.Generator().manual_seed(0), factor=2, pool=10, crops=3,
                        scale_min=0.2)
    assert out.shape == (2, 1, 8, 8)
    quads = [out[0, 0, :4, :4], out[0, 0, :4, 4:], out[0, 0, 4:, :4], out[0, 0, 4:, 4:],
             out[1, 0, :4, :4], out[1, 0, :4, 4:], out[1, 0, 4:, :4], out[1, 0, 4:, 4:]]
    assert [float(q.mean()) for q in quads] == pytest.approx([9, 8, 7, 6, 5, 4, 3, 2])  # row-major, best first
    patches = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 4, 4)
    assert stitch(patches, 2)[0, 0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


def test_class_selection_covers_the_class_in_the_scorer_space():
    from dsdistill.methods.coreset import herding, k_center
    from dsdistill.methods.sre2l.patches import class_selection

    class Scorer(nn.Module):  # features = mean brightness and its square
        def embed(self, x):
            m = x.mean((1, 2, 3))
            return torch.stack([m, m * m], 1)

        def forward(self, x):
            return self.embed(x)

    values = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 10.0])
    images = values.view(6, 1, 1, 1).expand(6, 1, 4, 4).clone()
    feats = torch.stack([values, values * values], 1)
    for rule, fn in (("herding", herding), ("kcenter", k_center)):
        out = class_selection(images, 3, Scorer(), torch.Generator().manual_seed(0), rule=rule, pool=100)
        assert out.mean((1, 2, 3)).tolist() == values[fn(feats, 3)].tolist(), rule
    # k-center reaches the outlier, herding keeps near the mean; a pool limits the candidates
    assert 10.0 in class_selection(images, 2, Scorer(), torch.Generator(), rule="kcenter", pool=6).flatten().tolist()
    small = class_selection(images, 2, Scorer(), torch.Generator().manual_seed(3), rule="herding", pool=2)
    assert small.shape == (2, 1, 4, 4)
    with pytest.raises(ValueError, match="pool of 2"):
        class_selection(images, 3, Scorer(), torch.Generator(), rule="herding", pool=2)


def test_zero_iterations_keep_the_selected_real_images(tiny_real, tiny_teachers):
    syn = _sre2l({**FAST, "iterations": 0, "teachers": tiny_teachers, "init": "herding"}, tiny_real)
    real_rows = {tuple(x.flatten().tolist()) for x in tiny_real.train_images}
    assert all(tuple(x.flatten().tolist()) in real_rows for x in syn.images)  # unrecovered real images
    assert syn.provenance["final_loss_mean"] is None and syn.provenance["patch_scorer"]
    assert syn.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    recovered = _sre2l({**FAST, "iterations": 2, "teachers": tiny_teachers, "init": "herding"}, tiny_real)
    assert not torch.equal(recovered.images, syn.images)
    with pytest.raises(ConfigError, match="iterations must be >= 0"):
        _sre2l({**FAST, "iterations": -1, "teachers": tiny_teachers}, tiny_real)


def _sre2l(settings, tiny_real, ipc=2, seed=0, checkpoint=None, real=None):
    return CONDENSERS.get("sre2l").from_settings("tiny", ipc, settings).condense(
        real or tiny_real, ipc, seed=seed, progress=False, checkpoint=checkpoint)


def test_sre2l_condenses_with_replay_labels(tiny_real, tiny_teachers):
    syn = _sre2l({**FAST, "teachers": tiny_teachers, "init": "patches"}, tiny_real)
    assert syn.protocol == "softlabel" and syn.images.shape == (8, 1, 16, 16)
    pixels = syn.to_pixels()
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert syn.replay is not None and tuple(syn.replay.values.shape) == (2, 8, 4)
    best = max(syn.provenance["teachers"], key=lambda t: t["val_accuracy"])["name"]
    assert syn.provenance["voters"] == [[best], [best]] and syn.replay.settings["teachers"] == [best]
    again = _sre2l({**FAST, "teachers": tiny_teachers, "init": "patches"}, tiny_real)
    assert torch.equal(syn.images, again.images) and torch.equal(syn.replay.values, again.replay.values)
    noise = _sre2l({**FAST, "teachers": tiny_teachers, "init": "noise", "labels": "none"}, tiny_real)
    assert noise.replay is None and not torch.equal(noise.images, syn.images)


def test_recover_lowers_the_loss(tiny_real, tiny_teachers):
    first = _sre2l({**FAST, "iterations": 1, "teachers": tiny_teachers, "init": "noise", "labels": "none"}, tiny_real)
    longer = _sre2l({**FAST, "iterations": 30, "teachers": tiny_teachers, "init": "noise", "labels": "none"},
                    tiny_real)
    assert longer.provenance["final_loss_mean"] < first.provenance["final_loss_mean"]


def test_test_split_never_reaches_recover_or_labels(tiny_real, tiny_teachers):
    poisoned = replace(tiny_real, test_images=torch.full_like(tiny_real.test_images, float("nan")),
                       test_labels=torch.zeros_like(tiny_real.test_labels))
    for name in ("sre2l", "cvdd"):
        settings = {**FAST, "teachers": tiny_teachers, "init": "patches"}
        clean = CONDENSERS.get(name).from_settings("tiny", 2, settings).condense(tiny_real, 2, progress=False)
        dirty = CONDENSERS.get(name).from_settings("tiny", 2, settings).condense(poisoned, 2, progress=False)
        assert torch.equal(clean.images, dirty.images), name
        assert torch.equal(clean.replay.values, dirty.replay.values), name


def test_checkpoint_resume_equals_uninterrupted(tiny_real, tiny_teachers, tmp_path, stop_after_saves):
    settings = {**FAST, "iterations": 5, "teachers": tiny_teachers, "init": "real", "random_crop": True,
                "flip": True}
    full = _sre2l(settings, tiny_real)
    with pytest.raises(Interrupted):
        _sre2l(settings, tiny_real, checkpoint=stop_after_saves(tmp_path / "c.ckpt", 4))  # mid-item: item 2, step 1
    resumed = _sre2l(settings, tiny_real, checkpoint=Checkpointer(tmp_path / "c.ckpt", every=2, resume=True))
    assert torch.equal(full.images, resumed.images)
    assert torch.equal(full.replay.values, resumed.replay.values)


def test_bad_input(tiny_real, tiny_teachers, tmp_path):
    with pytest.raises(ConfigError, match="teachers directory"):
        _sre2l({}, tiny_real)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        _sre2l({"teachers": str(tmp_path / "nowhere")}, tiny_real)
    with pytest.raises(ConfigError, match="init must be"):
        _sre2l({"teachers": tiny_teachers, "init": "magic"}, tiny_real)
    with pytest.raises(ConfigError, match="does not fit"):
        _sre2l({"teachers": tiny_teachers}, tiny_real, real=replace(tiny_real, space="zca"))
    from dsdistill.teachers import TeacherRecipe, train_teachers

    train_teachers(tiny_real, ["convnet"], tmp_path / "nobn", recipe=TeacherRecipe(epochs=1), progress=False)
    with pytest.raises(ConfigError, match="BatchNorm"):
        _sre2l({"teachers": str(tmp_path / "nobn")}, tiny_real)


def test_torchrun_two_processes_equal_one(tiny_name, tiny_teachers, tmp_path, torchrun):
    args = ["condense", "-m", "sre2l", "-d", tiny_name, "--ipc", "2", "-q", "--threads", "1",
            "-p", f"teachers={tiny_teachers}", "-p", "init=patches", "-p", "classes_per_batch=2",
            "-p", "iterations=3", "-p", "label_epochs=2", "-p", "patch_pool=8"]
    res = CliRunner().invoke(main, args + ["-o", str(tmp_path / "one.h5")])
    assert res.exit_code == 0, res.output
    torchrun([*args, "-o", str(tmp_path / "two.h5")])
    one, two = load_synthetic(tmp_path / "one.h5"), load_synthetic(tmp_path / "two.h5")
    assert torch.equal(one.images, two.images)
    assert torch.equal(one.replay.values, two.replay.values)
    assert two.provenance["processes"] == 2 and one.provenance["processes"] == 1
    assert not list(tmp_path.glob("*.ckpt*"))


def test_digits_never_flip_in_recover_or_labels():
    from dsdistill.registry import CONDENSERS

    for name in ("sre2l", "cvdd"):
        mnist = CONDENSERS.get(name).from_settings("mnist", 10).config
        cifar = CONDENSERS.get(name).from_settings("cifar10", 10).config
        assert (mnist.flip, mnist.label_flip) == (False, False)
        assert cifar.label_flip is True
    assert CONDENSERS.get("cvdd").from_settings("cifar10", 10).config.flip is True
