"""Committee architectures from torchvision with small-image stems: MobileNetV2, ShuffleNetV2,
DenseNet-121 and ResNet-50 (ResNet-18 lives in :mod:`dsdistill.models.resnet`).

These are the teacher pool of SRe2L / CV-DD (SOFTLABEL.md sections 1-2). Every network is the
torchvision module (same layers and ``state_dict`` keys) with two changes for inputs of at most
64x64 pixels, as the CIFAR/Tiny versions of those repositories do:

* the stem keeps full resolution: a 3x3 stride-1 first convolution taking ``channel`` inputs, and
  no stem max pool (ResNet-50, ShuffleNetV2, DenseNet-121);
* MobileNetV2 additionally runs its first stride-2 inverted-residual stage (24 channels) at
  stride 1, so a 32x32 input ends at 4x4 instead of 1x1 (kuangliu's CIFAR MobileNetV2 does the same).

Larger inputs keep the ImageNet stems (with the first convolution adapted to ``channel``). All use
BatchNorm, which the BN-statistics inversion of SRe2L needs. Each has ``embed`` (pooled features
before the classifier) and ``feature_dim``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models import densenet121 as tv_densenet121
from torchvision.models import mobilenet_v2 as tv_mobilenet_v2
from torchvision.models import shufflenet_v2_x1_0 as tv_shufflenet_v2
from torchvision.models.resnet import Bottleneck, ResNet

from dsdistill.registry import MODELS

SMALL_INPUT = 64  # inputs of at most this height use the small-image stems


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int, bias: bool = False) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, kernel_size=kernel, stride=stride, padding=kernel // 2, bias=bias)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # torchvision's conv init
    return conv


def _small(im_size: tuple[int, int], small_stem: bool | None) -> bool:
    return int(im_size[0]) <= SMALL_INPUT if small_stem is None else bool(small_stem)


class MobileNetV2(nn.Module):
    """torchvision MobileNetV2 (width 1.0) with a small-image stem.

    Args:
        channel: Input channels C.
        num_classes: Number of output logits.
        im_size: Input (H, W); H <= 64 selects the small-image variant.
        small_stem: Force (True) or forbid (False) the small-image variant.

    Attributes:
        feature_dim: 1280.
    """

    def __init__(self, channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32),
                 small_stem: bool | None = None) -> None:
        super().__init__()
        net = tv_mobilenet_v2(weights=None, num_classes=num_classes)
        small = _small(im_size, small_stem)
        if small or channel != 3:
            net.features[0][0] = _conv(channel, 32, 3, 1 if small else 2)
        if small:
            net.features[2].conv[1][0].stride = (1, 1)  # depthwise conv of the first 24-channel block
        self.features, self.classifier = net.features, net.classifier
        self.feature_dim = 1280

    def embed(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, 1280) globally pooled features."""
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, num_classes) logits."""
        return self.classifier(self.embed(x))


class ShuffleNetV2(nn.Module):
    """torchvision ShuffleNetV2 x1.0 with a small-image stem (stride-1 conv1, no max pool).

    Attributes:
        feature_dim: 1024.
    """

    def __init__(self, channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32),
                 small_stem: bool | None = None) -> None:
        super().__init__()
        net = tv_shufflenet_v2(weights=None, num_classes=num_classes)
        small = _small(im_size, small_stem)
        if small or channel != 3:
            net.conv1[0] = _conv(channel, 24, 3, 1 if small else 2)
        if small:
            net.maxpool = nn.Identity()
        self.conv1, self.maxpool, self.conv5, self.fc = net.conv1, net.maxpool, net.conv5, net.fc
        self.stage2, self.stage3, self.stage4 = net.stage2, net.stage3, net.stage4
        self.feature_dim = 1024

    def embed(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, 1024) globally pooled features."""
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return x.mean([2, 3])

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, num_classes) logits."""
        return self.fc(self.embed(x))


class DenseNet121(nn.Module):
    """torchvision DenseNet-121 with a small-image stem (3x3 stride-1 conv0, no pool0).

    Attributes:
        feature_dim: 1024.
    """

    def __init__(self, channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32),
                 small_stem: bool | None = None) -> None:
        super().__init__()
        net = tv_densenet121(weights=None, num_classes=num_classes)
        small = _small(im_size, small_stem)
        if small or channel != 3:
            net.features.conv0 = _conv(channel, 64, 3 if small else 7, 1 if small else 2)
        if small:
            net.features.pool0 = nn.Identity()
        self.features, self.classifier = net.features, net.classifier
        self.feature_dim = 1024

    def embed(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, 1024) globally pooled features."""
        x = nn.functional.relu(self.features(x))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, num_classes) logits."""
        return self.classifier(self.embed(x))


class ResNet50(ResNet):
    """torchvision ResNet-50 (BatchNorm) with the CIFAR stem (3x3 stride-1 conv1, no max pool).

    Attributes:
        feature_dim: 2048.
    """

    def __init__(self, channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32),
                 small_stem: bool | None = None) -> None:
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
        small = _small(im_size, small_stem)
        if small or channel != 3:
            self.conv1 = _conv(channel, 64, 3 if small else 7, 1 if small else 2)
        if small:
            self.maxpool = nn.Identity()
        self.feature_dim = 2048

    def embed(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, 2048) globally pooled features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, num_classes) logits."""
        return self.fc(self.embed(x))


def _factory(cls: type):
    def factory(channel: int, num_classes: int, im_size: tuple[int, int] = (32, 32), **kwargs) -> nn.Module:
        return cls(channel, num_classes, im_size, **kwargs)

    factory.__doc__ = cls.__doc__.splitlines()[0]
    return factory


mobilenetv2 = MODELS.register("mobilenetv2")(_factory(MobileNetV2))
shufflenetv2 = MODELS.register("shufflenetv2")(_factory(ShuffleNetV2))
densenet121 = MODELS.register("densenet121")(_factory(DenseNet121))
resnet50 = MODELS.register("resnet50")(_factory(ResNet50))
