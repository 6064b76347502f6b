"""Replay labels: the student rebuilds exactly the teacher's inputs; labels are keyed per sample."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dsdistill.models  # noqa: F401  (registers models)
from dsdistill.models import build_model
from dsdistill.softlabels import (ReplayLabels, expand_topk, relabel, relabel_like, resized_crop,
                                  sample_crops, sample_cutmix)

K, SHAPE = 4, (1, 16, 16)


class Seen(list):
    """A list that survives ``copy.deepcopy`` (BSSL labels with copies of the teachers)."""

    def __deepcopy__(self, memo):
        return self


class Recorder(nn.Module):
    """Wraps a teacher and keeps every input batch it is given (in call order)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.seen = net, Seen()

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.net(x)


def teacher(name: str = "convnet", seed: int = 0) -> nn.Module:
    return build_model(name, K, SHAPE, seed=seed)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(10, *SHAPE, generator=gen(1))


@pytest.mark.parametrize("batch_specific", [False, True])
@pytest.mark.parametrize("mix", ["cutmix", "none"])
def test_replay_reproduces_teacher_inputs_bitwise(images, mix, batch_specific) -> None:
    rec = Recorder(teacher("convnet_bn"))
    bs = 3
    rp = relabel(images, [rec], None, epochs=3, generator=gen(), batch_size=bs, mix=mix,
                 batch_specific=batch_specific)
    assert len(rec.seen) == 3 * 4  # ceil(10 / 3) batches per epoch
    calls = iter(rec.seen)
    for e in range(3):
        order = rp.order[e].long() if batch_specific else torch.arange(10)
        for chunk in order.split(bs):
            seen = next(calls)
            assert torch.equal(rp.inputs(images, e, chunk), seen)  # the stored params rebuild them exactly
            # keyed per sample: any other grouping rebuilds the same per-sample inputs
            for j, i in enumerate(chunk):
                assert torch.equal(rp.inputs(images, e, i.view(1)), seen[j:j + 1])
    if mix == "cutmix":  # the teacher labelled mixed inputs that differ from the plain crops
        assert rp.partners is not None and (rp.lam(0, torch.arange(10))[0] < 1).any()


def test_labels_independent_of_relabel_batch_size(images) -> None:
    t = teacher()
    a = relabel(images, [t], None, epochs=2, generator=gen(), batch_size=10, dtype=torch.float32)
    b = relabel(images, [t], None, epochs=2, generator=gen(), batch_size=3, dtype=torch.float32)
    for name in ("crops", "flips", "partners", "mix_boxes"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    torch.testing.assert_close(a.values, b.values, rtol=1e-5, atol=1e-5)  # conv kernels may round per batch


def test_stored_labels_are_the_teachers_labels_of_the_replayed_inputs(images) -> None:
    t1, t2 = teacher("convnet", 0), teacher("mlp", 1)
    w = torch.tensor([3.0, 1.0])
    rp = relabel(images, [t1, t2], w, epochs=2, generator=gen(), dtype=torch.float32)
    idx = torch.tensor([7, 2, 5])
    x = rp.inputs(images, 1, idx)
    with torch.no_grad():
        want = 0.75 * t1.eval()(x) + 0.25 * t2.eval()(x)
    torch.testing.assert_close(rp.values[1, idx], want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rp.targets(1, idx), torch.softmax(want / rp.temperature, 1), rtol=1e-5, atol=1e-6)
    probs = relabel(images, [t1, t2], w, epochs=1, generator=gen(), average="probs", temperature=2.0,
                    dtype=torch.float32)
    x0 = probs.inputs(images, 0, idx)
    with torch.no_grad():
        want_p = 0.75 * torch.softmax(t1(x0) / 2, 1) + 0.25 * torch.softmax(t2(x0) / 2, 1)
    assert probs.kind == "probs" and probs.settings["average"] == "probs"
    torch.testing.assert_close(probs.targets(0, idx), want_p, rtol=1e-5, atol=1e-6)


def test_fp16_default_and_storage_accounting(images) -> None:
    rp = relabel(images, [teacher()], None, epochs=5, generator=gen())
    assert rp.values.dtype == torch.float16 and rp.values.shape == (5, 10, K)
    assert rp.crops.dtype == torch.int16 and rp.partners.dtype == torch.int32
    sb = rp.storage_bytes()
    assert sb["labels"] == 5 * 10 * K * 2
    assert sb["params"] == 5 * 10 * (4 * 2 + 1 + 4 + 4 * 2)  # crops, flip, partner, mix box
    assert sb["total"] == sb["labels"] + sb["params"]
    f32 = relabel(images, [teacher()], None, epochs=5, generator=gen(), dtype=torch.float32)
    torch.testing.assert_close(rp.values.float(), f32.values, rtol=1e-3, atol=1e-3)


def test_topk_round_trip(images) -> None:
    t = teacher()
    full = relabel(images, [t], None, epochs=2, generator=gen(), temperature=2.0, dtype=torch.float32)
    top = relabel(images, [t], None, epochs=2, generator=gen(), temperature=2.0, dtype=torch.float32, top_k=2)
    assert top.kind == "probs" and top.values.shape == (2, 10, 2) and top.indices.dtype == torch.int16
    idx = torch.arange(10)
    p = full.targets(1, idx)
    q = top.targets(1, idx)
    torch.testing.assert_close(q.sum(1), torch.ones(10))
    vals, ind = p.topk(2, dim=1)
    torch.testing.assert_close(q.gather(1, ind), vals)  # the top-2 survive exactly
    rest = (1 - vals.sum(1, keepdim=True)) / (K - 2)
    mask = torch.ones_like(q, dtype=torch.bool).scatter_(1, ind, False)
    torch.testing.assert_close(q[mask].view(10, K - 2), rest.expand(10, K - 2))  # marginal smoothing
    assert top.storage_bytes()["labels"] == 2 * 10 * 2 * (4 + 2)
    full_k = relabel(images, [t], None, epochs=1, generator=gen(), temperature=2.0, dtype=torch.float32, top_k=K)
    torch.testing.assert_close(full_k.targets(0, idx), full.targets(0, idx))
    torch.testing.assert_close(expand_topk(torch.tensor([[0.5]]), torch.tensor([[1]]), 3),
                               torch.tensor([[0.25, 0.5, 0.25]]))


def test_bssl_uses_microbatch_statistics_and_replays_exactly(images) -> None:
    t = teacher("convnet_bn")
    before = {k: v.clone() for k, v in t.state_dict().items()}
    rp = relabel(images, [t], None, epochs=2, generator=gen(), batch_size=4, batch_specific=True,
                 dtype=torch.float32)
    assert all(torch.equal(before[k], v) for k, v in t.state_dict().items())  # running stats untouched
    assert rp.micro_batch == 4 and rp.settings["teacher_bn"].startswith("train")
    for e in range(2):
        assert torch.equal(rp.order[e].long().sort().values, torch.arange(10))
    # recompute one micro-batch: BN in train mode on exactly those samples gives the stored labels
    from dsdistill.softlabels import bn_train_copies
    active = bn_train_copies([t])[0]
    for e in range(2):
        for chunk in rp.order[e].long().split(4):
            with torch.no_grad():
                y = active(rp.inputs(images, e, chunk))
            assert torch.equal(rp.values[e, chunk], y)
    # eval-mode labels differ: the micro-batch composition matters
    ev = relabel(images, [t], None, epochs=2, generator=gen(), batch_size=4, dtype=torch.float32)
    assert not torch.allclose(ev.values, rp.values)


def test_bssl_leaves_dropout_off(images) -> None:
    net = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(256), nn.Dropout(0.9), nn.Linear(256, K))
    a = relabel(images, [net], None, epochs=1, generator=gen(), batch_size=5, batch_specific=True,
                mix="none", dtype=torch.float32)
    b = relabel(images, [net], None, epochs=1, generator=gen(), batch_size=5, batch_specific=True,
                mix="none", dtype=torch.float32)
    assert torch.equal(a.values, b.values)  # dropout would make two runs differ


def test_relabel_like_copies_the_recipe(images) -> None:
    t1, t2 = teacher("convnet_bn", 0), teacher("mlp", 1)
    rp = relabel(images, [t1, t2], [1.0, 2.0], epochs=2, generator=gen(), average="probs", temperature=3.0,
                 batch_specific=True, batch_size=4, top_k=3, mix="none", scale=(0.5, 1.0))
    other = torch.randn(6, *SHAPE, generator=gen(5))
    like = relabel_like(other, [t1, t2], rp, generator=gen(9))
    assert (like.epochs, like.kind, like.temperature, like.micro_batch, like.top_k) == (2, "probs", 3.0, 4, 3)
    assert like.partners is None and like.values.dtype == torch.float16
    assert like.settings["weights"] == pytest.approx([1 / 3, 2 / 3]) and like.settings["scale"] == [0.5, 1.0]
    assert (like.crops[..., 2].float() * like.crops[..., 3] >= 0.5 * 256 * 0.9).all()


def test_crop_params_and_resampling() -> None:
    c = sample_crops(2000, (16, 24), gen(), (0.08, 1.0), (3 / 4, 4 / 3))
    assert (c[:, :2] >= 0).all() and (c[:, 0] + c[:, 2] <= 16).all() and (c[:, 1] + c[:, 3] <= 24).all()
    area = (c[:, 2] * c[:, 3]).float() / (16 * 24)
    assert area.min() < 0.2 and area.max() > 0.8
    p, boxes = sample_cutmix(50, (16, 16), gen())
    assert torch.equal(p.sort().values, torch.arange(50)) and (boxes[:, 2] <= 16).all()
    # the full-image crop is the identity; a crop equals F.interpolate of the cropped region inside it
    x = torch.randn(2, 3, 16, 16, generator=gen(2))
    full = torch.tensor([[0, 0, 16, 16]] * 2)
    torch.testing.assert_close(resized_crop(x, full, (16, 16)), x)
    box = torch.tensor([[2, 4, 8, 8], [2, 4, 8, 8]])
    up = resized_crop(x, box, (16, 16))
    ref = torch.nn.functional.interpolate(x[:, :, 2:10, 4:12], size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up[:, :, 1:-1, 1:-1], ref[:, :, 1:-1, 1:-1])  # edges blend with outside pixels


def test_bad_arguments_and_inconsistent_labels(images) -> None:
    t = teacher()
    with pytest.raises(ValueError, match="weights must be 1"):
        relabel(images, [t], [1.0, 2.0], epochs=1, generator=gen())
    with pytest.raises(ValueError, match="top_k must be in"):
        relabel(images, [t], None, epochs=1, generator=gen(), top_k=K + 1)
    with pytest.raises(ValueError, match="mix must be"):
        relabel(images, [t], None, epochs=1, generator=gen(), mix="mixup")
    rp = relabel(images, [t], None, epochs=1, generator=gen())
    with pytest.raises(ValueError, match="flips must be"):
        ReplayLabels(rp.crops, rp.flips[:, :3], rp.partners, rp.mix_boxes, rp.values, num_classes=K, size=(16, 16))
    assert "outside the 8x8 images" in rp.range_problem((8, 8))
