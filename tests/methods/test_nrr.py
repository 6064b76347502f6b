"""NRR-DD: exact CAMs, CIDD selection, the non-critical mask, DBR labels, the condenser and its resume."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import dsdistill.methods  # noqa: F401
from dsdistill.condenser import Checkpointer, Interrupted
from dsdistill.errors import ConfigError, SyntheticFileError
from dsdistill.io import load_synthetic, save_synthetic
from dsdistill.methods.nrr.cam import ClassActivation
from dsdistill.methods.nrr.dbr import DBRSpec, check_labels, dbr_labels
from dsdistill.methods.nrr.init import box_means, critical_patches
from dsdistill.methods.nrr.refine import refine_mask, refine_step
from dsdistill.methods.sre2l.recover import BNStatLoss, ValidRange
from dsdistill.models import build_model
from dsdistill.registry import CONDENSERS
from dsdistill.softlabels.params import resized_crop
from dsdistill.teachers import load_committee

FAST = {"iterations": 3, "label_epochs": 2, "pool": 8, "crops": 3}


def _nrr(settings, real, ipc=2, checkpoint=None):
    return CONDENSERS.get("nrr").from_settings("tiny", ipc, settings).condense(real, ipc, seed=0, progress=False,
                                                                                checkpoint=checkpoint)


@pytest.mark.parametrize("name", ["convnet_bn", "shufflenetv2", "resnet18_bn"])
def test_cam_decomposition_sums_to_the_logit(tiny_real, name):
    net = build_model(name, 4, tiny_real.image_shape, seed=1).eval()
    x = tiny_real.train_images[:6]
    cam = ClassActivation(net, x)
    assert cam.exact
    classes = torch.tensor([0, 1, 2, 3, 0, 1])
    raw = cam.decompose(x, classes)
    head = net.classifier if hasattr(net, "classifier") else net.fc
    with torch.no_grad():
        logits = net(x)
    assert raw.shape[1:] == cam.map_size and raw.shape[1] * raw.shape[2] > 1
    assert torch.allclose(raw.sum((1, 2)) + head.bias[classes], logits[torch.arange(6), classes], atol=1e-4)
    maps = cam.maps(x, classes)
    assert maps.shape == (6, 16, 16) and maps.min() >= 0 and maps.max() <= 1
    assert torch.allclose(maps.amax((1, 2)), torch.ones(6)) and torch.allclose(maps.amin((1, 2)), torch.zeros(6))


def test_convnet_cam_is_the_linear_heads_spatial_share(tiny_real):
    net = build_model("convnet_bn", 4, tiny_real.image_shape, seed=2).eval()
    x = tiny_real.train_images[:3]
    cam = ClassActivation(net, x)
    with torch.no_grad():
        feats = net.features(x)  # (3, 128, 2, 2)
    w = net.classifier.weight.view(4, *feats.shape[1:])
    expected = (w[2][None] * feats).sum(1)
    assert cam.layer == "features"
    assert torch.allclose(cam.decompose(x, torch.full((3,), 2)), expected, atol=1e-5)


def test_cam_needs_a_spatial_map(tiny_real):
    with pytest.raises(ConfigError, match="spatial feature map"):
        ClassActivation(build_model("mlp", 4, tiny_real.image_shape, seed=0), tiny_real.train_images[:2])


def test_box_means_equal_brute_force():
    maps = torch.rand(5, 9, 7, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[0, 0, 9, 7], [1, 2, 3, 4], [8, 6, 1, 1], [2, 0, 5, 7], [0, 3, 2, 2]])
    brute = torch.stack([maps[i, y:y + h, x:x + w].mean() for i, (y, x, h, w) in enumerate(boxes.tolist())])
    assert torch.allclose(box_means(maps, boxes), brute, atol=1e-6)


def test_cidd_picks_the_least_confident_critical_crops(tiny_real, tiny_teachers):
    teacher = load_committee(tiny_teachers, ["convnet_bn"], real=tiny_real)[0].model
    cam = ClassActivation(teacher, tiny_real.train_images[:4])
    imgs = tiny_real.train_images[tiny_real.indices_of(1)]

    def ce(out):
        with torch.no_grad():
            return F.cross_entropy(teacher(out), torch.full((len(out),), 1), reduction="none")

    def g():
        return torch.Generator().manual_seed(3)

    low = critical_patches(imgs, 1, 3, cam, g(), beta=1, pool=12, crops=4, scale_min=0.3, select="lowest")
    high = critical_patches(imgs, 1, 3, cam, g(), beta=1, pool=12, crops=4, scale_min=0.3, select="highest")
    assert low.shape == high.shape == (3, 1, 16, 16)
    # same candidates; with "lowest" the picks are the least confident correct ones, so their CE is higher
    assert ce(low).mean() > ce(high).mean()
    with torch.no_grad():
        ok = (teacher(low).argmax(1) == 1).int()
    assert torch.equal(ok, ok.sort(descending=True).values)  # crops the teacher gets right come first
    c_low = ce(low)[ok.bool()]
    assert (c_low[:-1] >= c_low[1:]).all()  # ... least confident first
    stitched = critical_patches(imgs, 1, 2, cam, g(), beta=4, pool=12, crops=4, scale_min=0.3)
    assert stitched.shape == (2, 1, 16, 16)
    whole = critical_patches(imgs, 1, 3, cam, g(), beta=1, pool=12, crops=4, scale_min=1.0)
    dist = (whole[:, None] - imgs[None]).abs().flatten(2).amax(2)  # (3, n): each output is a real image
    assert (dist.amin(1) < 1e-5).all()


@pytest.mark.parametrize("select", ["lowest", "highest"])
def test_cidd_slot_pool_keeps_the_extreme_of_each_random_group(tiny_real, tiny_teachers, select):
    teacher = load_committee(tiny_teachers, ["convnet_bn"], real=tiny_real)[0].model
    cam = ClassActivation(teacher, tiny_real.train_images[:4])
    imgs = tiny_real.train_images[tiny_real.indices_of(2)]
    k, count = 3, 4
    assert len(imgs) >= k * count
    out = critical_patches(imgs, 2, count, cam, torch.Generator().manual_seed(5), beta=1, pool=1, crops=2,
                           scale_min=1.0, select=select, slot_pool=k)
    # rebuild: the first draw orders the class; slot s holds the s-th group of k (pool is not used)
    groups = imgs[torch.randperm(len(imgs), generator=torch.Generator().manual_seed(5))[: k * count]].view(
        count, k, *imgs.shape[1:])
    with torch.no_grad():
        logits = teacher(groups.flatten(0, 1)).view(count, k, -1)
    ce = -logits.log_softmax(2)[..., 2]
    key = (ce if select == "highest" else -ce) + 1e6 * (logits.argmax(2) != 2)
    expected = groups[torch.arange(count), key.argmin(1)]
    assert torch.allclose(out, expected)
    picked = critical_patches(imgs, 2, count, cam, torch.Generator().manual_seed(5), beta=1, pool=1, crops=2,
                              scale_min=1.0, select=select, slot_pool=1)
    assert torch.equal(picked, groups.flatten(0, 1)[:count])  # k = 1: the first images of the random draw
    with pytest.raises(ConfigError, match="slot_pool"):
        _nrr({**FAST, "teachers": tiny_teachers, "slot_pool": -1}, tiny_real)


def test_mask_freezes_critical_pixels_and_refines_the_rest(tiny_real, tiny_teachers):
    teacher = load_committee(tiny_teachers, ["convnet_bn"], real=tiny_real)[0].model
    x0 = tiny_real.train_images[tiny_real.sample_indices(2, torch.Generator().manual_seed(0)).reshape(-1)]
    classes = torch.arange(4).repeat_interleave(2)
    cam = ClassActivation(teacher, x0)
    mask = refine_mask(cam, x0, classes, eps=0.6)
    assert torch.equal(mask, (0.6 - cam.maps(x0, classes)).clamp(min=0)[:, None])
    frozen = mask == 0
    assert 0 < frozen.float().mean() < 1
    x, bn, clip = x0.clone(), BNStatLoss(teacher), ValidRange(tiny_real)
    losses = [float(refine_step(x, classes, mask, teacher, bn, clip, eta=5.0, a_bn=0.01, first_bn_multiplier=10.0))
              for _ in range(8)]
    bn.remove()
    assert torch.equal(x[frozen], x0[frozen])  # bitwise: critical pixels never move
    assert (x[~frozen] != x0[~frozen]).float().mean() > 0.5
    assert losses[-1] < losses[0]
    assert x.min() >= clip.low.min() - 1e-6 and x.max() <= clip.high.max() + 1e-6


def test_dbr_values_are_the_teachers_cross_entropies(tiny_real, tiny_teachers):
    teacher = load_committee(tiny_teachers, ["convnet_bn"], real=tiny_real)[0].model
    images = tiny_real.train_images[:6]
    labels = tiny_real.train_labels[:6]
    spec = DBRSpec(3, 7, (16, 16), (0.3, 1.0), flip=True, mix="cutmix")
    dbr = dbr_labels(images, labels, teacher, spec, batch_size=4)
    assert dbr.shape == (3, 6, 2)
    for e in range(3):
        p = spec.params(e, 6)
        for i in range(6):
            j = int(p.partners[i])
            views = []
            for s in (i, j):  # independent rebuild: crop, flip, then paste the partner's box
                v = resized_crop(images[s:s + 1], p.crops[s:s + 1], (16, 16))
                views.append(v.flip(-1) if p.flips[s] else v)
            y1, x1, y2, x2 = p.mix_boxes[i].tolist()
            x = views[0].clone()
            x[..., y1:y2, x1:x2] = views[1][..., y1:y2, x1:x2]
            lam = 1 - (y2 - y1) * (x2 - x1) / 256
            with torch.no_grad():
                out = teacher(x)
            ce_i = F.cross_entropy(out, labels[i:i + 1])
            ce_j = F.cross_entropy(out, labels[j:j + 1])
            assert float(dbr[e, i, 0]) == pytest.approx(float(ce_i), rel=1e-4, abs=1e-5)
            assert float(dbr[e, i, 1]) == pytest.approx(float(lam * ce_i + (1 - lam) * ce_j), rel=1e-4, abs=1e-5)


def test_param_checksum_detects_changes():
    spec = DBRSpec(2, 5, (16, 16))
    values = torch.rand(2, 6, 2)
    check_labels(values, spec, 6, spec.checksum(6))
    with pytest.raises(SyntheticFileError, match="differ"):
        check_labels(values, spec, 6, replace(spec, seed=6).checksum(6))
    with pytest.raises(SyntheticFileError, match="differ"):
        check_labels(values, replace(spec, scale=(0.5, 1.0)), 6, spec.checksum(6))
    with pytest.raises(SyntheticFileError, match="shape"):
        check_labels(values[:, :5], spec, 6, spec.checksum(6))
    with pytest.raises(SyntheticFileError, match="negative or non-finite"):
        check_labels(values - 2, spec, 6, spec.checksum(6))


def test_nrr_condenses_with_dbr_labels(tiny_real, tiny_teachers, tmp_path):
    syn = _nrr({**FAST, "teachers": tiny_teachers}, tiny_real)
    assert syn.protocol == "dbr" and syn.images.shape == (8, 1, 16, 16)
    assert syn.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    comp = syn.components["dbr"]
    assert comp.part == "labels" and comp.values.shape == (2, 8, 2) and comp.values.dtype == torch.float16
    assert syn.storage_bytes()["component_labels"] == 2 * 8 * 2 * 2
    teacher = load_committee(tiny_teachers, ["convnet_bn"], real=tiny_real)[0]
    expected = dbr_labels(syn.images, syn.labels, teacher.model, DBRSpec.from_meta(comp.meta)).half()
    assert torch.equal(comp.values, expected)
    assert comp.meta["teacher"] == syn.provenance["teachers"][0]["name"]
    assert comp.meta["teacher_sha256"] == teacher.meta["sha256"] == syn.provenance["teachers"][0]["sha256"]
    assert syn.provenance["cam"]["exact_decomposition"] is True
    assert 0 < syn.provenance["frozen_pixel_fraction"] < 1
    save_synthetic(syn, tmp_path / "s.h5")
    back = load_synthetic(tmp_path / "s.h5")
    assert torch.equal(back.components["dbr"].values, comp.values) and back.components["dbr"].meta == comp.meta
    again = _nrr({**FAST, "teachers": tiny_teachers}, tiny_real)
    assert torch.equal(again.images, syn.images) and torch.equal(again.components["dbr"].values, comp.values)
    cidd = _nrr({**FAST, "iterations": 0, "teachers": tiny_teachers}, tiny_real)
    assert not torch.equal(cidd.images, syn.images)


def test_test_split_never_reaches_the_condenser(tiny_real, tiny_teachers):
    poisoned = replace(tiny_real, test_images=torch.full_like(tiny_real.test_images, float("nan")),
                       test_labels=torch.zeros_like(tiny_real.test_labels))
    clean, dirty = (_nrr({**FAST, "teachers": tiny_teachers}, r) for r in (tiny_real, poisoned))
    assert torch.equal(clean.images, dirty.images)
    assert torch.equal(clean.components["dbr"].values, dirty.components["dbr"].values)


def test_checkpoint_resume_equals_uninterrupted(tiny_real, tiny_teachers, tmp_path, stop_after_saves):
    settings = {**FAST, "iterations": 5, "ipc_per_batch": 1, "cam_every": 2, "teachers": tiny_teachers}
    full = _nrr(settings, tiny_real)
    with pytest.raises(Interrupted):
        _nrr(settings, tiny_real, checkpoint=stop_after_saves(tmp_path / "c.ckpt", 3))  # second batch, mid-way
    resumed = _nrr(settings, tiny_real, checkpoint=Checkpointer(tmp_path / "c.ckpt", every=2, resume=True))
    assert torch.equal(full.images, resumed.images)
    assert torch.equal(full.components["dbr"].values, resumed.components["dbr"].values)


def test_bad_input(tiny_real, tiny_teachers, tmp_path):
    with pytest.raises(ConfigError, match="teachers directory"):
        _nrr({}, tiny_real)
    for bad, match in (({"beta": 3}, "perfect square"), ({"select": "median"}, "select must be"),
                       ({"eps": 1.5}, "eps must be"), ({"label_mix": "mixup"}, "label_mix must be"),
                       ({"pool": 0}, "pool must be")):
        with pytest.raises(ConfigError, match=match):
            _nrr({**FAST, "teachers": tiny_teachers, **bad}, tiny_real)
    from dsdistill.teachers import TeacherRecipe, train_teachers

    train_teachers(tiny_real, ["convnet"], tmp_path / "nobn", recipe=TeacherRecipe(epochs=1), progress=False)
    with pytest.raises(ConfigError, match="BatchNorm"):
        _nrr({"teachers": str(tmp_path / "nobn")}, tiny_real)


def test_digit_labels_never_flip():
    mnist = CONDENSERS.get("nrr").from_settings("mnist", 10).config
    assert mnist.label_flip is False and mnist.scale_min == 1.0 and mnist.label_scale_min == 0.5
    assert mnist.slot_pool == 1  # digits: random candidates (module docstring of the condenser)
    cifar = CONDENSERS.get("nrr").from_settings("cifar10", 10).config
    assert cifar.label_flip is True and cifar.beta == 1 and cifar.label_scale_min == 0.08
    assert cifar.scale_min == 1.0 and cifar.slot_pool == 1  # <= 32 px: whole random images (docstring)
    assert CONDENSERS.get("nrr").recipe("imagefolder:/somewhere", 10) == {}  # user data: CIDD's own rule
