"""``dsdistill condense`` killed with SIGKILL at random checkpoints and resumed equals an uninterrupted run.

A real ``python -m dsdistill condense --method dm`` process is killed with SIGKILL (``DSD_KILLS``
times, default 2, after a seeded random number of observed checkpoint writes plus a random delay
of up to 40 ms so kills also land inside a save), then resumed with ``--resume``. The run is then
finished in-process and the HDF5 set compared bitwise (images, labels, soft labels, lr, provenance
except timings) with an uninterrupted run. SIGINT and SIGTERM (sent to the process for real, in
process) must write a final checkpoint, exit with code 130 and say how to resume; the evaluate
tests do the same with a separate process. Coresets (random/herding/k-center)
have no iterations to checkpoint (their embedder trains a few epochs) and write through the same
atomic writer, so a kill leaves no output; they are simply rerun.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
import torch
from click.testing import CliRunner

from dsdistill.cli import main
from dsdistill.io import load_synthetic

KILLS = int(os.environ.get("DSD_KILLS", "2"))
KILL_SEED = int(os.environ.get("DSD_KILL_SEED", "0"))
TIMING_KEYS = {"elapsed_seconds"}
RESUME_HINT = "; rerun the same command with --resume to continue"


def condense_args(name: str, out, iterations: int = 60) -> list[str]:
    return ["condense", "-m", "dm", "-d", name, "--ipc", "2", "-o", str(out), "--iterations", str(iterations),
            "-p", "batch_real=8", "--checkpoint-every", "2", "--seed", "5", "--threads", "1", "-q"]


def assert_same_set(a_path, b_path) -> None:
    a, b = load_synthetic(a_path), load_synthetic(b_path)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)
    assert (a.soft_labels is None) == (b.soft_labels is None)
    if a.soft_labels is not None:
        assert torch.equal(a.soft_labels.values, b.soft_labels.values)
    assert a.lr == b.lr
    strip = lambda p: {k: v for k, v in p.items() if k not in TIMING_KEYS}  # noqa: E731
    assert strip(a.provenance) == strip(b.provenance)


def ckpt_iteration(path) -> int:
    return int(torch.load(path, weights_only=True)["iteration"])


def test_sigkill_at_random_points_then_resume_is_bitwise_identical(noisy_name, tmp_path, procs):
    ref = tmp_path / "ref.h5"
    result = CliRunner().invoke(main, condense_args(noisy_name, ref))
    assert result.exit_code == 0, result.output

    out, ckpt = tmp_path / "out.h5", tmp_path / "out.h5.ckpt"
    rng = random.Random(KILL_SEED)
    done = 0
    for i in range(KILLS):
        proc = procs.start(condense_args(noisy_name, out) + (["--resume"] if i else []), tmp_path)
        saves = rng.randint(2 if i == 0 else 1, 4)
        procs.wait_for_saves(proc, ckpt, saves)
        if i:  # the resumed process continued from the checkpoint instead of starting over
            assert ckpt_iteration(ckpt) >= done + 2 * saves
        time.sleep(rng.uniform(0, 0.04))  # lands anywhere: inside a step, a save, or between
        procs.kill9(proc)
        done = ckpt_iteration(ckpt)  # a complete checkpoint is always there
        print(f"SIGKILL {i + 1}: after {saves} observed checkpoint writes; checkpoint at iteration {done}")
        assert not out.exists(), "a killed run left an output file"

    result = CliRunner().invoke(main, condense_args(noisy_name, out) + ["--resume"])
    assert result.exit_code == 0, result.output
    assert_same_set(ref, out)
    assert not ckpt.exists()  # removed once the set is written
    # only a checkpoint temp file of a SIGKILL that landed inside a save may remain (never under a final name)
    assert [n for n in procs.leftovers(tmp_path, "out.h5") if not n.startswith(".out.h5.ckpt.tmp-")] == ["out.h5"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_writes_final_checkpoint_and_says_how_to_resume(noisy_name, tmp_path, monkeypatch, sig):
    from dsdistill.condenser import Checkpointer

    ref = tmp_path / "ref.h5"
    assert CliRunner().invoke(main, condense_args(noisy_name, ref, 12)).exit_code == 0
    saves = []
    real_save = Checkpointer.save

    def save_then_signal(self, state):
        real_save(self, state)
        saves.append(int(state["iteration"]))
        if len(saves) == 2:  # the signal arrives mid-run, after the 2nd periodic checkpoint
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(Checkpointer, "save", save_then_signal)
    before = signal.getsignal(sig)
    out = tmp_path / "out.h5"
    result = CliRunner().invoke(main, condense_args(noisy_name, out, 12))
    assert result.exit_code == 130
    assert f"interrupted; state saved to {out}.ckpt{RESUME_HINT}" in result.output
    # the handler runs before save() returns, so the save at iteration 4 is already the final one
    assert saves == [2, 4] and torch.load(f"{out}.ckpt", weights_only=True)["iteration"] == 4
    assert not out.exists()
    monkeypatch.setattr(Checkpointer, "save", real_save)
    assert signal.getsignal(sig) is before  # the run restored the previous handler
    result = CliRunner().invoke(main, condense_args(noisy_name, out, 12) + ["--resume"])
    assert result.exit_code == 0, result.output
    assert_same_set(ref, out)

