"""``dsdistill evaluate --protocol softlabel`` stopped by SIGINT/SIGTERM or killed with SIGKILL,
resumed, equals an uninterrupted evaluation in every number (only the wall-clock ``seconds`` of each
student differ), for every kind of student: replayed soft labels, hard labels, the random subset
relabelled at evaluation time and the full-data run (fresh augmentation from the generator).

Beyond the report, the final weights of every student trained are hashed and compared bitwise
with the uninterrupted run's (accuracies alone could hide a small difference).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal

import pytest
import torch
from click.testing import CliRunner

from dsdistill.cli import main

RESUME_HINT = "; rerun the same command with --resume to continue"
EPOCHS = 12  # stored label epochs; 2 runs x (synthetic, hard, random: 12 epochs; full: 4 epochs)


@pytest.fixture(scope="module")
def softlabel_set(noisy_name, tmp_path_factory):
    """A set of 3 real images per class with 12 epochs of replayed labels from two briefly trained
    teachers, and the teachers' directory."""
    from dsdistill.data import load_real
    from dsdistill.io import save_synthetic
    from dsdistill.models import build_model
    from dsdistill.rng import make_generator
    from dsdistill.softlabels import relabel
    from dsdistill.synthetic import SyntheticSet
    from dsdistill.teachers import load_committee
    from dsdistill.teachers.store import save_teacher

    real = load_real(noisy_name)
    root = tmp_path_factory.mktemp("softlabel")
    tdir = root / "teachers"
    names = ("convnet_bn", "mlp")
    for i, name in enumerate(names):
        net = build_model(name, real.num_classes, real.image_shape, seed=i)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        net.train()
        for _ in range(15):  # full-batch steps: no randomness
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(real.train_images), real.train_labels).backward()
            opt.step()
        save_teacher(tdir, name, net, {"model": name, "dataset": real.name, "num_classes": real.num_classes,
                                       "image_shape": list(real.image_shape), "space": real.space,
                                       "dataset_fingerprint": real.fingerprint, "val_accuracy": 0.5})
    committee = load_committee(tdir, list(names), real=real)
    idx = real.sample_indices(3, make_generator(0, "init")).reshape(-1)
    images = real.train_images[idx].clone()
    rp = relabel(images, [t.model for t in committee], torch.tensor([1.0, 1.0]), epochs=EPOCHS,
                 generator=make_generator(0, "relabel"), temperature=2.0, teacher_names=list(names))
    path = root / "set.h5"
    save_synthetic(SyntheticSet(images, real.train_labels[idx].clone(), real.num_classes, "sre2l", real.name, 3,
                                space=real.space, replay=rp, protocol="softlabel"), path)
    return path, tdir


def eval_args(softlabel_set, json_path, every: int = 2) -> list[str]:
    path, tdir = softlabel_set
    return ["evaluate", str(path), "--protocol", "softlabel", "--runs", "2", "--model", "convnet", "--teachers",
            str(tdir), "--full-epochs", "4", "--full-acc", "0.9", "--lr", "0.005", "--json", str(json_path),
            "--checkpoint-every", str(every), "--seed", "4", "--threads", "1", "-q"]


@contextlib.contextmanager
def weights_recorded():
    """Yield a list that receives the sha256 of every student's final weights, in training order."""
    from dsdistill.evaluators import softlabel

    digests, train = [], softlabel.train_student

    def recording(model, *args, **kwargs):
        train(model, *args, **kwargs)
        digest = hashlib.sha256()
        for value in model.state_dict().values():
            digest.update(value.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
        digests.append(digest.hexdigest())
        return model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(softlabel, "train_student", recording)
        yield digests


@pytest.fixture(scope="module")
def reference(softlabel_set, tmp_path_factory, procs):
    """An uninterrupted evaluation (checkpointing every 2 epochs gives the same numbers as none)."""
    d = tmp_path_factory.mktemp("softref")
    weights = {}
    for every, name in ((2, "ref.json"), (0, "plain.json")):
        with weights_recorded() as weights[every]:
            result = CliRunner().invoke(main, eval_args(softlabel_set, d / name, every))
        assert result.exit_code == 0, result.output
    numbers = procs.report_numbers(d / "ref.json")
    assert numbers == procs.report_numbers(d / "plain.json") and weights[2] == weights[0] and len(weights[0]) == 8
    assert not (d / "ref.json.ckpt").exists()
    assert [(r["kind"], r["run"]) for r in numbers["runs"]] == [
        (k, r) for r in range(2) for k in ("synthetic", "synthetic_hard", "random", "full")]
    accs = [row["test_acc"] for row in numbers["runs"]]
    assert len(set(accs)) > 2, f"students agree ({accs}); the comparison would be weak"
    return numbers, weights[2]


# Saves per run: 5 epoch saves + 1 finished-student save for each 12-epoch student, 1 + 1 for the
# 4-epoch full run. Save 7 is in run 0's hard-label student at epoch 2; save 16 in its random
# student at epoch 8 (its relabelled subset is recomputed on resume); save 19 in the full run at 2.
@pytest.mark.parametrize("sig, at, where", [(signal.SIGINT, 7, (1, 2)), (signal.SIGTERM, 16, (2, 8)),
                                            (signal.SIGTERM, 19, (3, 2))])
def test_signal_in_process_then_resume(softlabel_set, reference, tmp_path, monkeypatch, sig, at, where, procs):
    from dsdistill.condenser import Checkpointer

    saves = []
    real_save = Checkpointer.save

    def save_then_signal(self, state):
        real_save(self, state)
        saves.append(state)
        if len(saves) == at:
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(Checkpointer, "save", save_then_signal)
    out = tmp_path / "out.json"
    result = CliRunner().invoke(main, eval_args(softlabel_set, out))
    assert result.exit_code == 130, result.output
    assert f"interrupted; state saved to {out}.ckpt{RESUME_HINT}" in result.output
    assert len(saves) == at and procs.progress(f"{out}.ckpt") == where and not out.exists()
    monkeypatch.setattr(Checkpointer, "save", real_save)
    with weights_recorded() as weights:
        result = CliRunner().invoke(main, eval_args(softlabel_set, out) + ["--resume"])
    assert result.exit_code == 0, result.output
    assert procs.report_numbers(out) == reference[0]
    assert weights == reference[1][where[0]:]  # the finished students were not retrained
    assert not (tmp_path / "out.json.ckpt").exists()


def test_resume_refuses_a_checkpoint_of_another_evaluation(softlabel_set, tmp_path, monkeypatch):
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
        CliRunner().invoke(main, eval_args(softlabel_set, out), catch_exceptions=False)
    monkeypatch.setattr(Checkpointer, "save", real_save)
    other = eval_args(softlabel_set, out)
    other[other.index("--lr") + 1] = "0.004"
    result = CliRunner().invoke(main, other + ["--resume"])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: checkpoint {out}.ckpt belongs to a different evaluation (other file, "
                                     "models, runs, seed or settings); delete it or run without --resume")


def test_sigkill_then_resume_gives_the_same_report(softlabel_set, reference, tmp_path, procs):
    out, ckpt = tmp_path / "out.json", tmp_path / "out.json.ckpt"
    proc = procs.start(eval_args(softlabel_set, out), tmp_path)
    procs.wait_for_saves(proc, ckpt, random.Random(0).randint(8, 30))
    procs.kill9(proc)
    done, epoch = procs.progress(ckpt)
    assert (done, epoch) > (0, 0) and not out.exists()
    with weights_recorded() as weights:
        result = CliRunner().invoke(main, eval_args(softlabel_set, out) + ["--resume"])
    assert result.exit_code == 0, result.output
    assert procs.report_numbers(out) == reference[0]
    assert weights == reference[1][done:]
    assert not ckpt.exists()
