"""Teacher training, files, committee loading, import of local checkpoints, resume, bad input."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

import dsdistill.models  # noqa: F401
from dsdistill.cli import main
from dsdistill.errors import ConfigError, DataNotFoundError
from dsdistill.models import build_model
from dsdistill.teachers import TeacherRecipe, load_committee, train_teachers
from dsdistill.teachers import training as training_module
from dsdistill.train import accuracy

RECIPE = TeacherRecipe(epochs=2, lr=0.05, batch_size=32)


def _state(directory, name):
    return torch.load(os.path.join(directory, f"{name}.pt"), weights_only=True)


def test_train_and_load_committee(tiny_real, tmp_path):
    records = train_teachers(tiny_real, ["convnet_bn"], tmp_path, recipe=RECIPE, progress=False)
    meta = json.loads((tmp_path / "convnet_bn.json").read_text())
    for key in ("model", "dataset", "num_classes", "image_shape", "space", "epochs", "seed", "val_accuracy",
                "test_accuracy", "recipe", "sha256"):
        assert key in meta, key
    assert meta["image_shape"] == [1, 16, 16] and meta["num_classes"] == 4 and meta["epochs"] == 2
    assert meta["recipe"]["optimizer"] == "sgd" and meta["recipe"]["schedule"] == "cosine"
    manifest = json.loads((tmp_path / "committee.json").read_text())
    assert manifest["prior"] == "val_accuracy" and manifest["teachers"][0]["name"] == "convnet_bn"
    (teacher,) = load_committee(tmp_path, real=tiny_real)
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())
    assert teacher.val_accuracy == records[0]["val_accuracy"]
    assert accuracy(teacher.model, tiny_real.val_images, tiny_real.val_labels) == pytest.approx(teacher.val_accuracy)
    assert teacher.prior == pytest.approx(100 * teacher.val_accuracy)


def test_test_split_never_reaches_a_teacher(tiny_real, tmp_path):
    """Poisoning the test split (NaN images, shuffled labels) changes no weight and no prior."""
    poisoned = replace(tiny_real, test_images=torch.full_like(tiny_real.test_images, float("nan")),
                       test_labels=tiny_real.test_labels.flip(0))
    train_teachers(tiny_real, ["convnet_bn"], tmp_path / "a", recipe=RECIPE, progress=False)
    train_teachers(poisoned, ["convnet_bn"], tmp_path / "b", recipe=RECIPE, progress=False)
    a, b = _state(tmp_path / "a", "convnet_bn"), _state(tmp_path / "b", "convnet_bn")
    assert all(torch.equal(a[k], b[k]) for k in a)
    meta_a = json.loads((tmp_path / "a" / "convnet_bn.json").read_text())
    meta_b = json.loads((tmp_path / "b" / "convnet_bn.json").read_text())
    assert meta_a["val_accuracy"] == meta_b["val_accuracy"]


def test_resume_is_bitwise(tiny_real, tmp_path, monkeypatch):
    recipe = replace(RECIPE, epochs=3)
    train_teachers(tiny_real, ["convnet_bn"], tmp_path / "full", recipe=recipe, progress=False)
    original = training_module.train_classifier

    def interrupted(*args, checkpoint=None, **kwargs):
        def stop_after_first(done, make_state):
            checkpoint(done, make_state)
            raise KeyboardInterrupt

        return original(*args, checkpoint=stop_after_first, **kwargs)

    monkeypatch.setattr(training_module, "train_classifier", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_teachers(tiny_real, ["convnet_bn"], tmp_path / "cut", recipe=recipe, progress=False)
    assert (tmp_path / "cut" / ".convnet_bn.partial.pt").exists()
    assert not (tmp_path / "cut" / "convnet_bn.json").exists()
    monkeypatch.setattr(training_module, "train_classifier", original)
    with pytest.raises(ConfigError, match="another recipe"):
        train_teachers(tiny_real, ["convnet_bn"], tmp_path / "cut", recipe=replace(recipe, lr=0.01), resume=True,
                       progress=False)
    train_teachers(tiny_real, ["convnet_bn"], tmp_path / "cut", recipe=recipe, resume=True, progress=False)
    a, b = _state(tmp_path / "full", "convnet_bn"), _state(tmp_path / "cut", "convnet_bn")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "cut" / ".convnet_bn.partial.pt").exists()


def test_finished_teachers_need_resume_or_overwrite(tiny_real, tmp_path):
    train_teachers(tiny_real, ["convnet_bn"], tmp_path, recipe=RECIPE, progress=False)
    with pytest.raises(ConfigError, match="already exist"):
        train_teachers(tiny_real, ["convnet_bn"], tmp_path, recipe=RECIPE, progress=False)
    stamp = (tmp_path / "convnet_bn.pt").stat().st_mtime_ns
    train_teachers(tiny_real, ["convnet_bn"], tmp_path, recipe=RECIPE, resume=True, progress=False)
    assert (tmp_path / "convnet_bn.pt").stat().st_mtime_ns == stamp  # skipped, not retrained


def test_import_local_checkpoint(tiny_real, tmp_path):
    net = build_model("convnet_bn", 4, (1, 16, 16), seed=3)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "ok.pt")
    records = train_teachers(tiny_real, [], tmp_path / "c", checkpoints={"convnet_bn": str(tmp_path / "ok.pt")},
                             progress=False)
    assert records[0]["kind"] == "imported" and records[0]["epochs"] == 0
    (teacher,) = load_committee(tmp_path / "c")
    x = tiny_real.val_images[:5]
    assert torch.equal(teacher.model(x), net.eval()(x))
    torch.save(build_model("convnet_bn", 7, (1, 16, 16)).state_dict(), tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="does not fit"):
        train_teachers(tiny_real, [], tmp_path / "d", checkpoints={"convnet_bn": str(tmp_path / "bad.pt")},
                       progress=False)
    with pytest.raises(DataNotFoundError):
        train_teachers(tiny_real, [], tmp_path / "e", checkpoints={"convnet_bn": str(tmp_path / "none.pt")},
                       progress=False)
    torch.save(build_model("convnet", 4, (1, 16, 16)).state_dict(), tmp_path / "plain.pt")
    train_teachers(tiny_real, [], tmp_path / "c", checkpoints={"convnet": str(tmp_path / "plain.pt")}, progress=False)
    manifest = json.loads((tmp_path / "c" / "committee.json").read_text())
    assert [t["name"] for t in manifest["teachers"]] == ["convnet_bn", "convnet"]  # extended, not replaced
    assert [t.name for t in load_committee(tmp_path / "c")] == ["convnet_bn", "convnet"]


def test_committee_bad_input(tiny_real, tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_committee(tmp_path / "missing")
    train_teachers(tiny_real, ["convnet_bn"], tmp_path, recipe=RECIPE, progress=False)
    with pytest.raises(DataNotFoundError, match="not found"):
        load_committee(tmp_path, names=["resnet50"])
    other = replace(tiny_real, num_classes=5)
    with pytest.raises(ConfigError, match="does not fit"):
        load_committee(tmp_path, real=other)
    with pytest.raises(ConfigError, match="does not fit"):
        load_committee(tmp_path, real=replace(tiny_real, space="zca"))


def test_cli_teachers(tiny_name, tmp_path):
    runner = CliRunner()
    out = tmp_path / "t"
    args = ["teachers", "-d", tiny_name, "--models", "convnet_bn", "--epochs", "1", "--lr", "0.05", "-o", str(out),
            "-q", "--threads", "1"]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "| convnet_bn | trained | 1 |" in res.output and (out / "convnet_bn.json").exists()
    res = runner.invoke(main, args)
    assert res.exit_code == 2 and "already exist" in res.output
    assert runner.invoke(main, args + ["--resume"]).exit_code == 0
    res = runner.invoke(main, args[:4] + ["nonet"] + args[5:])
    assert res.exit_code == 2 and "unknown model" in res.output
    res = runner.invoke(main, args + ["--overwrite", "--from-checkpoint", "convnet_bn"])
    assert res.exit_code == 2 and "NAME=PATH" in res.output
    torch.save(build_model("convnet_bn", 9, (1, 16, 16)).state_dict(), tmp_path / "bad.pt")
    res = runner.invoke(main, args + ["--overwrite", "--from-checkpoint", f"convnet_bn={tmp_path / 'bad.pt'}"])
    assert res.exit_code == 2 and "does not fit" in res.output and "Traceback" not in res.output


def test_torchrun_one_model_per_process(tiny_name, tmp_path, torchrun):
    args = ["teachers", "-d", tiny_name, "--models", "convnet_bn,shufflenetv2", "--epochs", "1", "--lr", "0.05", "-q",
            "--threads", "1"]
    assert CliRunner().invoke(main, args + ["-o", str(tmp_path / "one")]).exit_code == 0
    proc = torchrun([*args, "-o", str(tmp_path / "two")])
    assert proc.stdout.count("| shufflenetv2 |") == 1  # only rank 0 prints
    for name in ("convnet_bn", "shufflenetv2"):
        a, b = _state(tmp_path / "one", name), _state(tmp_path / "two", name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    manifest = json.loads((tmp_path / "two" / "committee.json").read_text())
    assert [t["name"] for t in manifest["teachers"]] == ["convnet_bn", "shufflenetv2"]
