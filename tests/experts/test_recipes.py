"""Recipe settings, and the trainer reproducing a hand-written reference loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dsdistill.augment import DSA, strategy_for
from dsdistill.errors import ConfigError, UnknownNameError
from dsdistill.experts import RECIPES, ExpertStore, flatten_params, get_recipe, train_experts
from dsdistill.experts.trainer import ExpertJob, gradient_penalty, train_expert
from dsdistill.models import build_model
from dsdistill.rng import derive_seed, make_generator


def test_recipe_tables():
    mtt, ftd, ast = RECIPES["mtt"], RECIPES["ftd"], RECIPES["ast"]
    assert (mtt.lr, mtt.momentum, mtt.weight_decay, mtt.batch_size, mtt.dsa, mtt.gsam) == (0.01, 0, 0, 256, True, False)
    assert [mtt.lr_at(e, 50) for e in (0, 49)] == [0.01, 0.01] and mtt.loss_scale(0) == 1.0 and mtt.gp_weight == 0
    assert (ftd.lr, ftd.momentum, ftd.gsam, ftd.gsam_rho, ftd.gsam_alpha, ftd.gsam_adaptive) == (
        0.01, 0, True, 0.01, 0.3, True)
    assert (ast.lr, ast.momentum, ast.weight_decay, ast.gp_weight) == (0.003, 0.9, 1e-3, 2.0)
    # x0.6 once epoch epochs//2+1 is done (the reference's `if e in [E//2+1]` after the epoch)
    assert [round(ast.lr_at(e, 10), 6) for e in range(10)] == [0.003] * 7 + [0.0018] * 3
    assert [round(ast.loss_scale(e), 3) for e in (0, 1, 9, 10, 30)] == [0.5, 0.55, 0.95, 1.0, 1.0]
    assert get_recipe("FTD") is ftd
    with pytest.raises(UnknownNameError, match="valid recipes"):
        get_recipe("sam")
    with pytest.raises(ConfigError):
        mtt.with_overrides(lr=-1)
    with pytest.raises(ConfigError, match="valid"):
        mtt.with_overrides(nesterov=True)


def test_mtt_expert_equals_reference_loop(tiny_real):
    """SGD 0.01, no momentum/decay, batch 256 (here 16), unseeded DSA per batch, snapshot per epoch."""
    job = ExpertJob(1, 7, RECIPES["mtt"].with_overrides(batch_size=16), "convnet", {"width": 8}, epochs=2)
    res = train_expert(job, tiny_real)
    net = build_model("convnet", tiny_real.num_classes, tiny_real.image_shape, seed=derive_seed(7, "expert", 1, "init"),
                      width=8)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    dsa = DSA(strategy_for(tiny_real.name), align_corners=True)
    want = [flatten_params(net)]
    for epoch in range(2):
        gen = make_generator(7, "expert", 1, "epoch", epoch)
        for idx in torch.randperm(len(tiny_real.train_labels), generator=gen).split(16):
            x = dsa(tiny_real.train_images[idx], gen)
            opt.zero_grad()
            F.cross_entropy(net(x), tiny_real.train_labels[idx]).backward()
            opt.step()
        want.append(flatten_params(net))
    assert res["epochs"] == [0, 1, 2]
    torch.testing.assert_close(res["snapshots"], torch.stack(want), rtol=1e-5, atol=1e-6)
    assert 0 <= res["test_accuracy"] <= 1 and 0 <= res["val_accuracy"] <= 1


def test_gradient_penalty_formula():
    net = build_model("convnet", 3, (2, 8, 8), seed=0, width=4)
    x = torch.randn(5, 2, 8, 8, dtype=torch.float64)
    net = net.double()
    gp = gradient_penalty(net, x)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xr).sum(), xr)
    want = ((g.pow(2).sum(dim=1).sqrt() - 1) ** 2).mean()  # one norm per pixel, over channels
    torch.testing.assert_close(gp, want)
    gp.backward()  # differentiable in the weights (double backward)
    assert all(p.grad is not None for p in net.parameters() if p.dim() > 1)


@pytest.mark.parametrize("recipe", ["ftd", "ast"])
def test_recipes_train_and_differ(tiny_real, tmp_path, recipe):
    kw = dict(num_experts=1, epochs=3, model_kwargs={"width": 8}, progress=False,
              recipe_overrides={"batch_size": 16})
    base = train_experts(tiny_real, tmp_path / "mtt", recipe="mtt", **kw)
    other = train_experts(tiny_real, tmp_path / recipe, recipe=recipe, **kw)
    assert other.recipe == recipe and other.stored_epochs == [0, 1, 2, 3]
    assert torch.equal(base.snapshot(0, 0), other.snapshot(0, 0))  # same initialisation (same seed)
    assert not torch.equal(base.snapshot(0, 3), other.snapshot(0, 3))
    assert torch.isfinite(other.trajectory(0)).all()


def test_keep_epochs_and_fp16(tiny_real, tmp_path):
    store = train_experts(tiny_real, tmp_path / "e", num_experts=2, epochs=4, keep_epochs=2, dtype="float16",
                          model_kwargs={"width": 8}, progress=False, recipe_overrides={"batch_size": 32})
    assert store.stored_epochs == [0, 1, 2] and store.epochs == 4 and store.dtype == "float16"
    assert ExpertStore.open(tmp_path / "e").num_experts == 2
    assert (tmp_path / "e" / "experts.json").exists()
    with pytest.raises(ConfigError, match="not stored"):
        store.snapshot(0, 3)


def test_chunked_penalty_gradient_equals_full_batch(monkeypatch):
    """AST's penalty is backpropagated in chunks to save memory; the gradient must not change."""
    import dsdistill.experts.trainer as trainer

    net = build_model("convnet", 3, (1, 8, 8), seed=0, width=4).double()
    x = torch.randn(10, 1, 8, 8, dtype=torch.float64)
    gradient_penalty(net, x).backward()
    full = [None if p.grad is None else p.grad.clone() for p in net.parameters()]  # biases get none
    net.zero_grad()
    for chunk in x.split(3):
        (gradient_penalty(net, chunk) * (len(chunk) / len(x))).backward()
    for a, p in zip(full, net.parameters()):
        assert (a is None) == (p.grad is None)
        if a is not None:
            torch.testing.assert_close(p.grad, a)
    assert trainer.GP_CHUNK < 256
