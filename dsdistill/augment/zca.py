"""ZCA whitening as the field uses it: ``kornia.enhance.ZCAWhitening(eps=0.1)`` fitted on the raw
[0, 1] training pixels (MTT, DATM, FTD, DD-Ranking), with the matrices kept as plain tensors so they
can be stored in the synthetic set's HDF5 file (kornia's own state_dict layout differs by version).
"""

from __future__ import annotations

from typing import Any

import kornia
import torch
from torch import Tensor


class ZCA:
    """A fitted ZCA transform on flattened images.

    ``transform(x) = (flat(x) - mean) @ matrix``; ``inverse(z) = flat(z) @ inverse + mean``.

    Args:
        eps: Regulariser added to the covariance eigenvalues (0.1 in the field).
    """

    def __init__(self, eps: float = 0.1) -> None:
        self.eps = float(eps)
        self.mean: Tensor | None = None  # (1, D)
        self.matrix: Tensor | None = None  # (D, D)
        self.inverse_matrix: Tensor | None = None  # (D, D)

    def fit(self, images: Tensor) -> "ZCA":
        """Fit on ``(N, C, H, W)`` images in [0, 1] (the raw training pixels)."""
        whitening = kornia.enhance.ZCAWhitening(eps=self.eps, compute_inv=True)
        whitening.fit(images.float())
        self.mean = whitening.mean_vector.detach().clone()
        self.matrix = whitening.transform_matrix.detach().clone()
        self.inverse_matrix = whitening.transform_inv.detach().clone()
        return self

    def _check(self) -> None:
        if self.matrix is None:
            raise RuntimeError("ZCA is not fitted")

    def transform(self, images: Tensor) -> Tensor:
        """``(N, C, H, W)`` pixels -> ZCA space, same shape."""
        self._check()
        flat = images.reshape(images.shape[0], -1)
        out = (flat - self.mean.to(flat)) @ self.matrix.to(flat)
        return out.reshape(images.shape)

    __call__ = transform

    def inverse(self, images: Tensor) -> Tensor:
        """``(N, C, H, W)`` ZCA-space images -> pixels, same shape."""
        self._check()
        flat = images.reshape(images.shape[0], -1)
        out = flat @ self.inverse_matrix.to(flat) + self.mean.to(flat)
        return out.reshape(images.shape)

    def state(self) -> dict[str, Any]:
        """Tensors and eps, for storage."""
        self._check()
        return {"mean": self.mean, "matrix": self.matrix, "inverse": self.inverse_matrix, "eps": self.eps}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "ZCA":
        """Rebuild from :meth:`state` output."""
        zca = cls(eps=float(state.get("eps", 0.1)))
        zca.mean = torch.as_tensor(state["mean"]).float().reshape(1, -1)
        zca.matrix = torch.as_tensor(state["matrix"]).float()
        zca.inverse_matrix = torch.as_tensor(state["inverse"]).float()
        return zca
