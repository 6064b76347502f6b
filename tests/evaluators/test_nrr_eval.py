"""The dbr protocol: DBR-label students, the random subset with the same labels, checks, storage, resume, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import dsdistill.methods  # noqa: F401
from dsdistill.condenser import Checkpointer
from dsdistill.errors import ConfigError, SyntheticFileError
from dsdistill.evaluators.nrr import DBR, DBRProtocol, train_dbr_student
from dsdistill.io import save_synthetic
from dsdistill.methods.nrr.dbr import DBRSpec, dbr_loss
from dsdistill.models import build_model
from dsdistill.registry import CONDENSERS
from dsdistill.rng import make_generator
from dsdistill.synthetic import Component
from dsdistill.teachers.store import save_teacher

EPOCHS = 3


@pytest.fixture(scope="module")
def teachers_dir(tiny_real, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("dbr_teachers")
    net = build_model("convnet_bn", tiny_real.num_classes, tiny_real.image_shape, seed=0)
    save_teacher(d, "convnet_bn", net, {"model": "convnet_bn", "dataset": tiny_real.name,
                                        "num_classes": tiny_real.num_classes,
                                        "image_shape": list(tiny_real.image_shape), "space": tiny_real.space,
                                        "dataset_fingerprint": tiny_real.fingerprint, "val_accuracy": 0.5})
    return d


@pytest.fixture(scope="module")
def syn(tiny_real, teachers_dir):
    settings = {"teachers": str(teachers_dir), "iterations": 2, "label_epochs": EPOCHS, "pool": 8, "crops": 2}
    return CONDENSERS.get("nrr").from_settings("tiny", 2, settings).condense(tiny_real, 2, progress=False)


def _eval(syn, real, protocol=DBR, **kw):
    args = {"models": ["convnetw32"], "runs": 1, "epochs": 2, "progress": False, "options": {}, **kw}
    return protocol.evaluate_set(syn, real, **args)


def test_loss_is_mixed_ce_plus_distance_matching():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    y, yj = torch.tensor([0, 1, 2, 3, 0]), torch.tensor([1, 1, 0, 2, 3])
    lam = torch.tensor([1.0, 0.3, 0.5, 0.9, 0.0])
    target = torch.rand(5, 2, generator=torch.Generator().manual_seed(1))
    ce_i = F.cross_entropy(logits, y, reduction="none")
    ce_mix = -(torch.log_softmax(logits, 1) * (lam[:, None] * F.one_hot(y, 4) + (1 - lam[:, None]) * F.one_hot(yj, 4))
               ).sum(1)
    expected = 0.7 * ce_mix.mean() + 2.0 * ((ce_i - target[:, 0]).abs() + (ce_mix - target[:, 1]).abs()).mean()
    got = dbr_loss(logits, y, lam, yj, target, alpha_dbr=2.0, ce_weight=0.7)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(dbr_loss(logits, y, lam, yj, target, alpha_dbr=0.0, ce_weight=1.0), ce_mix.mean(), atol=1e-6)


def test_protocol_trains_synthetic_and_random_with_the_same_kind_of_labels(syn, tiny_real):
    assert syn.protocol == "dbr"
    report = _eval(syn, tiny_real, protocol=DBRProtocol(hard=True))
    kinds = sorted(r.kind for r in report.runs)
    assert kinds == ["random", "synthetic", "synthetic_hard"]
    assert all(0 <= r.test_acc <= 1 for r in report.runs)
    st = report.storage
    assert st["parts"]["labels"] == syn.num_images * 8 + EPOCHS * 8 * 2 * 2  # hard labels + (E, N, 2) float16
    assert st["label_bytes"] == EPOCHS * 8 * 4 and st["training_models"] == {}
    assert st["per_epoch_label_bytes"] > st["label_bytes"]
    lab = report.protocol["label_bytes"]
    assert lab["dbr"] == EPOCHS * 8 * 4 and lab["per_epoch_logits"] == 8 * 2 * 4 * 2
    table = report.table()
    assert "random real subset + same DBR labels" in table and "augmentation parameters 0 B" in table
    assert "per-epoch relabeling" in table
    again = _eval(syn, tiny_real, protocol=DBRProtocol(hard=True))
    assert [r.test_acc for r in again.runs] == [r.test_acc for r in report.runs]


def test_labels_are_checked(syn, tiny_real):
    comp = syn.components["dbr"]

    def with_component(values=None, **meta):
        c = Component(comp.values if values is None else values, "labels", {**comp.meta, **meta})
        return dataclasses.replace(syn, components={"dbr": c})

    with pytest.raises(SyntheticFileError, match="differ"):
        _eval(with_component(seed=comp.meta["seed"] + 1), tiny_real, baseline=False)
    with pytest.raises(SyntheticFileError, match="differ"):
        _eval(with_component(params_sha256="0" * 64), tiny_real, baseline=False)
    with pytest.raises(SyntheticFileError, match="shape"):
        _eval(with_component(comp.values[:, :4]), tiny_real, baseline=False)
    with pytest.raises(SyntheticFileError, match="malformed"):
        _eval(with_component(size="big"), tiny_real, baseline=False)
    with pytest.raises(SyntheticFileError, match="no DBR labels"):
        _eval(dataclasses.replace(syn, components={}), tiny_real, baseline=False)
    with pytest.raises(ConfigError, match="3 epochs"):
        _eval(syn, tiny_real, epochs=4, baseline=False)
    with pytest.raises(ConfigError, match="does not apply"):
        _eval(syn, tiny_real, options={"online_teacher": True}, baseline=False)


def test_random_baseline_needs_the_recorded_teacher(syn, tiny_real, tmp_path):
    moved = dataclasses.replace(syn, provenance={**syn.provenance, "teachers_dir": str(tmp_path / "gone"),
                                                 "config": {}})
    with pytest.raises(ConfigError, match="teachers"):
        _eval(moved, tiny_real)
    other = tmp_path / "other"
    net = build_model("convnet_bn", 4, tiny_real.image_shape, seed=9)
    save_teacher(other, "convnet_bn", net, {"model": "convnet_bn", "dataset": tiny_real.name, "num_classes": 4,
                                            "image_shape": list(tiny_real.image_shape), "space": tiny_real.space,
                                            "dataset_fingerprint": tiny_real.fingerprint, "val_accuracy": 0.5})
    with pytest.raises(ConfigError, match="not the one"):
        _eval(syn, tiny_real, options={"teachers": str(other)})


def test_student_resumes_bitwise(syn, tiny_real):
    spec = DBRSpec.from_meta(syn.components["dbr"].meta)
    dbr = syn.components["dbr"].values.float()

    def run(resume=None, stop=None):
        model = build_model("convnetw32", 4, tiny_real.image_shape, seed=3)
        saved = {}

        def hook(done, state):
            if done == stop:
                saved.update(state())

        train_dbr_student(model, syn.images, syn.labels, dbr, spec, epochs=3, batch_size=3, lr=1e-3,
                          weight_decay=0.01, alpha_dbr=1.0, ce_weight=1.0, generator=make_generator(0, "s"),
                          resume=resume, checkpoint=hook)
        return model, saved

    full, _ = run()
    _, state = run(stop=1)
    resumed, _ = run(resume=state)
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))


def test_cli_evaluates_with_the_files_protocol(syn, tiny_real, tiny_dir, tmp_path):
    from dsdistill.cli import main

    path = tmp_path / "nrr.h5"
    save_synthetic(syn, path)
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["evaluate", str(path), "--dataset", f"arrays:{tiny_dir}", "--model", "convnetw32",
                                    "--runs", "1", "--epochs", "1", "--json", str(out), "-q",
                                    "--protocol-option", "alpha_dbr=0.25", "--protocol-option", "ce_weight=2"])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["protocol"]["name"] == "dbr" and {r["kind"] for r in data["runs"]} == {"synthetic", "random"}
    assert data["protocol"]["alpha_dbr"] == 0.25 and data["protocol"]["ce_weight"] == 2.0
    ck = Checkpointer(tmp_path / "e.ckpt", every=1)
    report = _eval(syn, tiny_real, checkpoint=ck)
    assert len(report.runs) == 2


@pytest.mark.parametrize("overrides, phrase", [({"alpha": 1.0}, "has no option 'alpha'; it takes: alpha_dbr"),
                                               ({"alpha_dbr": "high"}, "alpha_dbr must be a float"),
                                               ({"hard": 1}, "hard must be a bool"),
                                               ({"batch_size": 1.5}, "batch_size must be a int")])
def test_protocol_options_are_checked_by_name_and_type(overrides, phrase):
    from dsdistill.api import with_protocol_options

    with pytest.raises(ConfigError, match=phrase):
        with_protocol_options(DBR, overrides)
    changed = with_protocol_options(DBR, {"alpha_dbr": 2, "hard": True})
    assert changed.alpha_dbr == 2.0 and isinstance(changed.alpha_dbr, float) and changed.hard and not DBR.hard
