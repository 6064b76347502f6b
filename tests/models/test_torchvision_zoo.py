"""The committee networks: parameter counts against torchvision's and the known CIFAR figures, stems."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dsdistill.models import build_model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# torchvision's ImageNet models (1000 classes): a small-image stem with the same kernel keeps the
# count (MobileNetV2, ShuffleNetV2: 3x3 stems), a 7x7 -> 3x3 stem removes 64 * 3 * (49 - 9) = 7680.
@pytest.mark.parametrize(("name", "expected"), [
    ("mobilenetv2", 3_504_872),
    ("shufflenetv2", 2_278_604),
    ("densenet121", 7_978_856 - 7_680),
    ("resnet50", 25_557_032 - 7_680),
])
def test_parameter_counts_match_torchvision(name, expected):
    assert n_params(build_model(name, 1000, (3, 32, 32))) == expected


@pytest.mark.parametrize("name", ["mobilenetv2", "shufflenetv2", "densenet121", "resnet50"])
def test_imagenet_size_keeps_torchvision_stem(name):
    import torchvision.models as tvm

    tv = {"mobilenetv2": tvm.mobilenet_v2, "shufflenetv2": tvm.shufflenet_v2_x1_0, "densenet121": tvm.densenet121,
          "resnet50": tvm.resnet50}[name](weights=None)
    ours = build_model(name, 1000, (3, 224, 224))
    assert n_params(ours) == n_params(tv)
    assert set(ours.state_dict()) == set(tv.state_dict())  # torchvision checkpoints load


def test_cifar10_resnet50_count_and_mnist_stems():
    assert n_params(build_model("resnet50", 10, (3, 32, 32))) == 23_520_842  # the usual CIFAR ResNet-50 figure
    # 1-channel stems: only the first convolution shrinks (3 -> 1 input channel).
    for name, out_ch in [("mobilenetv2", 32), ("shufflenetv2", 24), ("densenet121", 64), ("resnet50", 64)]:
        rgb, gray = build_model(name, 10, (3, 28, 28)), build_model(name, 10, (1, 28, 28))
        assert n_params(rgb) - n_params(gray) == 2 * out_ch * 9, name


@pytest.mark.parametrize("name", ["mobilenetv2", "shufflenetv2", "densenet121", "resnet50"])
def test_small_inputs_keep_resolution_and_use_batchnorm(name):
    model = build_model(name, 10, (1, 28, 28), seed=0).eval()
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.stride == (1, 1) and first.kernel_size == (3, 3) and first.in_channels == 1
    with torch.no_grad():
        x = torch.randn(2, 1, 28, 28)
        assert model(x).shape == (2, 10) and model.embed(x).shape == (2, model.feature_dim)
        assert torch.allclose(model(x), model.fc(model.embed(x)) if hasattr(model, "fc") else
                              model.classifier(model.embed(x)))
