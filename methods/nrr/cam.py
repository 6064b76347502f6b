"""Class activation maps of the toolkit's teachers, as an exact spatial decomposition of a logit.

For a classifier whose logit ``z_c`` depends on the last spatial feature map ``F`` (``(C, h, w)``)
only through positively homogeneous, piecewise-linear operations (flatten + Linear in the DC
ConvNet family; ReLU, average/adaptive pooling and a Linear head in ResNet, ShuffleNetV2,
MobileNetV2, DenseNet), Euler's theorem gives ``z_c - b_c = sum_{k,i,j} F_kij * dz_c/dF_kij``.
The raw map

    A_c(i, j) = sum_k F_kij * dz_c / dF_kij          (``(h, w)``)

therefore sums exactly to the logit minus the head bias. For the ConvNet's flatten + Linear head
it equals ``sum_k W_c[k, i, j] F_kij`` (each position's share of the logit); for a global-average
head it is Zhou et al.'s CAM ``sum_k W_ck F_kij / (h w)``. If an architecture has a non-homogeneous
op after that map, ``A_c`` is Grad x Activation (a first-order approximation);
:attr:`ClassActivation.exact` records which case a teacher is, checked numerically on a probe batch.

The map used is the output of the last module (in forward completion order) that returns a
``(N, C, h, w)`` tensor with ``h * w > 1``. :meth:`ClassActivation.maps` upsamples ``A_c``
bilinearly to the image size and min-max normalises each image's map to [0, 1] (a constant map
becomes all zeros: no critical pixel). The small alignment offset of the first conv's padding
(ConvNet pads 28 px inputs by 3) is ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsdistill.errors import ConfigError


class ClassActivation:
    """CAMs of one frozen, eval-mode classifier.

    Args:
        model: The classifier (its parameters may be frozen).
        probe: ``(n, C, H, W)`` a few inputs to locate the feature map and check exactness.

    Attributes:
        layer: Qualified name of the module whose output is decomposed.
        map_size: ``(h, w)`` of the raw maps.
        exact: Whether ``A_c.sum() + b_c == z_c`` held on the probe batch.
    """

    def __init__(self, model: nn.Module, probe: Tensor) -> None:
        self.model = model
        names = {m: n for n, m in model.named_modules()}
        order: list[tuple[str, nn.Module, tuple[int, ...]]] = []

        def record(module, inputs, output):
            if isinstance(output, Tensor):
                order.append((names[module], module, tuple(output.shape)))

        handles = [m.register_forward_hook(record) for m in model.modules()]
        try:
            with torch.no_grad():
                logits = model(probe[:2])
        finally:
            for h in handles:
                h.remove()
        spatial = [(n, m, s) for n, m, s in order if len(s) == 4 and s[2] * s[3] > 1]
        if not spatial:
            raise ConfigError(f"{type(model).__name__} has no spatial feature map (a module returning (N, C, h, w) "
                              "with h*w > 1); NRR's class activation maps need a convolutional teacher")
        self.layer, self._module, shape = spatial[-1]
        self.map_size = shape[2:]
        heads = [m for _, m, s in order if tuple(s) == tuple(logits.shape) and isinstance(m, nn.Linear)]
        self._bias = heads[-1].bias if heads and heads[-1].bias is not None else None
        self.exact = self._check(probe[:8])

    def _check(self, probe: Tensor) -> bool:
        with torch.no_grad():
            logits = self.model(probe)
        cls = logits.argmax(1)
        total = self.decompose(probe, cls).sum((1, 2))
        bias = self._bias.detach()[cls].to(total) if self._bias is not None else torch.zeros_like(total)
        target = logits.gather(1, cls[:, None])[:, 0].to(total)
        return bool(torch.allclose(total + bias, target, rtol=1e-3, atol=1e-3 * (1 + float(target.abs().max()))))

    def decompose(self, x: Tensor, classes: Tensor, chunk: int = 256) -> Tensor:
        """Raw maps ``A_c`` (module docstring).

        Args:
            x: ``(N, C, H, W)`` inputs.
            classes: ``(N,)`` class of each map.
            chunk: Forward chunk size.

        Returns:
            ``(N, h, w)`` float32; ``A.sum((1, 2)) + bias[classes]`` equals the logits when :attr:`exact`.
        """
        classes = classes.to(x.device).long()
        out = []
        for xs, cs in zip(x.split(chunk), classes.split(chunk)):
            store: dict[str, Tensor] = {}

            def hook(module, inputs, output, store=store):
                store["f"] = output.detach().requires_grad_(True)  # a leaf: the map's gradient, not x's
                return store["f"]

            handle = self._module.register_forward_hook(hook)
            try:
                with torch.enable_grad():
                    logits = self.model(xs.detach())
                    picked = logits.gather(1, cs[:, None]).sum()
                    (grad,) = torch.autograd.grad(picked, store["f"])
            finally:
                handle.remove()
            out.append((grad * store["f"].detach()).sum(1).float())
        return torch.cat(out)

    def maps(self, x: Tensor, classes: Tensor) -> Tensor:
        """``(N, H, W)`` CAMs upsampled to the input size and min-max normalised to [0, 1] per image."""
        raw = self.decompose(x, classes)
        up = F.interpolate(raw[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        lo = up.amin((1, 2), keepdim=True)
        span = up.amax((1, 2), keepdim=True) - lo
        return torch.where(span > 0, (up - lo) / span.clamp(min=1e-12), torch.zeros_like(up))
