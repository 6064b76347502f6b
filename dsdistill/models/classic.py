"""MLP, LeNet, AlexNet and VGG-11 as defined in ``VICO-UoE/DatasetCondensation/networks.py``.

The reference hard-codes flattened sizes for 28x28x1 and 32x32x3 inputs; here they are derived
from ``im_size`` (a no-grad dry run in eval mode), so the same layers also accept e.g. 64x64. On the
reference shapes the layers and parameter counts are unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from dsdistill.errors import ConfigError
from dsdistill.registry import MODELS


def _flat_dim(features: nn.Module, channel: int, im_size: tuple[int, int]) -> int:
    """Flattened size of ``features`` on one (channel, *im_size) image.

    Runs in eval mode so BatchNorm running statistics are untouched.
    """
    was_training = features.training
    features.eval()
    try:
        with torch.no_grad():
            out = features(torch.zeros(1, channel, int(im_size[0]), int(im_size[1])))
    except RuntimeError as exc:  # e.g. a pooling layer hit a 0x0 map
        raise ConfigError(f"input size {tuple(im_size)} is too small for this model: {exc}") from exc
    finally:
        features.train(was_training)
    return int(out[0].numel())


@MODELS.register("mlp")
class MLP(nn.Module):
    """Three-layer perceptron: flatten -> 128 -> 128 -> num_classes, ReLU between.

    Args:
        channel: Input channels C.
        num_classes: Number of output logits.
        im_size: Input spatial size (H, W); the first layer takes C*H*W inputs.

    Attributes:
        feature_dim: 128.
    """

    def __init__(self, channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32)) -> None:
        super().__init__()
        self.fc_1 = nn.Linear(channel * int(im_size[0]) * int(im_size[1]), 128)
        self.fc_2 = nn.Linear(128, 128)
        self.fc_3 = nn.Linear(128, num_classes)
        self.act = nn.ReLU()
        self.feature_dim = 128

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, 128) hidden features."""
        return self.act(self.fc_2(self.act(self.fc_1(torch.flatten(x, 1)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, num_classes) logits."""
        return self.fc_3(self.embed(x))


@MODELS.register("lenet")
class LeNet(nn.Module):
    """LeNet-5: two conv(k5)/ReLU/maxpool stages, then 120 -> 84 -> num_classes.

    1-channel inputs get ``padding=2`` in the first conv (28x28 -> 16*5*5 features, as 32x32x3).

    Args:
        channel: Input channels C.
        num_classes: Number of output logits.
        im_size: Input spatial size (H, W).

    Attributes:
        feature_dim: 84.
    """

    def __init__(self, channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channel, 6, kernel_size=5, padding=2 if channel == 1 else 0),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.fc_1 = nn.Linear(_flat_dim(self.features, channel, im_size), 120)
        self.fc_2 = nn.Linear(120, 84)
        self.fc_3 = nn.Linear(84, num_classes)
        self.act = nn.ReLU()
        self.feature_dim = 84

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, 84) features before the last layer."""
        out = torch.flatten(self.features(x), 1)
        return self.act(self.fc_2(self.act(self.fc_1(out))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, num_classes) logits."""
        return self.fc_3(self.embed(x))


@MODELS.register("alexnet")
class AlexNet(nn.Module):
    """The small-image AlexNet of DC: five convs (128-192-256-192-192), three max pools, one FC.

    1-channel inputs get ``padding=4`` in the first conv so 28x28 behaves as 32x32.

    Args:
        channel: Input channels C.
        num_classes: Number of output logits.
        im_size: Input spatial size (H, W).

    Attributes:
        feature_dim: Flattened conv features (192*4*4 = 3072 for 28px and 32px inputs).
    """

    def __init__(self, channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channel, 128, kernel_size=5, stride=1, padding=4 if channel == 1 else 2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(128, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(192, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 192, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(192, 192, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.feature_dim = _flat_dim(self.features, channel, im_size)
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, feature_dim) flattened conv features."""
        return torch.flatten(self.features(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, num_classes) logits."""
        return self.fc(self.embed(x))


VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(nn.Module):
    """VGG-11 with conv3x3 -> norm -> ReLU blocks and five 2x2 max pools, then one linear layer.

    As in DC, "instancenorm" is ``GroupNorm(C, C)`` and the first conv pads by 3 for 1-channel
    28x28 inputs (28 -> 32).

    Args:
        channel: Input channels C.
        num_classes: Number of output logits.
        im_size: Input spatial size (H, W).
        norm: "instancenorm" or "batchnorm".

    Attributes:
        feature_dim: Flattened features (512 for 28px and 32px inputs, 512*2*2 for 64px).
    """

    def __init__(
        self,
        channel: int,
        num_classes: int,
        im_size: tuple[int, int] = (32, 32),
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        if norm not in ("instancenorm", "batchnorm"):
            raise ConfigError(f"unknown norm '{norm}' for VGG11; choose one of: instancenorm, batchnorm")
        layers: list[nn.Module] = []
        in_ch = channel
        for i, v in enumerate(VGG11_CFG):
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            pad = 3 if (i == 0 and channel == 1 and int(im_size[0]) == 28) else 1
            layers += [
                nn.Conv2d(in_ch, v, kernel_size=3, padding=pad),
                nn.GroupNorm(v, v, affine=True) if norm == "instancenorm" else nn.BatchNorm2d(v),
                nn.ReLU(),
            ]
            in_ch = v
        self.features = nn.Sequential(*layers)
        self.feature_dim = _flat_dim(self.features, channel, im_size)
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, feature_dim) flattened conv features."""
        return torch.flatten(self.features(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, num_classes) logits."""
        return self.classifier(self.embed(x))


@MODELS.register("vgg11")
def vgg11(channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32), **kwargs) -> VGG11:
    """VGG-11 with instance norm (GroupNorm(C, C)), DC's default."""
    return VGG11(channel, num_classes, im_size, **{"norm": "instancenorm", **kwargs})


@MODELS.register("vgg11_bn")
def vgg11_bn(channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32), **kwargs) -> VGG11:
    """VGG-11 with BatchNorm2d."""
    return VGG11(channel, num_classes, im_size, **{"norm": "batchnorm", **kwargs})
