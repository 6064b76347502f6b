"""The ``hello`` protocol: students labelled online by the file's CLIP projector (tiny backbone, CPU)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("open_clip")

from dsdistill.errors import ConfigError  # noqa: E402
from dsdistill.models import build_model  # noqa: E402
from dsdistill.teachers.store import save_teacher  # noqa: E402

SMALL = {"projector_steps": 3, "projector_batch": 16, "iterations": 2, "patch_pool": 8, "encoder_rank": 2,
         "head_rank": 2}


@pytest.fixture(scope="module")
def hello_file(tiny_real, tiny_clip, tmp_path_factory) -> dict:
    """A hello set made from a private copy of the tiny backbone (tests may delete it) and untrained teachers."""
    from dsdistill.io import save_synthetic
    from dsdistill.registry import CONDENSERS

    root = tmp_path_factory.mktemp("hello")
    teachers = root / "teachers"
    for i, name in enumerate(("convnet_bn", "mlp")):
        net = build_model(name, tiny_real.num_classes, tiny_real.image_shape, seed=i)
        save_teacher(teachers, name, net, {"model": name, "dataset": tiny_real.name, "space": tiny_real.space,
                                           "num_classes": tiny_real.num_classes, "val_accuracy": 0.5,
                                           "image_shape": list(tiny_real.image_shape),
                                           "dataset_fingerprint": tiny_real.fingerprint})
    weights = root / "backbone.pt"
    shutil.copy(tiny_clip["weights"], weights)
    settings = {**SMALL, "clip_model": tiny_clip["config"], "clip_weights": str(weights), "teachers": str(teachers)}
    syn = CONDENSERS.get("hello").from_settings("tiny", 2, settings).condense(tiny_real, 2, progress=False)
    save_synthetic(syn, root / "h.h5")
    return {"file": str(root / "h.h5"), "weights": str(weights), "syn": syn, "root": root}


def test_evaluate_end_to_end_with_storage(hello_file, tiny_real, tmp_path):
    from dsdistill.api import evaluate_file
    from dsdistill.evaluators.hello import BACKBONE_KEY
    from dsdistill.methods.hello.clip_loader import load_backbone

    report = evaluate_file(hello_file["file"], runs=1, epochs=2, progress=False, json_path=str(tmp_path / "r.json"),
                           data_root=None, dataset=tiny_real.name)
    assert report.protocol["name"] == "hello" and {(r.kind, r.run) for r in report.runs} == {("synthetic", 0),
                                                                                            ("random", 0)}
    assert all(0 <= r.test_acc <= 1 for r in report.runs)
    st, syn = report.storage, hello_file["syn"]
    backbone = load_backbone(hello_file["syn"].provenance["clip_model"], hello_file["weights"])
    assert st["training_models"] == {BACKBONE_KEY: backbone.visual_nbytes} and st["models_at_training"] > 0
    assert st["parts"]["label_generator"] == syn.storage_bytes()["label_generator"] > 0
    assert st["per_epoch_label_bytes"] == 8 * 2 * (2 * 4 + 21) and st["clip_backbone_file_bytes"] == backbone.nbytes
    table = report.table()
    assert "hello" in table and "CLIP image tower (frozen, not in the file)" in table
    assert (tmp_path / "r.json").exists()


def test_rebuilt_projector_is_the_stored_one(hello_file):
    from dsdistill.evaluators.hello import rebuild_projector
    from dsdistill.io import load_synthetic

    syn = load_synthetic(hello_file["file"])
    proj, backbone = rebuild_projector(syn, {})
    stored = {k: c.values for k, c in syn.components.items()}
    rebuilt = proj.label_generator_tensors()
    assert set(rebuilt) == set(stored)
    assert all(torch.equal(rebuilt[k].to(stored[k].dtype), stored[k]) for k in stored)
    assert any(float(v.abs().max()) > 0 for k, v in rebuilt.items() if k.endswith(".B"))  # adapters were trained


def test_same_seed_same_numbers_and_resume(hello_file, tiny_real, tmp_path, stop_at):
    from dsdistill.condenser import Checkpointer, Interrupted
    from dsdistill.evaluators.hello import evaluate_hello

    syn = hello_file["syn"]
    first = evaluate_hello(syn, tiny_real, runs=1, epochs=3, progress=False, baseline=False)
    ckpt = tmp_path / "e.ckpt"
    with pytest.raises(Interrupted):
        evaluate_hello(syn, tiny_real, runs=1, epochs=3, progress=False, baseline=False,
                       checkpoint=stop_at(ckpt, stop_at=2, every=1))
    resumed = evaluate_hello(syn, tiny_real, runs=1, epochs=3, progress=False, baseline=False,
                             checkpoint=Checkpointer(ckpt, every=1, resume=True))
    assert [r.test_acc for r in resumed.runs] == [r.test_acc for r in first.runs]


def test_another_backbone_file_is_refused(hello_file, tiny_clip, tiny_real, tmp_path):
    from dsdistill.evaluators.hello import evaluate_hello
    from dsdistill.methods.hello.clip_loader import build_model as build_clip

    other = tmp_path / "other.pt"
    torch.save(build_clip(tiny_clip["name"], tiny_clip["cfg"]).state_dict(), other)  # same shapes, other values
    with pytest.raises(ConfigError, match="not the backbone this set was made with"):
        evaluate_hello(hello_file["syn"], tiny_real, runs=1, epochs=1, progress=False,
                       options={"clip_weights": str(other)})
    with pytest.raises(ConfigError, match="do not apply"):
        evaluate_hello(hello_file["syn"], tiny_real, runs=1, epochs=1, progress=False, options={"teachers": "x"})


def test_missing_backbone_is_one_clear_cli_error(hello_file, tiny_real, tmp_path):
    from click.testing import CliRunner

    from dsdistill.cli import main

    moved = Path(hello_file["weights"]).rename(tmp_path / "moved.pt")
    try:
        result = CliRunner().invoke(main, ["evaluate", hello_file["file"], "--runs", "1", "--epochs", "1", "--quiet",
                                           "--dataset", tiny_real.name])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "does not exist" in result.output and "backbone.pt" in result.output
        ok = CliRunner().invoke(main, ["evaluate", hello_file["file"], "--runs", "1", "--epochs", "1", "--quiet",
                                       "--no-baseline", "--dataset", tiny_real.name, "--clip-weights", str(moved)])
        assert ok.exit_code == 0, ok.output
    finally:
        moved.rename(hello_file["weights"])
