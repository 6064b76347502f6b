"""Hypothesis fuzz: a mutated expert file is either refused with SyntheticFileError or reads back
exactly as written (bit flips in unused bytes); never a crash, a hang or silently different weights."""

from __future__ import annotations

import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dsdistill.models  # noqa: F401
from dsdistill.errors import SyntheticFileError
from dsdistill.experts import ExpertStore, param_spec, write_expert
from dsdistill.experts.store import expert_path
from dsdistill.models import build_model


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    net = build_model("convnet", 4, (1, 16, 16), seed=0, width=8)
    names, shapes = param_spec(net)
    meta = dict(model="convnet", dataset="x", recipe="ftd", space="normalized", num_classes=4,
                image_shape=(1, 16, 16), param_names=names, param_shapes=shapes, expert=0, seed=1, epochs_trained=2,
                test_accuracy=0.5, val_accuracy=0.5, model_kwargs={"width": 8})
    snaps = torch.randn(3, sum(p.numel() for p in net.parameters()), generator=torch.Generator().manual_seed(0))
    write_expert(expert_path(d, 0), snaps, [0, 1, 2], meta, history={"train_loss": [1.0, 2.0]})
    return expert_path(d, 0).read_bytes(), _read(d)


def _read(d):
    store = ExpertStore.open(d)
    return store.trajectory(0), store.infos[0]["test_accuracy"], store.param_names, store.param_shapes, \
        store.stored_epochs, store.model_kwargs, store.recipe


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**9), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 10**9), st.just(0)),
    st.tuples(st.just("overwrite"), st.integers(0, 10**9), st.integers(0, 255)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_files_fail_cleanly(good, tmp_path, mutations):
    raw, ref = good
    data = bytearray(raw)
    for kind, pos, arg in mutations:
        if not data:
            break
        pos %= len(data)
        if kind == "flip":
            data[pos] ^= 1 << arg
        elif kind == "truncate":
            del data[pos:]
        else:
            data[pos] = arg
    d = tmp_path / "m"
    d.mkdir(exist_ok=True)
    expert_path(d, 0).write_bytes(bytes(data))
    started = time.monotonic()
    try:
        got = _read(d)
    except SyntheticFileError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert torch.equal(got[0], ref[0]) and got[1:] == ref[1:]
    assert time.monotonic() - started < 5
