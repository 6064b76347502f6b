"""GSAM against the update of Zhuang et al. (2022), Alg. 1, on a quadratic, in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsdistill.experts.gsam import GSAM


def _problem(seed=0, d=6):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(d, d))
    a = m @ m.T + d * np.eye(d)  # SPD Hessian
    b = rng.normal(size=d)
    w0 = rng.normal(size=d)
    return a, b, w0


def _reference_step(a, b, w, lr, rho, alpha, adaptive, momentum=0.0, buf=None):
    """The paper's update: ascend to w + e, descend along g_p - alpha * g_perp (numpy)."""
    grad = lambda v: a @ v - b  # noqa: E731  f(v) = v'Av/2 - b'v
    g = grad(w)
    if adaptive:
        e = rho * w * w * g / np.linalg.norm(np.abs(w) * g)
    else:
        e = rho * g / np.linalg.norm(g)
    g_p = grad(w + e)
    g_perp = g - (g @ g_p) / (g_p @ g_p) * g_p
    d = g_p - alpha * g_perp
    buf = d if buf is None else momentum * buf + d
    return w - lr * buf, buf


@pytest.mark.parametrize("adaptive", [True, False])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_matches_paper_update_on_quadratic(adaptive, momentum):
    a, b, w0 = _problem()
    at, bt = torch.tensor(a), torch.tensor(b)
    w = torch.tensor(w0, requires_grad=True)
    opt = GSAM([w], lr=0.05, momentum=momentum, rho=0.3, alpha=0.4, adaptive=adaptive)

    def closure():
        opt.zero_grad()
        loss = 0.5 * w @ at @ w - bt @ w
        loss.backward()
        return loss

    ref, buf = w0.copy(), None
    for _ in range(5):
        loss = opt.step(closure)
        assert np.isclose(float(loss), 0.5 * ref @ a @ ref - b @ ref)
        ref, buf = _reference_step(a, b, ref, 0.05, 0.3, 0.4, adaptive, momentum, buf)
        np.testing.assert_allclose(w.detach().numpy(), ref, rtol=1e-10, atol=1e-12)


def test_perturbation_is_not_plain_sgd_and_reduces_to_sgd_without_rho():
    a, b, w0 = _problem(1)
    at, bt = torch.tensor(a), torch.tensor(b)
    results = {}
    for rho in (0.0, 0.5):
        w = torch.tensor(w0, requires_grad=True)
        opt = GSAM([w], lr=0.05, rho=rho, alpha=0.3, adaptive=False)

        def closure():
            opt.zero_grad()
            loss = 0.5 * w @ at @ w - bt @ w
            loss.backward()
            return loss

        opt.step(closure)
        results[rho] = w.detach().numpy()
    np.testing.assert_allclose(results[0.0], w0 - 0.05 * (a @ w0 - b), rtol=1e-12)
    assert np.abs(results[0.5] - results[0.0]).max() > 1e-4


def test_state_dict_round_trip_holds_momentum():
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = GSAM([w], lr=0.1, momentum=0.9, rho=0.01)

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    state = opt.state_dict()
    assert "momentum_buffer" in state["state"][0]
    w2 = torch.tensor(w.detach().numpy(), requires_grad=True)
    opt2 = GSAM([w2], lr=0.1, momentum=0.9, rho=0.01)
    opt2.load_state_dict(state)
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], state["state"][0]["momentum_buffer"])


def test_needs_closure():
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError):
        GSAM([w], lr=0.1).step(None)
