"""ResNet-18 (torchvision) with instance-norm or batch-norm, and a small-image stem.

DC's ``ResNet18`` uses ``GroupNorm(C, C)`` ("instancenorm") by default and a CIFAR stem (3x3 conv,
stride 1, no max pool). Here the network is torchvision's ``ResNet`` (same layers and
``state_dict`` keys as ``torchvision.models.resnet18``) with that stem swapped in for inputs of
at most 64x64; larger inputs keep the ImageNet stem.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from dsdistill.errors import ConfigError
from dsdistill.registry import MODELS


def _instance_norm(num_channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_channels, num_channels, affine=True)


class ResNet18(ResNet):
    """torchvision ResNet-18 with ``embed`` and a configurable norm and stem.

    Args:
        channel: Input channels C.
        num_classes: Number of output logits.
        im_size: Input spatial size (H, W); H <= 64 selects the small-image stem.
        norm: "instancenorm" (GroupNorm(C, C)) or "batchnorm".
        small_stem: Force (True) or forbid (False) the 3x3 stride-1 stem without max pool;
            None picks it for H <= 64.

    Attributes:
        feature_dim: 512.
    """

    def __init__(
        self,
        channel: int,
        num_classes: int,
        im_size: tuple[int, int] = (32, 32),
        norm: str = "instancenorm",
        small_stem: bool | None = None,
    ) -> None:
        if norm == "instancenorm":
            norm_layer = _instance_norm
        elif norm == "batchnorm":
            norm_layer = nn.BatchNorm2d
        else:
            raise ConfigError(f"unknown norm '{norm}' for ResNet18; choose one of: instancenorm, batchnorm")
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, norm_layer=norm_layer)
        if small_stem is None:
            small_stem = int(im_size[0]) <= 64
        if small_stem:
            self.conv1 = nn.Conv2d(channel, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        elif channel != 3:
            self.conv1 = nn.Conv2d(channel, 64, kernel_size=7, stride=2, padding=3, bias=False)
        # Same init torchvision gives every other conv.
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.feature_dim = 512

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, 512) globally pooled features (everything before ``fc``)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, num_classes) logits."""
        return self.fc(self.embed(x))


def _resnet18_factory(norm: str):
    def factory(channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32), **kwargs) -> ResNet18:
        return ResNet18(channel, num_classes, im_size, **{"norm": norm, **kwargs})

    return factory


resnet18 = MODELS.register("resnet18")(_resnet18_factory("instancenorm"))
resnet18.__doc__ = "ResNet-18 with instance norm (GroupNorm(C, C)), DC's default."
resnet18_bn = MODELS.register("resnet18_bn")(_resnet18_factory("batchnorm"))
resnet18_bn.__doc__ = "ResNet-18 with BatchNorm2d."
