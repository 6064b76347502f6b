"""Golden tests for DSA against the formulas of ``DatasetCondensation/utils.py`` (MATCHING.md 1.3)."""

from __future__ import annotations

import collections
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dsdistill.augment import DEFAULT_STRATEGY, DIGIT_STRATEGY, DSA, DSAParams, strategy_for
from dsdistill.augment.dsa import OPS

P = DSAParams()
Tensor = torch.Tensor
# scale/rotate run on kornia's warp_affine, whose float32 grid construction rounds differently from
# F.affine_grid (measured ~1e-5 to 3e-5); the semantics are proven exact by the float64 golden test.
F32_WARP_ATOL = 1e-4


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 8, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> Tensor:
    # Normal values: no exact zeros, so zero-filled pixels are identifiable.
    return torch.randn(n, c, h, w, generator=gen(seed))



# ---------------------------------------------------------------- independent reference ops
def shift(img: Tensor, th: int, tw: int) -> Tensor:
    """out[..., i, j] = img[..., i + th, j + tw], 0 outside (slicing, no gather)."""
    h, w = img.shape[-2:]
    out = torch.zeros_like(img)
    src_r, dst_r = slice(max(th, 0), min(h, h + th)), slice(max(-th, 0), min(h, h - th))
    src_c, dst_c = slice(max(tw, 0), min(w, w + tw)), slice(max(-tw, 0), min(w, w - tw))
    out[..., dst_r, dst_c] = img[..., src_r, src_c]
    return out


def ref_crop(x: Tensor, th: Tensor, tw: Tensor) -> Tensor:
    """The reference's meshgrid + clamped gather into a 1-px zero pad."""
    n, _, h, w = x.shape
    th, tw = th.view(-1, 1, 1).expand(n, 1, 1), tw.view(-1, 1, 1).expand(n, 1, 1)
    gb, gx, gy = torch.meshgrid(torch.arange(n), torch.arange(h), torch.arange(w), indexing="ij")
    gx = torch.clamp(gx + th + 1, 0, h + 1)
    gy = torch.clamp(gy + tw + 1, 0, w + 1)
    xp = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return xp.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def ref_cutout(x: Tensor, oh: Tensor, ow: Tensor, ratio: float = P.ratio_cutout) -> Tensor:
    """The reference's clamped-index mask."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oh, ow = oh.view(-1, 1, 1).expand(n, 1, 1), ow.view(-1, 1, 1).expand(n, 1, 1)
    gb, gx, gy = torch.meshgrid(torch.arange(n), torch.arange(ch), torch.arange(cw), indexing="ij")
    gx = torch.clamp(gx + oh - ch // 2, min=0, max=h - 1)
    gy = torch.clamp(gy + ow - cw // 2, min=0, max=w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


def ref_color(x: Tensor, b: Tensor, s: Tensor, c: Tensor) -> Tensor:
    b, s, c = (v.view(-1, 1, 1, 1) for v in (b, s, c))
    x = x + b
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * s + m
    m = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - m) * c + m


def ref_affine(x: Tensor, theta: Tensor, align_corners: bool) -> Tensor:
    theta = theta.expand(x.shape[0], 2, 3).contiguous()
    grid = F.affine_grid(theta, x.shape, align_corners=align_corners)
    return F.grid_sample(x, grid, align_corners=align_corners)


def call_and_params(dsa: DSA, x: Tensor, seed: int, same_on_batch: bool = False):
    out = dsa(x, generator=gen(seed), same_on_batch=same_on_batch)
    op, params = dsa._sample(x.shape, gen(seed), same_on_batch)
    return out, op, params


# ---------------------------------------------------------------- strategies and construction
def test_strategy_for_and_constants():
    assert DEFAULT_STRATEGY == "color_crop_cutout_flip_scale_rotate"
    assert DIGIT_STRATEGY == "color_crop_cutout_scale_rotate"
    for name in ("mnist", "MNIST", "svhn", "SVHN"):
        assert strategy_for(name) == DIGIT_STRATEGY
    for name in ("fashionmnist", "Fashion-MNIST", "cifar10", "cifar100", "tinyimagenet", "imagenet"):
        assert strategy_for(name) == DEFAULT_STRATEGY
    assert "flip" not in DSA(strategy_for("mnist")).tokens
    assert "flip" in DSA(strategy_for("cifar10")).tokens


def test_mnist_strategy_never_flips():
    dsa = DSA(strategy_for("mnist"))
    ops = {dsa._sample((4, 1, 28, 28), gen(s), False)[0] for s in range(300)}
    assert ops == {"color", "crop", "cutout", "scale", "rotate"}


def test_unknown_token_raises_with_valid_names():
    with pytest.raises(ValueError, match="color, crop, cutout, flip, scale, rotate"):
        DSA("color_brightness")


@pytest.mark.parametrize("strategy", ["", "none"])
def test_identity_strategy(strategy):
    x = images()
    state = torch.get_rng_state()
    assert torch.equal(DSA(strategy)(x), x)
    assert DSA(strategy).siamese(x, x[:2])[1].shape == (2, 3, 16, 16)
    assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------------- colour
@pytest.mark.parametrize("same", [False, True])
def test_color_matches_formula(same):
    x = images()
    out, op, p = call_and_params(DSA("color"), x, seed=1, same_on_batch=same)
    assert op == "color"
    n = 1 if same else x.shape[0]
    assert all(v.shape == (n,) for v in p.values())
    assert ((p["brightness"] >= -0.5) & (p["brightness"] < 0.5)).all()
    assert ((p["saturation"] >= 0) & (p["saturation"] < 2.0)).all()
    assert ((p["contrast"] >= 0.5) & (p["contrast"] < 1.5)).all()
    expected = ref_color(x, p["brightness"], p["saturation"], p["contrast"])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_brightness_black_box():
    # Constant images: saturation and contrast act on (x - mean) = 0, leaving only brightness.
    x = torch.randn(64, 1, 1, 1, generator=gen(1)).expand(64, 3, 8, 8).contiguous()
    delta = DSA("color")(x, generator=gen(2)) - x
    per_sample = delta[:, :1, :1, :1]
    torch.testing.assert_close(delta, per_sample.expand_as(delta), rtol=0, atol=1e-6)
    assert per_sample.min() >= -0.5 and per_sample.max() <= 0.5
    assert per_sample.std() > 0.1  # independent per sample


def test_contrast_black_box_single_channel():
    # One channel: saturation is the identity, so out = (x - m) * c + m + b with c in [0.5, 1.5].
    x = images(n=64, c=1)
    out = DSA("color")(x, generator=gen(3))
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    c = (out - out.mean(dim=(1, 2, 3), keepdim=True)).flatten(1).norm(dim=1) / (x - m).flatten(1).norm(dim=1)
    b = (out.mean(dim=(1, 2, 3)) - m.flatten())
    assert c.min() >= 0.5 - 1e-5 and c.max() <= 1.5 + 1e-5
    assert b.abs().max() <= 0.5 + 1e-5
    expected = (x - m) * c.view(-1, 1, 1, 1) + m + b.view(-1, 1, 1, 1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_no_clamping():
    x = images() * 10
    out = DSA("color")(x, generator=gen(4))
    assert out.abs().max() > 5  # normalised/ZCA values are not clamped to [0, 1]


# ---------------------------------------------------------------- crop
@pytest.mark.parametrize("same", [False, True])
@pytest.mark.parametrize("hw", [(16, 16), (32, 32), (16, 24)])
def test_crop_is_integer_shift_with_zero_fill(same, hw):
    h, w = hw
    x = images(n=12, h=h, w=w)
    out, op, p = call_and_params(DSA("crop"), x, seed=5, same_on_batch=same)
    sh, sw = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
    found = []
    for i in range(x.shape[0]):
        candidates = [(a, b) for a in range(-sh, sh + 1) for b in range(-sw, sw + 1)]
        hits = [(a, b) for a, b in candidates if torch.equal(out[i], shift(x[i], a, b))]
        assert len(hits) == 1, f"sample {i}: shifts {hits}"
        found.append(hits[0])
    assert found == list(zip(p["shift_h"].expand(12).tolist(), p["shift_w"].expand(12).tolist()))
    assert torch.equal(out, ref_crop(x, p["shift_h"], p["shift_w"]))
    assert (len(set(found)) == 1) == same


def test_crop_shift_range_and_32px_pad():
    dsa = DSA("crop")
    _, p = dsa._sample((4000, 3, 32, 32), gen(6), False)
    assert p["shift_h"].min() == -4 and p["shift_h"].max() == 4
    assert p["shift_w"].min() == -4 and p["shift_w"].max() == 4


# ---------------------------------------------------------------- cutout
@pytest.mark.parametrize("same", [False, True])
@pytest.mark.parametrize("hw", [(16, 16), (15, 15), (28, 28)])
def test_cutout_zeroes_one_clipped_square(same, hw):
    h, w = hw
    x = images(n=64, h=h, w=w)
    out, op, p = call_and_params(DSA("cutout"), x, seed=7, same_on_batch=same)
    size = int(h * 0.5 + 0.5)
    assert torch.equal(out, ref_cutout(x, p["center_h"], p["center_w"]))
    clipped = 0
    for i in range(x.shape[0]):
        zero = (out[i] == 0).all(dim=0)
        assert torch.equal(out[i][:, ~zero], x[i][:, ~zero])  # the rest is unchanged
        assert (out[i][:, zero] == 0).all()
        rows, cols = zero.any(dim=1).nonzero().flatten(), zero.any(dim=0).nonzero().flatten()
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert zero.sum() == (r1 - r0) * (c1 - c0)  # a rectangle
        assert zero[r0:r1, c0:c1].all()
        for lo, hi, n in ((r0, r1, h), (c0, c1, w)):
            assert hi - lo == size or lo == 0 or hi == n  # full side unless it leaves the frame
            assert hi - lo >= 1
        clipped += int((r1 - r0) < size or (c1 - c0) < size)
    if not same:
        assert 0 < clipped < x.shape[0]  # the square can overhang the border


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(2, 20),
    w=st.integers(2, 20),
    ratio=st.sampled_from([0.25, 0.5, 0.75, 1.0]),
    seed=st.integers(0, 99),
)
def test_cutout_matches_reference_any_size(h, w, ratio, seed):
    dsa = DSA("cutout", DSAParams(ratio_cutout=ratio))
    x = images(n=4, h=h, w=w)
    out, _, p = call_and_params(dsa, x, seed)
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    assert (p["center_h"] >= 0).all() and (p["center_h"] < h + (1 - ch % 2)).all()
    assert (p["center_w"] >= 0).all() and (p["center_w"] < w + (1 - cw % 2)).all()
    assert torch.equal(out, ref_cutout(x, p["center_h"], p["center_w"], ratio))


@settings(max_examples=25, deadline=None)
@given(h=st.integers(2, 20), w=st.integers(2, 20), seed=st.integers(0, 99), same=st.booleans())
def test_crop_matches_reference_any_size(h, w, seed, same):
    x = images(n=4, h=h, w=w)
    out, _, p = call_and_params(DSA("crop"), x, seed, same)
    assert torch.equal(out, ref_crop(x, p["shift_h"], p["shift_w"]))


# ---------------------------------------------------------------- flip
def test_flip_per_sample():
    x = images(n=200)
    out = DSA("flip")(x, generator=gen(8))
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(200)]
    same = [torch.equal(out[i], x[i]) for i in range(200)]
    assert all(f != s for f, s in zip(flipped, same))
    assert 60 < sum(flipped) < 140


@pytest.mark.parametrize("prob, expected", [(0.0, False), (1.0, True)])
def test_flip_probability_param(prob, expected):
    x = images()
    out = DSA("flip", DSAParams(prob_flip=prob))(x, generator=gen(9))
    assert torch.equal(out, x.flip(3) if expected else x)


# ---------------------------------------------------------------- scale / rotate
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("same", [False, True])
def test_scale_matches_affine_grid(align_corners, same):
    x = images()
    out, op, p = call_and_params(DSA("scale", align_corners=align_corners), x, seed=10, same_on_batch=same)
    theta = p["theta"]
    assert theta.shape == ((1 if same else 8), 2, 3)
    sx, sy = theta[:, 0, 0], theta[:, 1, 1]
    assert ((sx >= 1 / 1.2) & (sx <= 1.2)).all() and ((sy >= 1 / 1.2) & (sy <= 1.2)).all()
    assert theta[:, 0, 1:].abs().max() == 0 and theta[:, 1, [0, 2]].abs().max() == 0
    if not same:
        assert not torch.equal(sx, sy)  # independent draws
    # float32 rounding of kornia's grid construction (measured ~1e-5 to 3e-5); exactness: the float64 test.
    torch.testing.assert_close(out, ref_affine(x, theta, align_corners), rtol=0, atol=F32_WARP_ATOL)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("same", [False, True])
def test_rotate_matches_affine_grid(align_corners, same):
    x = images()
    out, op, p = call_and_params(DSA("rotate", align_corners=align_corners), x, seed=11, same_on_batch=same)
    theta = p["theta"]
    angle = torch.atan2(theta[:, 1, 0], theta[:, 0, 0])
    expected = torch.stack(
        [torch.stack([angle.cos(), -angle.sin(), torch.zeros_like(angle)], 1),
         torch.stack([angle.sin(), angle.cos(), torch.zeros_like(angle)], 1)], 1
    )
    torch.testing.assert_close(theta, expected, rtol=0, atol=1e-6)
    assert angle.abs().max() <= 15 / 180 * math.pi + 1e-6
    # float32 rounding of kornia's grid construction (measured ~1e-5 to 3e-5); exactness: the float64 test.
    torch.testing.assert_close(out, ref_affine(x, theta, align_corners), rtol=0, atol=F32_WARP_ATOL)


@pytest.mark.parametrize("op", ["scale", "rotate"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("same", [False, True])
@pytest.mark.parametrize("hw", [(16, 16), (15, 24)])
def test_scale_rotate_exact_in_float64(op, align_corners, same, hw):
    # Golden test of the semantics: in float64 the kornia warp equals F.affine_grid + F.grid_sample with
    # the sampled theta up to float64 rounding (measured < 1e-13), for both align_corners settings.
    # 15x24: align_corners changes rotate only on non-square images (exactly equal on square ones).
    x = images(h=hw[0], w=hw[1]).double()
    for seed in range(5):
        dsa = DSA(op, align_corners=align_corners)
        out, sampled, p = call_and_params(dsa, x, seed=40 + seed, same_on_batch=same)
        assert sampled == op and out.dtype == torch.float64
        theta = p["theta"]
        assert theta.shape == ((1 if same else 8), 2, 3)
        torch.testing.assert_close(out, ref_affine(x, theta.double(), align_corners), rtol=0, atol=1e-10)


def test_align_corners_flag_changes_output():
    x = images()
    a = DSA("rotate", align_corners=False)(x, generator=gen(12))
    b = DSA("rotate", align_corners=True)(x, generator=gen(12))
    assert not torch.allclose(a, b)


def test_zero_rotation_is_identity():
    x = images()
    out = DSA("rotate", DSAParams(ratio_rotate=0.0))(x, generator=gen(13))
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)


def test_angle_and_scale_distribution_cover_range():
    _, p = DSA("rotate")._sample((5000, 3, 8, 8), gen(14), False)
    deg = torch.atan2(p["theta"][:, 1, 0], p["theta"][:, 0, 0]) * 180 / math.pi
    assert deg.min() < -14.5 and deg.max() > 14.5 and abs(deg.mean()) < 0.5
    _, p = DSA("scale")._sample((5000, 3, 8, 8), gen(15), False)
    sx = p["theta"][:, 0, 0]
    assert sx.min() < 1 / 1.2 + 0.01 and sx.max() > 1.2 - 0.01


# ---------------------------------------------------------------- sharing, independence, determinism
@pytest.mark.parametrize("strategy", [*OPS, DEFAULT_STRATEGY])
def test_siamese_identical_transform_different_batch_sizes(strategy):
    dsa = DSA(strategy)
    for seed in range(6):
        real, syn = images(n=32, seed=seed), images(n=5, seed=100 + seed)
        real[3] = syn[1]
        out_real, out_syn = dsa.siamese(real, syn, generator=gen(seed))
        assert out_real.shape == real.shape and out_syn.shape == syn.shape
        torch.testing.assert_close(out_real[3], out_syn[1], rtol=0, atol=0)


def test_siamese_gradient_reaches_syn():
    real, syn = images(n=16), images(n=4, seed=1).requires_grad_()
    out_real, out_syn = DSA("scale").siamese(real, syn, generator=gen(0))
    (out_syn * out_real[:4]).sum().backward()
    assert syn.grad is not None and syn.grad.abs().sum() > 0


@pytest.mark.parametrize("op", OPS)
def test_same_on_batch_identical_images_identical_outputs(op):
    x = images(n=1).expand(16, -1, -1, -1).contiguous()
    out = DSA(op)(x, generator=gen(16), same_on_batch=True)
    assert all(torch.equal(out[0], out[i]) for i in range(16))


@pytest.mark.parametrize("op", OPS)
def test_independent_params_differ_per_sample(op):
    x = images(n=1).expand(64, -1, -1, -1).contiguous()
    out = DSA(op)(x, generator=gen(17))
    distinct = {tuple(o.flatten()[:256].tolist()) for o in out}
    assert len(distinct) > 1


@pytest.mark.parametrize("same", [False, True])
def test_deterministic_with_seeded_generator(same):
    dsa, x = DSA(), images(n=16)
    outs = [dsa(x, generator=gen(s), same_on_batch=same) for s in (21, 21, 22)]
    assert torch.equal(outs[0], outs[1])
    differs = sum(not torch.equal(dsa(x, generator=gen(s)), dsa(x, generator=gen(s + 1))) for s in range(10))
    assert differs >= 8


def test_generator_stream_advances_between_calls():
    dsa, x, g = DSA(), images(), gen(23)
    a, b = dsa(x, generator=g), dsa(x, generator=g)
    assert not torch.equal(a, b)


def test_global_rng_untouched_with_generator():
    state = torch.get_rng_state()
    dsa, x = DSA(), images()
    for s in range(20):
        dsa(x, generator=gen(s))
        dsa.siamese(x, x[:3], generator=gen(s))
    assert torch.equal(torch.get_rng_state(), state)


def test_no_generator_uses_global_rng_without_reseeding():
    dsa, x = DSA(), images()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        a = dsa(x)
        after = torch.get_rng_state()
        torch.manual_seed(0)
        b = dsa(x)
    assert torch.equal(a, b)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        assert not torch.equal(after, torch.get_rng_state())  # it consumed global draws


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("same", [False, True])
def test_gradients_reach_input(op, same):
    x = images().requires_grad_()
    out = DSA(op)(x, generator=gen(24), same_on_batch=same)
    (out * torch.randn(out.shape, generator=gen(25))).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_one_op_per_call_uniform():
    dsa = DSA()
    g = gen(26)
    counts = collections.Counter(dsa._sample((2, 3, 8, 8), g, False)[0] for _ in range(1200))
    assert set(counts) == set(OPS)
    assert all(150 <= c <= 250 for c in counts.values()), counts


def test_call_applies_exactly_the_sampled_op():
    # __call__ == _apply(_sample(...)) for the full strategy: only one op group per call.
    dsa, x = DSA(), images()
    for seed in range(12):
        out, op, p = call_and_params(dsa, x, seed)
        assert torch.equal(out, DSA(op)._apply(x, op, p))


def test_repeated_token_weights_choice():
    g = gen(27)
    counts = collections.Counter(DSA("flip_flip_crop")._sample((1, 1, 4, 4), g, False)[0] for _ in range(600))
    assert 330 < counts["flip"] < 470


@pytest.mark.parametrize("op", OPS)
def test_dtype_and_memory_format(op):
    x = images().double()
    out = DSA(op)(x, generator=gen(28))
    assert out.dtype == torch.float64 and out.shape == x.shape
    xc = images().contiguous(memory_format=torch.channels_last)
    expected = DSA(op)(images(), generator=gen(29))
    torch.testing.assert_close(DSA(op)(xc, generator=gen(29)), expected, rtol=0, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("op", OPS)
def test_cuda_matches_cpu_with_cpu_generator(op):
    x = images()
    cpu = DSA(op)(x, generator=gen(30))
    cuda = DSA(op)(x.cuda(), generator=gen(30))
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=1e-5)
