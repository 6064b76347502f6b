import math

import pytest
import torch
import torch.nn.functional as F

from dsdistill.augment import DSA
from dsdistill.condenser import Checkpointer, Interrupted
from dsdistill.errors import ConfigError, NumericalError
from dsdistill.methods.gradient_matching import (
    DC, LOOPS, DSAMatching, channel_cosine_distance, freeze_bn_statistics, loops_for, match_loss,
    matched_parameters, real_gradients)
from dsdistill.models import build_model

SMALL = {"iterations": 3, "batch_real": 6}


def test_channel_cosine_distance_matches_a_hand_computation():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    r = torch.tensor([[0.0, 2.0], [2.0, 2.0]])
    # row 0: orthogonal -> 1 - 0; row 1: parallel -> 1 - 4 / (sqrt(2) * sqrt(8) + 1e-6)
    expected = 1.0 + (1.0 - 4.0 / (math.sqrt(2) * math.sqrt(8) + 1e-6))
    assert channel_cosine_distance(s, r).item() == pytest.approx(expected, abs=1e-6)
    conv_s, conv_r = torch.randn(3, 2, 3, 3), torch.randn(3, 2, 3, 3)
    rows = [1 - F.cosine_similarity(conv_s[o].flatten(), conv_r[o].flatten(), dim=0, eps=0) for o in range(3)]
    assert channel_cosine_distance(conv_s, conv_r).item() == pytest.approx(sum(rows).item(), abs=1e-5)


def test_one_dimensional_parameters_are_skipped():
    assert channel_cosine_distance(torch.randn(5), torch.randn(5)).item() == 0.0
    net = build_model("convnet", 4, (1, 16, 16), seed=0)
    params = matched_parameters(net)
    assert params and all(p.dim() > 1 for p in params)
    assert len(params) == 4  # 3 conv weights + the linear weight; biases and norm affine skipped
    assert len(matched_parameters(net, "mse")) == len(list(net.parameters()))
    a, b = [torch.randn(3, 4), torch.randn(3)], [torch.randn(3, 4), torch.randn(3)]
    assert match_loss(a, b).item() == pytest.approx(channel_cosine_distance(a[0], b[0]).item())


def test_loop_table_and_recipe():
    assert loops_for(1) == (1, 1) and loops_for(10) == (10, 50) and loops_for(50) == (50, 10)
    assert {k: loops_for(k) for k in LOOPS} == LOOPS
    assert loops_for(2) == (1, 1) and loops_for(7) == (10, 50) and loops_for(15) == (10, 50)  # nearest, ties down
    cfg = DC.from_settings("mnist", 20, {}).config
    assert (cfg.outer_loop, cfg.inner_loop) == (20, 25) and cfg.init == "noise" and not cfg.dsa
    cfg = DSAMatching.from_settings("mnist", 10, {"inner_loop": 3}).config
    assert (cfg.outer_loop, cfg.inner_loop) == (10, 3) and cfg.init == "real" and cfg.dsa


def test_chunked_real_gradient_equals_the_full_batch_gradient(tiny_real):
    net = build_model("convnet", 4, tiny_real.image_shape, seed=1)
    params = matched_parameters(net)
    x = tiny_real.train_images[tiny_real.indices_of(2)]
    full = torch.autograd.grad(F.cross_entropy(net(x), torch.full((len(x),), 2)), params)
    for got, want in zip(real_gradients(net, params, x, 2, chunk=5), full):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_image_gradient_equals_the_reference_per_class_step(tiny_real):
    """Our step's image gradient == the reference's (per class, full batch, loss.backward())."""
    K, ipc = 4, 2
    net = build_model("convnet", K, tiny_real.image_shape, seed=2)
    params = matched_parameters(net)
    g = torch.Generator().manual_seed(0)
    real = tiny_real.sample_all(6, g).view(K, 6, *tiny_real.image_shape)
    syn = torch.randn(K * ipc, *tiny_real.image_shape, generator=g)
    ours, ref = syn.clone().requires_grad_(True), syn.clone().requires_grad_(True)
    loss_ours = 0
    for c in range(K):
        gr = real_gradients(net, params, real[c], c, chunk=4)
        gs = torch.autograd.grad(F.cross_entropy(net(ours[c * ipc:(c + 1) * ipc]), torch.full((ipc,), c)),
                                 params, create_graph=True)
        loss_ours = loss_ours + match_loss(list(gs), gr)
    grad_ours = torch.autograd.grad(loss_ours, [ours])[0]
    all_params = list(net.parameters())
    loss_ref = 0
    for c in range(K):
        gr = [t.detach() for t in torch.autograd.grad(F.cross_entropy(net(real[c]), torch.full((6,), c)), all_params)]
        gs = torch.autograd.grad(F.cross_entropy(net(ref[c * ipc:(c + 1) * ipc]), torch.full((ipc,), c)),
                                 all_params, create_graph=True)
        loss_ref = loss_ref + sum(channel_cosine_distance(s, r) for s, r in zip(gs, gr))
    loss_ref.backward()
    torch.testing.assert_close(loss_ours, loss_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_ours, ref.grad, rtol=1e-3, atol=1e-6)


def test_gradient_matching_lowers_the_matching_loss(tiny_real):
    K, ipc = 4, 1
    net = build_model("convnet", K, tiny_real.image_shape, seed=3)
    params = matched_parameters(net)
    g = torch.Generator().manual_seed(1)
    real = tiny_real.sample_all(8, g).view(K, 8, *tiny_real.image_shape)
    g_real = [real_gradients(net, params, real[c], c, chunk=8) for c in range(K)]
    syn = torch.randn(K * ipc, *tiny_real.image_shape, generator=g).requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)

    def loss_now():
        return sum(match_loss(list(torch.autograd.grad(
            F.cross_entropy(net(syn[c:c + 1]), torch.tensor([c])), params, create_graph=True)), g_real[c])
            for c in range(K))

    first = loss_now().item()
    for _ in range(30):
        opt.zero_grad()
        loss_now().backward()
        opt.step()
    assert loss_now().item() < 0.8 * first


def test_condense_is_deterministic_and_moves_the_images(tiny_real):
    cfg = {**SMALL, "outer_loop": 2, "inner_loop": 2}
    a = DC.from_settings("tiny", 2, cfg).condense(tiny_real, 2, seed=3, progress=False)
    b = DC.from_settings("tiny", 2, cfg).condense(tiny_real, 2, seed=3, progress=False)
    c = DC.from_settings("tiny", 2, cfg).condense(tiny_real, 2, seed=4, progress=False)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and a.method == "dc" and a.protocol == "dc"
    assert a.provenance["outer_loop"] == 2 and a.provenance["final_loss"] > 0
    zero = DC.from_settings("tiny", 2, {**cfg, "lr_img": 0.0}).condense(tiny_real, 2, seed=3, progress=False)
    assert not torch.equal(a.images, zero.images)  # lr 0 leaves the noise init; lr 0.1 moved it


@pytest.mark.parametrize("method", [DC, DSAMatching])
def test_resume_after_interruption_is_bitwise_identical(method, tiny_real, tmp_path, stop_at):
    cfg = {"iterations": 5, "batch_real": 6, "outer_loop": 2, "inner_loop": 2}
    full = method.from_settings("tiny", 2, cfg).condense(tiny_real, 2, seed=7, progress=False)

    with pytest.raises(Interrupted):
        method.from_settings("tiny", 2, cfg).condense(tiny_real, 2, seed=7, progress=False,
                                                      checkpoint=stop_at(tmp_path / "run.ckpt", 2, every=3))
    assert torch.load(tmp_path / "run.ckpt", weights_only=True)["iteration"] == 2
    resumed = method.from_settings("tiny", 2, cfg).condense(
        tiny_real, 2, seed=7, progress=False, checkpoint=Checkpointer(tmp_path / "run.ckpt", every=3, resume=True))
    assert torch.equal(full.images, resumed.images)


def test_bn_statistics_are_frozen_from_real_data(tiny_real):
    net = build_model("convnet_bn", 4, tiny_real.image_shape, seed=0)
    x = tiny_real.train_images[:16]
    assert freeze_bn_statistics(net, x)
    bn = net.features[1]
    feat = net.features[0](x)
    torch.testing.assert_close(bn.running_mean, feat.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, feat.var(dim=(0, 2, 3), unbiased=True), rtol=1e-3, atol=1e-5)
    assert not bn.training and bn.momentum == 0.1
    before = bn.running_mean.clone()
    net(tiny_real.train_images[16:32])  # eval mode: statistics stay frozen
    assert torch.equal(before, bn.running_mean)
    assert not freeze_bn_statistics(build_model("convnet", 4, tiny_real.image_shape, seed=0), x)


def test_bn_networks_are_matched_in_eval_mode(tiny_real, monkeypatch):
    from dsdistill.methods import gradient_matching as gm

    modes = []
    original = gm.real_gradients

    def spy(net, *args, **kw):
        modes.append([m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)])
        return original(net, *args, **kw)

    monkeypatch.setattr(gm, "real_gradients", spy)
    syn = DC.from_settings("tiny", 1, {**SMALL, "model": "convnet_bn"}).condense(tiny_real, 1, progress=False)
    assert torch.isfinite(syn.images).all() and modes and all(m and not any(m) for m in modes)


def test_dsa_uses_siamese_augmentation_per_class_and_unseeded_dsa_in_training(tiny_real, monkeypatch):
    siamese, plain = [], []
    original_siamese, original_call = DSA.siamese, DSA.__call__

    def spy_siamese(self, *batches, generator=None):
        siamese.append((tuple(b.shape[0] for b in batches), generator))
        return original_siamese(self, *batches, generator=generator)

    def spy_call(self, x, generator=None, same_on_batch=False):
        if not same_on_batch:
            plain.append(generator)
        return original_call(self, x, generator=generator, same_on_batch=same_on_batch)

    monkeypatch.setattr(DSA, "siamese", spy_siamese)
    monkeypatch.setattr(DSA, "__call__", spy_call)
    DSAMatching.from_settings("tiny", 2, {**SMALL, "outer_loop": 2, "inner_loop": 1}).condense(
        tiny_real, 2, progress=False)
    assert len(siamese) == 3 * 2 * 4 and all(s == (6, 2) for s, _ in siamese)  # it x outer x class
    assert len({id(g) for _, g in siamese}) == 1 and siamese[0][1] is not None
    assert len(plain) == 3 * 1 and plain[0] is not None and plain[0] is not siamese[0][1]
    siamese.clear()
    DC.from_settings("tiny", 2, SMALL).condense(tiny_real, 2, progress=False)
    assert siamese == []


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="init"):
        DC.from_settings("mnist", 1, {"init": "gaussian"})
    with pytest.raises(ConfigError, match="distance"):
        DSAMatching.from_settings("mnist", 1, {"distance": "l1"})
    with pytest.raises(ConfigError, match="batch_real"):
        DC.from_settings("mnist", 1, {"batch_real": 0})


def test_nan_steps_are_rolled_back_then_stop(tiny_real):
    with pytest.raises(NumericalError, match="lr_img"):
        DC.from_settings("tiny", 1, {"iterations": 8, "batch_real": 4, "lr_img": float("inf")}).condense(
            tiny_real, 1, seed=0, progress=False)
