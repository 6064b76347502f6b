"""CV-DD: voter schedules, prior weights from validation accuracy, committee labels, options."""

from __future__ import annotations

import json
import math
import shutil
from itertools import combinations
from types import SimpleNamespace

import pytest
import torch

import dsdistill.methods  # noqa: F401
from dsdistill.errors import ConfigError
from dsdistill.methods.sre2l.cvdd import CVDD
from dsdistill.methods.sre2l.voting import resolve_schedule, voter_schedule, voter_weights
from dsdistill.models import build_model
from dsdistill.registry import CONDENSERS

FAST = {"iterations": 2, "label_epochs": 2, "patch_pool": 8, "classes_per_batch": 4}


def test_schedules():
    g = torch.Generator().manual_seed(0)
    priors = [50.0, 70.0, 60.0, 40.0, 65.0]
    assert voter_schedule(priors, 1, "auto", g) == [[1, 4]]  # IPC 1: the top-2 priors
    assert voter_schedule(priors, 3, "top2", g) == [[1, 4]] * 3
    pairs = voter_schedule(priors, 10, "auto", g)  # IPC 10: every pair once, across IPC indices
    assert pairs == [list(p) for p in combinations(range(5), 2)]
    assert voter_schedule(priors, 12, "pairs", g)[10:] == [[0, 1], [0, 2]]  # cycles
    rnd = voter_schedule(priors, 50, "auto", torch.Generator().manual_seed(1))  # IPC 50: random pairs
    assert len(rnd) == 50 and all(len(v) == 2 and v[0] < v[1] for v in rnd) and len({tuple(v) for v in rnd}) > 3
    assert rnd == voter_schedule(priors, 50, "random_pairs", torch.Generator().manual_seed(1))
    assert voter_schedule(priors, 2, "all", g) == [[0, 1, 2, 3, 4]] * 2
    assert voter_schedule([80.0], 3, "pairs", g) == [[0]] * 3
    assert [resolve_schedule("auto", k) for k in (1, 10, 49, 50)] == ["top2", "pairs", "pairs", "random_pairs"]
    with pytest.raises(ValueError):
        voter_schedule(priors, 2, "bogus", g)


def test_weights():
    g = torch.Generator().manual_seed(0)
    w = voter_weights([64.0, 60.6], "prior", 5.0, g)
    e = [math.exp(64 / 5), math.exp(60.6 / 5)]
    assert w.tolist() == pytest.approx([e[0] / sum(e), e[1] / sum(e)])
    assert voter_weights([64.0, 60.6, 50.0], "prior", 10.0, g).sum().item() == pytest.approx(1.0)
    assert voter_weights([1.0, 2.0, 3.0, 4.0], "equal", 5.0, g).tolist() == [0.25] * 4
    r = voter_weights([1.0, 2.0, 3.0], "random", 5.0, g)
    assert r.sum().item() == pytest.approx(1.0) and (r > 0).all() and len(set(r.tolist())) == 3


def _fake(name, val, test):
    return SimpleNamespace(name=name, model=build_model("convnet_bn", 4, (1, 16, 16)), val_accuracy=val,
                           prior=100 * val, meta={"test_accuracy": test})


def test_plan_uses_validation_priors_only():
    committee = [_fake("a", 0.6, 0.99), _fake("b", 0.7, 0.01), _fake("c", 0.5, 0.5)]
    cvdd = CVDD.from_settings("tiny", 10, {"teachers": "x"})
    plan = cvdd.plan(committee, 3, seed=0)
    assert plan.voters == [[0, 1], [0, 2], [1, 2]]
    e = torch.softmax(torch.tensor([60.0, 70.0], dtype=torch.float64) / 5, 0)
    assert plan.weights[0] == pytest.approx(e.tolist())
    assert plan.label_teachers == [0, 1, 2]
    expected = torch.softmax(torch.tensor([60.0, 70.0, 50.0], dtype=torch.float64) / 10, 0)
    assert plan.label_weights.tolist() == pytest.approx(expected.tolist(), rel=1e-6)
    assert plan.scorer == 1  # best validation accuracy, not best test accuracy (a)
    for t in committee:  # changing the reported test accuracies changes nothing
        t.meta["test_accuracy"] = 1 - t.meta["test_accuracy"]
    again = cvdd.plan(committee, 3, seed=0)
    assert again.voters == plan.voters and again.weights == plan.weights and again.scorer == plan.scorer
    one = CVDD.from_settings("tiny", 1, {"teachers": "x"}).plan(committee, 1, seed=0)
    assert one.voters == [[0, 1]]  # top-2 by validation prior
    eq = CVDD.from_settings("tiny", 1, {"teachers": "x", "voter_weights": "equal"}).plan(committee, 1, seed=0)
    assert eq.weights == [[0.5, 0.5]] and eq.label_weights.tolist() == pytest.approx([1 / 3] * 3)


def test_cvdd_committee_labels_and_options(tiny_real, tiny_teachers):
    syn = CONDENSERS.get("cvdd").from_settings("tiny", 2, {**FAST, "teachers": tiny_teachers}).condense(
        tiny_real, 2, progress=False)
    prov = syn.provenance
    assert syn.protocol == "softlabel" and prov["voters"] == [[t["name"] for t in prov["teachers"]]] * 2
    priors = torch.tensor([100 * t["val_accuracy"] for t in prov["teachers"]], dtype=torch.float64)
    assert prov["label_weights"] == pytest.approx(torch.softmax(priors / 10, 0).tolist(), rel=1e-5)
    assert syn.replay.settings["weights"] == pytest.approx(prov["label_weights"], rel=1e-5)
    assert syn.replay.settings["teachers"] == prov["label_teachers"] and syn.replay.kind == "logits"
    assert syn.replay.settings["batch_specific"] is False and syn.replay.micro_batch == 0
    bssl = CONDENSERS.get("cvdd").from_settings("tiny", 2, {
        **FAST, "teachers": tiny_teachers, "batch_specific": True, "label_batch_size": 4, "average": "probs"}
    ).condense(tiny_real, 2, progress=False)
    assert torch.equal(bssl.images, syn.images)  # the label options do not touch recover
    assert bssl.replay.micro_batch == 4 and bssl.replay.settings["batch_specific"] is True
    assert bssl.replay.kind == "probs" and bssl.replay.settings["average"] == "probs"
    assert not torch.equal(bssl.replay.values.float(), syn.replay.values.float())


def test_cvdd_ignores_reported_test_accuracy(tiny_real, tiny_teachers, tmp_path):
    """Rewriting the teachers' recorded test accuracies leaves the set bit-identical."""
    copy = tmp_path / "teachers"
    shutil.copytree(tiny_teachers, copy)
    for meta_path in copy.glob("*.json"):
        meta = json.loads(meta_path.read_text())
        if "test_accuracy" in meta:
            meta["test_accuracy"] = 1.0 - meta["test_accuracy"] if meta["name"] == "convnet_bn" else 1.0
        meta_path.write_text(json.dumps(meta))
    runs = [CONDENSERS.get("cvdd").from_settings("tiny", 1, {**FAST, "teachers": d}).condense(
        tiny_real, 1, progress=False) for d in (tiny_teachers, str(copy))]
    assert torch.equal(runs[0].images, runs[1].images)
    assert torch.equal(runs[0].replay.values, runs[1].replay.values)
    assert runs[0].provenance["label_weights"] == runs[1].provenance["label_weights"]


def test_cvdd_bad_settings(tiny_real, tiny_teachers):
    for bad in ({"voters": "everyone"}, {"voter_weights": "votes"}, {"synthesis_temperature": 0.0},
                {"average": "median"}):
        with pytest.raises(ConfigError):
            CONDENSERS.get("cvdd").from_settings("tiny", 1, {**FAST, "teachers": tiny_teachers, **bad}).condense(
                tiny_real, 1, progress=False)
    from dsdistill.errors import DataNotFoundError

    with pytest.raises(DataNotFoundError, match="not found"):
        CONDENSERS.get("cvdd").from_settings("tiny", 1, {**FAST, "teachers": tiny_teachers,
                                                          "committee": "convnet_bn,resnet50"}).condense(
            tiny_real, 1, progress=False)
