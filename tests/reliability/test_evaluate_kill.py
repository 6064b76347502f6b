"""``dsdistill evaluate`` killed with SIGKILL / stopped with SIGTERM or SIGINT, resumed, equals an
uninterrupted evaluation: every (model, run, kind) test and validation accuracy bitwise (only the
wall-clock ``seconds`` of each student differ).

The data set is only weakly separable and has 400 test images, so accuracies move in steps of
0.25% and differ between students: a resume that changed any weight would show.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest
from click.testing import CliRunner

from dsdistill.cli import main

KILLS = int(os.environ.get("DSD_KILLS", "1"))
KILL_SEED = int(os.environ.get("DSD_KILL_SEED", "0"))
RESUME_HINT = "; rerun the same command with --resume to continue"


@pytest.fixture(scope="module")
def noisy_set(noisy_name, tmp_path_factory):
    path = tmp_path_factory.mktemp("evalset") / "random.h5"
    result = CliRunner().invoke(main, ["condense", "-m", "random", "-d", noisy_name, "--ipc", "3", "-o", str(path),
                                       "--seed", "2", "-q"])
    assert result.exit_code == 0, result.output
    return path


def eval_args(set_path, json_path, epochs: int = 20) -> list[str]:
    return ["evaluate", str(set_path), "--epochs", str(epochs), "--runs", "2", "--model", "convnet", "--json",
            str(json_path), "--checkpoint-every", "2", "--seed", "4", "--threads", "1", "-q"]


@pytest.fixture(scope="module")
def reference(noisy_set, tmp_path_factory, procs):
    path = tmp_path_factory.mktemp("evalref") / "ref.json"
    result = CliRunner().invoke(main, eval_args(noisy_set, path))
    assert result.exit_code == 0, result.output
    numbers = procs.report_numbers(path)
    accs = [row["test_acc"] for row in numbers["runs"]]
    assert len(set(accs)) > 1, f"students agree exactly ({accs}); the comparison would be weak"
    return numbers


def test_sigkill_and_sigterm_then_resume_gives_the_same_report(noisy_set, reference, tmp_path, procs):
    out = tmp_path / "out.json"
    ckpt = tmp_path / "out.json.ckpt"
    rng = random.Random(KILL_SEED)
    last = (0, 0)
    for i in range(KILLS):
        proc = procs.start(eval_args(noisy_set, out) + (["--resume"] if i else []), tmp_path)
        procs.wait_for_saves(proc, ckpt, rng.randint(3, 12))
        time.sleep(rng.uniform(0, 0.04))
        procs.kill9(proc)
        now = procs.progress(ckpt)
        assert now > last and not out.exists()
        print(f"SIGKILL {i + 1}: checkpoint holds {now[0]} finished students, the next at epoch {now[1]}")
        last = now

    proc = procs.start(eval_args(noisy_set, out) + ["--resume"], tmp_path)
    procs.wait_for_saves(proc, ckpt, 1)
    assert procs.progress(ckpt) > last  # continued from the checkpoint, did not start over
    rc, stdout, stderr = procs.stop(proc, signal.SIGTERM)
    assert rc == 130, stderr
    assert stderr.strip().splitlines() == [f"error: interrupted; state saved to {ckpt}{RESUME_HINT}"]
    assert not out.exists()

    result = CliRunner().invoke(main, eval_args(noisy_set, out) + ["--resume"])
    assert result.exit_code == 0, result.output
    assert procs.report_numbers(out) == reference
    assert not ckpt.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_in_process_then_resume(noisy_set, reference, tmp_path, monkeypatch, sig, procs):
    from dsdistill.condenser import Checkpointer

    saves = []
    real_save = Checkpointer.save

    def save_then_signal(self, state):
        real_save(self, state)
        saves.append(state)
        if len(saves) == 11:  # inside the second student (9 epoch saves + 1 finished-student save each)
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(Checkpointer, "save", save_then_signal)
    out = tmp_path / "out.json"
    result = CliRunner().invoke(main, eval_args(noisy_set, out))
    assert result.exit_code == 130, result.output
    assert f"interrupted; state saved to {out}.ckpt{RESUME_HINT}" in result.output
    assert len(saves) == 11 and procs.progress(f"{out}.ckpt") == (1, 2) and not out.exists()
    monkeypatch.setattr(Checkpointer, "save", real_save)
    result = CliRunner().invoke(main, eval_args(noisy_set, out) + ["--resume"])
    assert result.exit_code == 0, result.output
    assert procs.report_numbers(out) == reference


def test_resume_refuses_a_checkpoint_of_another_evaluation(noisy_set, tmp_path, monkeypatch):
    from dsdistill.condenser import Checkpointer

    class Stop(Exception):
        pass

    real_save = Checkpointer.save

    def save_then_stop(self, state):
        real_save(self, state)
        raise Stop

    monkeypatch.setattr(Checkpointer, "save", save_then_stop)
    out = tmp_path / "out.json"
    with pytest.raises(Stop):
        CliRunner().invoke(main, eval_args(noisy_set, out, epochs=6), catch_exceptions=False)
    monkeypatch.setattr(Checkpointer, "save", real_save)
    other = eval_args(noisy_set, out, epochs=6)
    other[other.index("--seed") + 1] = "5"
    result = CliRunner().invoke(main, other + ["--resume"])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: checkpoint {out}.ckpt belongs to a different evaluation (other file, "
                                     "models, runs, seed or settings); delete it or run without --resume")


def test_report_refuses_overwrite_without_flag(noisy_set, tmp_path):
    out = tmp_path / "r.json"
    out.write_text("{}")
    result = CliRunner().invoke(main, eval_args(noisy_set, out, epochs=1))
    assert result.exit_code == 2 and f"output {out} exists; pass --overwrite" in result.output
    assert out.read_text() == "{}"
    result = CliRunner().invoke(main, eval_args(noisy_set, out, epochs=1) + ["--overwrite"])
    assert result.exit_code == 0 and json.loads(out.read_text())["runs"]
