"""Tests for dsdistill.models: reference parameter counts, shapes, registry and seeding."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from dsdistill.errors import ConfigError, UnknownNameError
from dsdistill.models import MODELS, ConvNet, build_model

SMALL_SHAPES = [(1, 28, 28), (3, 32, 32)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "num_classes", "in_shape", "expected"),
    [
        ("convnet", 10, (3, 32, 32), 320_010),  # CIFAR-10
        ("convnet", 10, (1, 28, 28), 317_706),  # MNIST
        ("convnet", 100, (3, 32, 32), 504_420),  # CIFAR-100
        ("convnetd4", 200, (3, 64, 64), 857_160),  # Tiny-ImageNet
    ],
)
def test_convnet_reference_parameter_counts(name, num_classes, in_shape, expected):
    assert n_params(build_model(name, num_classes, in_shape)) == expected


def test_registry_holds_every_family():
    expected = {"convnet", "convnetd1", "convnetd2", "convnetd3", "convnetd4", "convnetd5",
                "convnet_bn", "convnet_ln", "convnet_gn", "convnet_nn", "convnetw32", "convnetw64",
                "mlp", "lenet", "alexnet", "vgg11", "vgg11_bn", "resnet18", "resnet18_bn"}
    assert expected <= set(MODELS.names())


@pytest.mark.parametrize("in_shape", SMALL_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", MODELS.names())
def test_forward_and_embed_shapes(name, in_shape):
    model = build_model(name, 7, in_shape, seed=0)
    x = torch.randn(2, *in_shape)
    assert isinstance(model.feature_dim, int)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        assert model.embed(x).shape == (2, model.feature_dim)


@pytest.mark.parametrize("name", ["convnetd4", "mlp", "lenet", "alexnet", "vgg11", "resnet18"])
def test_64px_inputs(name):
    model = build_model(name, 5, (3, 64, 64), seed=0)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)


def test_instancenorm_is_groupnorm_c_c():
    for name in ("convnet", "vgg11", "resnet18"):
        norms = [m for m in build_model(name, 10, (3, 32, 32)).modules()
                 if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, nn.InstanceNorm2d))]
        assert norms and all(isinstance(m, nn.GroupNorm) for m in norms), name
        assert all(m.num_groups == m.num_channels and m.affine for m in norms), name


def test_convnet_norm_and_pool_options():
    kinds = {"convnet_bn": nn.BatchNorm2d, "convnet_ln": nn.LayerNorm, "convnet_gn": nn.GroupNorm}
    for name, cls in kinds.items():
        assert any(isinstance(m, cls) for m in build_model(name, 10, (3, 32, 32)).modules())
    gn = [m for m in build_model("convnet_gn", 10, (3, 32, 32)).modules() if isinstance(m, nn.GroupNorm)]
    assert all(m.num_groups == 4 for m in gn)
    ln = [m for m in build_model("convnet_ln", 10, (3, 32, 32)).modules() if isinstance(m, nn.LayerNorm)]
    assert [tuple(m.normalized_shape) for m in ln] == [(128, 32, 32), (128, 16, 16), (128, 8, 8)]
    nn_model = build_model("convnet_nn", 10, (3, 32, 32))
    assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, nn.LayerNorm)) for m in nn_model.modules())
    assert any(isinstance(m, nn.MaxPool2d) for m in build_model("convnet_mp", 10, (3, 32, 32)).modules())


def test_mnist_convnet_pads_28_to_32():
    model = ConvNet(1, 10, im_size=(28, 28))
    assert model.features[0].padding == (3, 3)
    assert model.feature_dim == 2048
    assert model.embed(torch.zeros(3, 1, 28, 28)).shape == (3, 2048)
    # 3-channel and 1-channel 32px inputs keep padding 1.
    assert ConvNet(3, 10, im_size=(32, 32)).features[0].padding == (1, 1)


def test_kwargs_reach_constructor_and_override_presets():
    model = build_model("convnetd4", 10, (3, 64, 64), norm="batchnorm", width=64)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.feature_dim == 64 * 4 * 4
    assert build_model("convnet", 10, (3, 64, 64), depth=4).feature_dim == 128 * 4 * 4


def test_seed_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = build_model("convnet", 10, (3, 32, 32), seed=3)
    b = build_model("convnet", 10, (3, 32, 32), seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    c = build_model("convnet", 10, (3, 32, 32), seed=4)
    for (ka, pa), (_, pb), (_, pc) in zip(a.state_dict().items(), b.state_dict().items(),
                                          c.state_dict().items()):
        assert torch.equal(pa, pb), ka
    assert not torch.equal(a.features[0].weight, c.features[0].weight)
    r1 = build_model("resnet18_bn", 10, (3, 32, 32), seed=1)
    r2 = build_model("resnet18_bn", 10, (3, 32, 32), seed=1)
    assert torch.equal(r1.conv1.weight, r2.conv1.weight) and torch.equal(r1.fc.weight, r2.fc.weight)
    assert torch.equal(torch.get_rng_state(), state)


def test_construction_does_not_touch_batchnorm_statistics():
    model = build_model("vgg11_bn", 10, (3, 32, 32))
    assert model.training
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert int(m.num_batches_tracked) == 0 and torch.all(m.running_mean == 0)


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownNameError, match="convnet"):
        build_model("convnet9000", 10, (3, 32, 32))


def test_bad_options_raise_config_error():
    with pytest.raises(ConfigError):
        build_model("convnet", 10, (3, 32, 32), norm="weird")
    with pytest.raises(ConfigError):
        build_model("convnet", 10, (3, 32, 32), depth=6)  # 32 -> 0 spatial
    with pytest.raises(ConfigError):
        build_model("mlp", 10, (3, 32, 32), width=3)
    with pytest.raises(ConfigError):
        build_model("convnet", 10, (32, 32))


def test_functional_call_and_channels_last():
    model = build_model("convnet", 10, (3, 32, 32), seed=0)
    x = torch.randn(4, 3, 32, 32)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    out = functional_call(model, params, (x,))
    torch.testing.assert_close(out, model(x))
    out.sum().backward()
    assert all(p.grad is not None for p in params.values())
    cl_model = build_model("convnet", 10, (3, 32, 32), seed=0).to(memory_format=torch.channels_last)
    torch.testing.assert_close(cl_model(x.to(memory_format=torch.channels_last)), out.detach(),
                               rtol=1e-4, atol=1e-5)
