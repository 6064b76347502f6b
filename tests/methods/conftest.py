"""Fixtures for condenser tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_experts(tmp_path_factory, tiny_real) -> dict[str, str]:
    """Expert directories on ``tiny_real``: ``{"mtt"|"ftd"|"ast": dir}``, 2 experts x 2 epochs each,
    a width-16 ConvNet (seconds to train)."""
    from dsdistill.experts import train_experts

    root = tmp_path_factory.mktemp("experts")
    out = {}
    for recipe in ("mtt", "ftd", "ast"):
        out[recipe] = str(root / recipe)
        train_experts(tiny_real, out[recipe], num_experts=2, epochs=2, recipe=recipe, model_kwargs={"width": 16},
                      seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_teachers(tmp_path_factory, tiny_real) -> str:
    """A teachers directory on ``tiny_real``: ``convnet_bn`` and ``shufflenetv2``, 2 epochs each (seconds)."""
    from dsdistill.teachers import TeacherRecipe, train_teachers

    root = tmp_path_factory.mktemp("teachers")
    recipe = TeacherRecipe(epochs=2, lr=0.05, batch_size=32)
    train_teachers(tiny_real, ["convnet_bn", "shufflenetv2"], root, recipe=recipe, seed=0, progress=False)
    return str(root)


@pytest.fixture(scope="session")
def condenser_overrides(tiny_experts, tiny_teachers) -> dict[str, dict]:
    """Extra settings some condensers need on ``tiny_real`` (the expert directories of trajectory matching,
    the teachers directory of the decoupled soft-label methods)."""
    return {"mtt": {"experts": tiny_experts["mtt"]}, "ftd": {"experts": tiny_experts["ftd"]},
            "ast": {"experts": tiny_experts["ast"]}, "datm": {"experts": tiny_experts["ftd"]},
            "sre2l": {"teachers": tiny_teachers}, "cvdd": {"teachers": tiny_teachers},
            "infer": {"teachers": tiny_teachers}, "nrr": {"teachers": tiny_teachers}}
