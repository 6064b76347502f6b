"""The infer protocol: crop/flip, Mixup with interpolated stored logits, the random baseline, budget and storage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import dsdistill.evaluators.infer as infer_eval
import dsdistill.methods  # noqa: F401
from dsdistill.cli import main
from dsdistill.condenser import Checkpointer, Interrupted
from dsdistill.errors import ConfigError, SyntheticFileError
from dsdistill.evaluators.infer import INFER, crop_flip, static_labels_like, train_infer_student
from dsdistill.io import save_synthetic
from dsdistill.methods.infer import expand
from dsdistill.methods.sre2l.recover import ValidRange
from dsdistill.models import build_model
from dsdistill.registry import CONDENSERS, EVALUATORS
from dsdistill.rng import make_generator, next_seed
from dsdistill.teachers import load_committee
from dsdistill.teachers.store import save_teacher

NAMES = ("convnet_bn", "shufflenetv2")


@pytest.fixture(scope="module")
def teachers(tiny_real, tmp_path_factory) -> Path:
    """Two randomly initialised BatchNorm teachers (no training: seconds)."""
    d = tmp_path_factory.mktemp("infer_teachers")
    for i, name in enumerate(NAMES):
        net = build_model(name, tiny_real.num_classes, tiny_real.image_shape, seed=i)
        with torch.no_grad():  # non-trivial running statistics
            net.train()(tiny_real.train_images[:32])
        save_teacher(d, name, net.eval(), {"model": name, "dataset": tiny_real.name, "num_classes": 4,
                                           "image_shape": list(tiny_real.image_shape), "space": tiny_real.space,
                                           "dataset_fingerprint": tiny_real.fingerprint, "val_accuracy": 0.5})
    return d


@pytest.fixture(scope="module")
def syn(tiny_real, teachers):
    return CONDENSERS.get("infer").from_settings("tiny", 3, {"teachers": str(teachers), "iterations": 3}).condense(
        tiny_real, 3, progress=False)


def run(syn, real, **kw):
    args = dict(models=("convnet",), runs=1, epochs=2, lr=None, batch_size=None, seed=0, device="cpu", baseline=True,
                progress=False, file="", checkpoint=None, options={})
    return INFER.evaluate_set(syn, real, **{**args, **kw})


def test_crop_flip_is_per_sample_padded_and_reproducible():
    x = torch.arange(2 * 36, dtype=torch.float32).view(2, 1, 6, 6).repeat(40, 1, 1, 1)
    fill = torch.full((1, 1, 1, 1), -7.0)
    a = crop_flip(x, torch.Generator().manual_seed(3), 2, fill, True)
    assert a.shape == x.shape and torch.equal(a, crop_flip(x, torch.Generator().manual_seed(3), 2, fill, True))
    assert torch.equal(crop_flip(x, torch.Generator().manual_seed(3), 0, fill, False), x)
    assert (a == -7).any() and not torch.equal(a[0], a[2])  # padding shows; draws differ per sample
    g = torch.Generator().manual_seed(5)
    b = crop_flip(x, g, 2, fill, False)
    off = torch.randint(0, 5, (2, 80), generator=torch.Generator().manual_seed(5))
    for i in range(80):  # the crop at (top, left) of the padded image
        pad = torch.nn.functional.pad(x[i], (2, 2, 2, 2), value=-7.0)
        assert torch.equal(b[i], pad[:, off[0, i]:off[0, i] + 6, off[1, i]:off[1, i] + 6])


def test_mixup_interpolates_the_stored_logits_linearly(tiny_real, monkeypatch):
    images = tiny_real.train_images[:10]
    logits = torch.randn(10, 4) * 5
    seen = []
    real_kl = infer_eval.kl_loss
    monkeypatch.setattr(infer_eval, "kl_loss", lambda s, t, temp: seen.append(t) or real_kl(s, t, temp))

    class Rec(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.inputs = build_model("convnet", 4, (1, 16, 16), seed=0), []

        def forward(self, x):
            self.inputs.append(x.detach().clone())
            return self.net(x)

    model, fill = Rec(), torch.zeros(1, 1, 1, 1)
    gen = make_generator(0, "t")
    shadow = torch.Generator().set_state(gen.get_state())
    train_infer_student(model, images, logits, epochs=2, batch_size=4, lr=1e-3, weight_decay=0.01, temperature=30.0,
                        alpha=0.8, pad=4, fill=fill, flip=False, generator=gen)
    step = 0
    for _ in range(2):
        for idx in torch.randperm(10, generator=shadow).split(4):
            x = crop_flip(images[idx], shadow, 4, fill, False)
            lam = float(np.random.default_rng(next_seed(shadow)).beta(0.8, 0.8))
            partner = torch.randperm(len(idx), generator=shadow)
            y = lam * logits[idx] + (1 - lam) * logits[idx][partner]
            assert torch.allclose(model.inputs[step], lam * x + (1 - lam) * x[partner])
            assert torch.allclose(seen[step], torch.softmax(y / 30.0, 1), atol=1e-6)
            step += 1
    assert step == len(seen) == 6


def test_report_budget_storage_and_baseline(syn, tiny_real, teachers):
    report = run(syn, tiny_real, runs=2)
    assert sorted((r.kind, r.run) for r in report.runs) == [("random", 0), ("random", 1), ("synthetic", 0),
                                                            ("synthetic", 1)]
    b = report.protocol["budget"]  # 2 teachers, 4 classes, IPC 3 -> ipc_init 2
    assert b == {"nominal_ipc": 3, "ipc_init": 2, "num_archs": 2, "counted_images": 12, "effective_instances": 24,
                 "effective_per_class": 6, "random_instances": 12}
    st = report.storage
    assert st["counted_images"] == 12 and st["training_instances"] == 24 and st["training_models"] == {}
    assert st["label_bytes"] == 24 * 4 * 2 and st["per_epoch_label_bytes"] == 12 * 2 * (2 * 4 + 21)
    assert report.protocol["epochs"] == 2 and report.protocol["temperature"] == 30.0
    table = report.table()
    assert "effective training instances 24 (6 per class)" in table and "12 counted images" in table
    assert "per-epoch relabeling" in table and "ONLINE" not in table
    assert json.loads(json.dumps(report.to_dict(), default=str))["protocol"]["name"] == "infer"
    committee = load_committee(teachers, list(NAMES), real=tiny_real)
    sub = tiny_real.train_images[:6]
    want = (committee[0].model(sub) + committee[1].model(sub)) / 2
    got = static_labels_like(sub, committee, torch.float16)
    assert got.dtype == torch.float16 and torch.allclose(got.float(), want, atol=1e-2, rtol=1e-2)


def test_training_uses_the_expanded_instances_and_their_labels(syn, tiny_real, monkeypatch):
    calls = []
    monkeypatch.setattr(infer_eval, "train_infer_student", lambda model, images, logits, **kw: calls.append(
        (images, logits)) or model)
    run(syn, tiny_real, baseline=False)
    (images, logits), = calls
    assert torch.equal(images, expand(syn.images, syn.components["ufc"].values, ValidRange(tiny_real)))
    assert torch.equal(logits, syn.components["static_labels"].values)


def test_bad_input(syn, tiny_real, teachers, tmp_path):
    import dataclasses

    bare = dataclasses.replace(syn, provenance={k: v for k, v in syn.provenance.items() if k != "teachers_dir"} | {
        "config": {}})
    with pytest.raises(ConfigError, match="needs the teachers"):
        run(bare, tiny_real)
    assert {r.kind for r in run(bare, tiny_real, baseline=False).runs} == {"synthetic"}
    assert run(bare, tiny_real, options={"teachers": str(teachers)}).runs
    for key, value in (("full_epochs", 3), ("clip_model", "ViT-B-32")):
        with pytest.raises(ConfigError, match=f"{key} does not apply"):
            run(syn, tiny_real, options={key: value})
    other = tmp_path / "other"  # same names, other weights
    for i, name in enumerate(NAMES):
        save_teacher(other, name, build_model(name, 4, tiny_real.image_shape, seed=10 + i),
                     {"model": name, "dataset": tiny_real.name, "num_classes": 4, "image_shape": [1, 16, 16],
                      "space": tiny_real.space, "dataset_fingerprint": tiny_real.fingerprint, "val_accuracy": 0.5})
    with pytest.raises(ConfigError, match="not the one the set was labelled with"):
        run(syn, tiny_real, options={"teachers": str(other)})
    with pytest.raises(SyntheticFileError, match="no 'ufc' component"):
        run(dataclasses.replace(syn, components={}), tiny_real)
    with pytest.raises(ConfigError, match="--runs"):
        run(syn, tiny_real, runs=0)


def test_online_teacher_is_flagged_and_counted(syn, tiny_real):
    report = run(syn, tiny_real, baseline=False, options={"online_teacher": True})
    assert report.protocol["online_teacher"] and "ONLINE TEACHER" in report.table()
    (name, nbytes), = report.storage["training_models"].items()
    assert "convnet_bn" in name and nbytes > 0


def test_checkpointed_evaluation_resumes_to_the_same_numbers(syn, tiny_real, tmp_path, stop_at):
    plain = run(syn, tiny_real, epochs=3)
    path = tmp_path / "e.ckpt"
    with pytest.raises(Interrupted):
        run(syn, tiny_real, epochs=3, checkpoint=stop_at(path, stop_at=2, every=1))
    resumed = run(syn, tiny_real, epochs=3, checkpoint=Checkpointer(path, every=1, resume=True))
    assert [(r.kind, r.test_acc) for r in resumed.runs] == [(r.kind, r.test_acc) for r in plain.runs]


def test_cli_evaluate_dispatches_on_the_files_protocol(syn, tiny_name, tmp_path):
    path, out = tmp_path / "i.h5", tmp_path / "r.json"
    save_synthetic(syn, path)
    assert EVALUATORS.get("infer") is INFER
    res = CliRunner().invoke(main, ["evaluate", str(path), "--dataset", tiny_name, "--runs", "1", "--epochs", "2",
                                    "--json", str(out), "-q"])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["protocol"]["name"] == "infer" and data["storage"]["training_instances"] == 24
    assert {r["kind"] for r in data["runs"]} == {"synthetic", "random"}
