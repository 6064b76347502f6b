"""bench/trajectory_horizon.py: the segment-level measurement of a trajectory-matching set."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from dsdistill.experts import ExpertStore
from dsdistill.io import save_synthetic
from dsdistill.methods.trajectory.mtt import MTT
from dsdistill.methods.trajectory.student import FunctionalStudent
from dsdistill.methods.trajectory.unroll import Inner, make_plan, unroll

BENCH = Path(__file__).resolve().parents[2] / "bench" / "trajectory_horizon.py"
FAST = {"iterations": 2, "syn_steps": 4, "expert_epochs": 1, "max_start_epoch": 1, "lr_img": 10.0}


def _bench():
    spec = importlib.util.spec_from_file_location("trajectory_horizon", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_student_steps_are_the_condensers_unroll(tiny_real, tiny_experts):
    store = ExpertStore.open(tiny_experts["mtt"])
    student = FunctionalStudent(store.build_model())
    images = torch.randn(8, *tiny_real.image_shape, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(4).repeat_interleave(2)
    plan = make_plan(8, tiny_real.image_shape, 5, 4, None, torch.Generator().manual_seed(1))
    theta0 = store.snapshot(0, 0)
    bench = _bench()
    for momentum in (0.0, 0.9):
        inner = Inner(student, plan, None, labels, momentum=momentum)
        want = unroll(inner, theta0, images, torch.tensor(0.05), None, "full")[-1].detach()
        got = bench.student_steps(inner, theta0, images, 0.05, None)
        torch.testing.assert_close(got, want)


def test_report_measures_the_set_against_the_experts(tiny_real, tiny_experts, tmp_path):
    syn = MTT.from_settings("tiny", 2, {**FAST, "experts": tiny_experts["mtt"]}).condense(tiny_real, 2, progress=False)
    save_synthetic(syn, tmp_path / "m.h5")
    bench = _bench()
    args = [str(tmp_path / "m.h5"), "--experts", tiny_experts["mtt"], "--starts", "0,1", "--expert-epochs", "1",
            "--syn-steps", "4", "--repeats", "2", "--json", str(tmp_path / "h.json")]
    out = bench.main(args)
    assert out["lr"] == pytest.approx(syn.lr) and len(out["rows"]) == 2 * 2 * 2  # experts x starts x repeats
    assert json.loads((tmp_path / "h.json").read_text())["mean"] == pytest.approx(out["mean"])
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 and 0 <= r["acc_end"] <= 100 for r in out["rows"])
    # a student that does not move stays at theta_0: loss exactly 1, accuracy unchanged
    still = bench.main(args[:-2] + ["--lr", "0"])
    assert all(r["loss"] == pytest.approx(1.0) and r["acc_end"] == r["acc_start"] for r in still["rows"])
