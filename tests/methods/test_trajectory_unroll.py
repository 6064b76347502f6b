"""The student unroll: ``checkpoint`` equals ``full``; ``tesla`` is first order in the lr."""

import pytest
import torch

from dsdistill.augment import DSA
from dsdistill.methods.trajectory.student import FunctionalStudent
from dsdistill.methods.trajectory.unroll import Inner, make_plan, matching_loss, unroll
from dsdistill.models import build_model


def _problem(seed=0):
    net = build_model("convnet", 4, (1, 16, 16), seed=seed, width=8, depth=2).double()
    student = FunctionalStudent(net)
    g = torch.Generator().manual_seed(seed)
    theta0 = torch.cat([p.detach().flatten() for p in net.parameters()])
    target = theta0 + 0.05 * torch.randn(student.num_params, generator=g, dtype=torch.float64)
    images = torch.randn(8, 1, 16, 16, generator=g, dtype=torch.float64)
    soft = torch.randn(8, 4, generator=g, dtype=torch.float64)
    return student, theta0, target, images, soft


def _grads(student, theta0, target, images, soft, plan, mode, lr=0.3, momentum=0.0, dsa=None):
    x = images.clone().requires_grad_(True)
    lr_t = torch.tensor(lr, dtype=torch.float64, requires_grad=True)
    s = None if soft is None else soft.clone().requires_grad_(True)
    inner = Inner(student, plan, dsa, torch.arange(4).repeat_interleave(2), momentum=momentum)
    thetas = unroll(inner, theta0, x, lr_t, s, mode)
    loss = sum(matching_loss(t, theta0, target) for t in thetas)
    loss.backward()
    out = [x.grad, lr_t.grad.view(1)] + ([] if s is None else [s.grad])
    return loss.detach(), torch.cat([o.flatten() for o in out])


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("soft", [False, True])
def test_checkpoint_gradient_equals_full(momentum, soft):
    student, theta0, target, images, soft_t = _problem()
    dsa = DSA("color_crop_cutout_scale_rotate")
    plan = make_plan(8, (1, 16, 16), 6, 3, dsa, torch.Generator().manual_seed(1), record=(2, 4))
    args = (student, theta0, target, images, soft_t if soft else None, plan)
    loss_f, g_full = _grads(*args, "full", momentum=momentum, dsa=dsa)
    loss_c, g_ckpt = _grads(*args, "checkpoint", momentum=momentum, dsa=dsa)
    assert torch.allclose(loss_f, loss_c, rtol=1e-12)
    assert _rel(g_ckpt, g_full) <= 1e-5
    assert g_full.norm() > 0


def test_tesla_exact_for_one_step_and_first_order_in_lr():
    student, theta0, target, images, _ = _problem(1)
    one = make_plan(8, (1, 16, 16), 1, 0, None, torch.Generator().manual_seed(0))
    _, g_full = _grads(student, theta0, target, images, None, one, "full")
    _, g_tesla = _grads(student, theta0, target, images, None, one, "tesla")
    assert _rel(g_tesla, g_full) < 1e-10
    plan = make_plan(8, (1, 16, 16), 6, 4, None, torch.Generator().manual_seed(0))
    errors, n = [], images.numel()
    for lr in (1e-4, 1e-3, 1e-2, 0.3):
        _, g_full = _grads(student, theta0, target, images, None, plan, "full", lr=lr)
        _, g_tesla = _grads(student, theta0, target, images, None, plan, "tesla", lr=lr)
        errors.append(_rel(g_tesla[:n], g_full[:n]))  # image gradient
    # the dropped terms are O(lr): the error shrinks about tenfold per tenfold smaller lr
    assert errors[0] < 2e-3 and 5 < errors[1] / errors[0] < 20 and 5 < errors[2] / errors[1] < 20
    assert errors[3] > 0.1  # at a large lr tesla is far from exact


def test_plan_follows_mtt_batching():
    plan = make_plan(10, (1, 4, 4), 5, 4, None, torch.Generator().manual_seed(0), record=(2, 99))
    sizes = [len(c) for c in plan.chunks]
    assert sizes == [4, 4, 2, 4, 4]  # chunks of a permutation, a fresh one when it runs out
    assert sorted(torch.cat(plan.chunks[:3]).tolist()) == list(range(10))
    assert plan.record == (2, 5)
    again = make_plan(10, (1, 4, 4), 5, 4, None, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(plan.chunks, again.chunks))


def test_unknown_mode_is_refused():
    student, theta0, target, images, _ = _problem()
    plan = make_plan(8, (1, 16, 16), 1, 0, None, torch.Generator())
    with pytest.raises(ValueError, match="unroll must be one of"):
        unroll(Inner(student, plan, None, torch.zeros(8, dtype=torch.long)), theta0, images,
               torch.tensor(0.1, dtype=torch.float64), None, "fast")
