"""The ConvNet family used throughout dataset distillation (DC, DSA, DM, MTT and successors).

Mirrors ``ConvNet`` in ``VICO-UoE/DatasetCondensation/networks.py`` (identical in
``mtt-distillation``): ``depth`` blocks of ``Conv2d(k=3) -> norm -> act -> pool`` and one linear
head on the flattened features. "instancenorm" is ``nn.GroupNorm(C, C, affine=True)``, not
``nn.InstanceNorm2d``; that is what every published number was produced with.

Example:
    >>> import torch
    >>> net = ConvNet(3, 10, im_size=(32, 32))
    >>> sum(p.numel() for p in net.parameters())
    320010
    >>> net.embed(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 2048])
"""

from __future__ import annotations

import torch
from torch import nn

from dsdistill.errors import ConfigError
from dsdistill.registry import MODELS

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
POOLINGS = ("avgpooling", "maxpooling", "none")
ACTS = ("relu", "sigmoid", "leakyrelu")


def _act(name: str) -> nn.Module:
    # Not in-place: keeps the model safe under torch.func transforms and double backward.
    if name == "relu":
        return nn.ReLU()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01)
    raise ConfigError(f"unknown activation '{name}' for ConvNet; choose one of: {', '.join(ACTS)}")


def _norm(name: str, shape: tuple[int, int, int]) -> nn.Module | None:
    c = shape[0]
    if name == "instancenorm":
        return nn.GroupNorm(c, c, affine=True)
    if name == "batchnorm":
        return nn.BatchNorm2d(c, affine=True)
    if name == "layernorm":
        return nn.LayerNorm(list(shape), elementwise_affine=True)
    if name == "groupnorm":
        return nn.GroupNorm(4, c, affine=True)
    if name == "none":
        return None
    raise ConfigError(f"unknown norm '{name}' for ConvNet; choose one of: {', '.join(NORMS)}")


def _pool(name: str) -> nn.Module | None:
    if name == "avgpooling":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if name == "maxpooling":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    if name == "none":
        return None
    raise ConfigError(f"unknown pooling '{name}' for ConvNet; choose one of: {', '.join(POOLINGS)}")


@MODELS.register("convnet")
class ConvNet(nn.Module):
    """DC/MTT ConvNet: ``depth`` x [Conv3x3(width) -> norm -> act -> pool] -> Linear.

    A 1-channel 28x28 input (MNIST, FashionMNIST) gets ``padding=3`` in the first conv so it is
    processed as 32x32, exactly as the reference (``317,706`` parameters on MNIST).

    Args:
        channel: Input channels C.
        num_classes: Number of output logits.
        im_size: Input spatial size (H, W).
        width: Channels of every conv layer.
        depth: Number of conv blocks (3 for 32px, 4 for 64px, 5 for 128px in MTT).
        act: "relu", "sigmoid" or "leakyrelu".
        norm: "instancenorm" (GroupNorm(C, C)), "batchnorm", "layernorm" (LayerNorm([C, H, W])),
            "groupnorm" (GroupNorm(4, C)) or "none".
        pooling: "avgpooling", "maxpooling" or "none".

    Attributes:
        feature_dim: Size of the flattened features fed to the head (2048 for the default net
            on 32x32 or 28x28 inputs).
    """

    def __init__(
        self,
        channel: int,
        num_classes: int,
        im_size: tuple[int, int] = (32, 32),
        width: int = 128,
        depth: int = 3,
        act: str = "relu",
        norm: str = "instancenorm",
        pooling: str = "avgpooling",
    ) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ConfigError(f"ConvNet needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        h, w = int(im_size[0]), int(im_size[1])
        layers: list[nn.Module] = []
        in_ch = channel
        for d in range(depth):
            pad = 3 if (d == 0 and channel == 1 and h == 28) else 1
            layers.append(nn.Conv2d(in_ch, width, kernel_size=3, padding=pad))
            h, w = h + 2 * pad - 2, w + 2 * pad - 2
            norm_layer = _norm(norm, (width, h, w))
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(_act(act))
            pool_layer = _pool(pooling)
            if pool_layer is not None:
                layers.append(pool_layer)
                h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise ConfigError(
                    f"ConvNet depth {depth} is too deep for {tuple(im_size)} inputs; use a smaller depth"
                )
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.feature_shape = (width, h, w)
        self.feature_dim = width * h * w
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features.

        Args:
            x: Images, shape (N, C, H, W).

        Returns:
            Flattened conv features, shape (N, feature_dim).
        """
        return torch.flatten(self.features(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits.

        Args:
            x: Images, shape (N, C, H, W).

        Returns:
            Logits, shape (N, num_classes).
        """
        return self.classifier(self.embed(x))


def _variant(name: str, doc: str, **preset: object) -> None:
    """Register ``name`` as ConvNet with ``preset`` defaults; caller kwargs still override them."""

    def factory(channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32), **kwargs) -> ConvNet:
        return ConvNet(channel, num_classes, im_size, **{**preset, **kwargs})

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    MODELS.register(name)(factory)


for _d in range(1, 6):
    _variant(f"convnetd{_d}", f"ConvNet of depth {_d} (MTT: D4 for 64px, D5 for 128px).", depth=_d)
for _w in (32, 64, 256):
    _variant(f"convnetw{_w}", f"ConvNet of width {_w}.", width=_w)
_variant("convnet_bn", "ConvNet with BatchNorm2d.", norm="batchnorm")
_variant("convnet_ln", "ConvNet with LayerNorm([C, H, W]).", norm="layernorm")
_variant("convnet_gn", "ConvNet with GroupNorm(4, C).", norm="groupnorm")
_variant("convnet_nn", "ConvNet without normalisation.", norm="none")
_variant("convnet_mp", "ConvNet with max pooling.", pooling="maxpooling")
_variant("convnetd4_bn", "Depth-4 ConvNet with BatchNorm2d (DC-Bench's ConvNet-4-BN).", depth=4, norm="batchnorm")
