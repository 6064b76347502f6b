"""ZCA whitening: whitening effect, exact regularised covariance, inverse and storage round trips."""

from __future__ import annotations

import kornia
import pytest
import torch

from dsdistill.augment import ZCA

N, SHAPE = 2000, (3, 4, 4)
D = 48


def correlated_pixels(seed: int = 0) -> torch.Tensor:
    """``(N, 3, 4, 4)`` strongly correlated images in (0, 1): 6 shared factors plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, 6, generator=g) @ torch.randn(6, D, generator=g) + 0.5 * torch.randn(N, D, generator=g)
    return torch.sigmoid(0.5 * z).reshape(N, *SHAPE)


def cov(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1).double()
    flat = flat - flat.mean(0)
    return flat.T @ flat / (flat.shape[0] - 1)


def off_diagonal_ratio(c: torch.Tensor) -> float:
    off = c - torch.diag(torch.diag(c))
    return float(off.norm() / torch.diag(c).norm())


def test_whitens_to_identity_with_small_eps():
    x = correlated_pixels()
    zca = ZCA(eps=1e-6).fit(x)
    c_in, c_out = cov(x), cov(zca.transform(x))
    assert off_diagonal_ratio(c_in) > 1.0
    assert off_diagonal_ratio(c_out) < 1e-3 * off_diagonal_ratio(c_in)
    torch.testing.assert_close(c_out, torch.eye(D, dtype=torch.float64), rtol=0, atol=1e-2)


def test_default_eps_covariance_is_regularised_spectrum():
    # cov(out) = U diag(S / (S + eps)) U^T for cov(in) = U diag(S) U^T.
    x = correlated_pixels(1)
    zca = ZCA().fit(x)
    assert zca.eps == 0.1
    c_in = cov(x)
    s, u = torch.linalg.eigh(c_in)
    expected = u @ torch.diag(s / (s + 0.1)) @ u.T
    c_out = cov(zca.transform(x))
    torch.testing.assert_close(c_out, expected, rtol=0, atol=2e-3)
    # Soft whitening: the spectrum is flattened (condition number far smaller), not made flat.
    s_out = torch.linalg.eigvalsh(c_out)
    assert s_out[-1] / s_out[0] < 0.2 * s[-1] / s[0]
    assert off_diagonal_ratio(c_out) < off_diagonal_ratio(c_in)
    assert torch.allclose(zca.transform(x).reshape(N, -1).mean(0), torch.zeros(D), atol=1e-4)


def test_matches_kornia_forward_and_shape():
    x = correlated_pixels(2)
    zca = ZCA().fit(x)
    ref = kornia.enhance.ZCAWhitening(eps=0.1).fit(x)
    out = zca(x[:10])
    assert out.shape == (10, *SHAPE)
    torch.testing.assert_close(out, ref(x[:10]), rtol=0, atol=1e-5)


def test_inverse_round_trip():
    x = correlated_pixels(3)
    zca = ZCA().fit(x)
    err = (zca.inverse(zca.transform(x)) - x).abs().max()
    assert err < 1e-4


def test_state_round_trip_tensors_and_numpy():
    x = correlated_pixels(4)
    zca = ZCA().fit(x)
    state = zca.state()
    assert set(state) == {"mean", "matrix", "inverse", "eps"}
    for stored in (state, {k: (v.numpy() if torch.is_tensor(v) else v) for k, v in state.items()}):
        restored = ZCA.from_state(stored)
        assert restored.eps == zca.eps
        assert torch.equal(restored.transform(x[:16]), zca.transform(x[:16]))
        assert torch.equal(restored.inverse(x[:16]), zca.inverse(x[:16]))


def test_unfitted_raises():
    with pytest.raises(RuntimeError, match="not fitted"):
        ZCA().transform(torch.zeros(1, *SHAPE))
    with pytest.raises(RuntimeError, match="not fitted"):
        ZCA().state()
