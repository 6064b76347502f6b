"""The softlabel protocol: replayed labels, hard-label and random+same-labels runs, IOR/HLR, online mode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import dsdistill.models  # noqa: F401
from dsdistill.errors import ConfigError
from dsdistill.evaluators import evaluate
from dsdistill.evaluators.softlabel import SoftLabelReport, evaluate_softlabel
from dsdistill.evaluators.softlabel_train import ReplaySource, train_student
from dsdistill.io import save_synthetic
from dsdistill.models import build_model
from dsdistill.rng import make_generator
from dsdistill.softlabels import relabel
from dsdistill.synthetic import SyntheticSet
from dsdistill.teachers.store import save_teacher

NAMES = ("convnet_bn", "mlp")


@pytest.fixture(scope="module")
def teachers_dir(tiny_real, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("teachers")
    for i, name in enumerate(NAMES):
        net = build_model(name, tiny_real.num_classes, tiny_real.image_shape, seed=i)
        save_teacher(d, name, net, {"model": name, "dataset": tiny_real.name, "num_classes": tiny_real.num_classes,
                                    "image_shape": list(tiny_real.image_shape), "space": tiny_real.space,
                                    "dataset_fingerprint": tiny_real.fingerprint, "val_accuracy": 0.5 + 0.1 * i})
    return d


def make_syn(real, teachers_dir: Path | None, epochs: int = 2, record: bool = True, **kw) -> SyntheticSet:
    from dsdistill.teachers import load_committee

    committee = load_committee(teachers_dir, list(NAMES), real=real)
    idx = real.sample_indices(2, make_generator(0, "init")).reshape(-1)
    images = real.train_images[idx].clone()
    rp = relabel(images, [t.model for t in committee], torch.tensor([1.0, 2.0]), epochs=epochs,
                 generator=make_generator(0, "relabel"), temperature=4.0, teacher_names=list(NAMES), **kw)
    return SyntheticSet(images, real.train_labels[idx].clone(), real.num_classes, "sre2l", real.name, 2,
                        space=real.space, replay=rp, protocol="softlabel",
                        provenance={"teachers_dir": str(teachers_dir)} if record else {})


def test_student_sees_exactly_the_teachers_inputs(tiny_real, teachers_dir) -> None:
    seen_t: dict[tuple[int, int], torch.Tensor] = {}
    syn = make_syn(tiny_real, teachers_dir)

    class Rec(nn.Module):
        def __init__(self, net, log):
            super().__init__()
            self.net, self.log = net, log

        def forward(self, x):
            self.log.append(x.detach().clone())
            return self.net(x)

    student_log: list[torch.Tensor] = []
    student = Rec(build_model("convnet", 4, (1, 16, 16), seed=0), student_log)
    gen = make_generator(1, "s")
    shadow = torch.Generator().set_state(gen.get_state())
    n = syn.num_images
    train_student(student, syn.images, syn.labels, ReplaySource(syn.replay), epochs=2, batch_size=3, lr=1e-3,
                  weight_decay=0.01, smoothing=1.0, hard=False, generator=gen)
    calls = iter(student_log)
    for e in range(2):
        order = torch.randperm(n, generator=shadow)  # the student's own shuffle, a different batching
        for chunk in order.split(3):
            x = next(calls)
            for j, i in enumerate(chunk.tolist()):
                seen_t[(e, i)] = x[j]
    # rebuild the teacher's inputs from a recording relabel with the same seed and batch size 5
    log: list[torch.Tensor] = []

    class TRec(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            log.append(x.detach().clone())
            return self.net(x)

    from dsdistill.teachers import load_committee

    committee = load_committee(teachers_dir, list(NAMES), real=tiny_real)
    relabel(syn.images, [TRec(committee[0].model), committee[1].model], torch.tensor([1.0, 2.0]), epochs=2,
            generator=make_generator(0, "relabel"), temperature=4.0, batch_size=5)
    for e in range(2):
        for b, start in enumerate(range(0, n, 5)):
            x = log[e * 2 + b]
            for j in range(x.shape[0]):
                assert torch.equal(seen_t[(e, start + j)], x[j])  # bitwise the same input


@pytest.fixture(scope="module")
def report(tiny_real, teachers_dir) -> SoftLabelReport:
    syn = make_syn(tiny_real, teachers_dir)
    return evaluate_softlabel(syn, tiny_real, runs=1, progress=False, full_acc=0.9)


def test_protocol_reports_soft_hard_random_ior_hlr(report) -> None:
    kinds = sorted(r.kind for r in report.runs)
    assert kinds == ["random", "synthetic", "synthetic_hard"]
    s = report.summary()["convnet"]
    sc = report.scores["convnet"]
    assert sc["ior"] == pytest.approx(s["synthetic"]["mean"] / 100 - s["random"]["mean"] / 100)
    assert sc["hlr"] == pytest.approx(0.9 - s["synthetic_hard"]["mean"] / 100)
    assert -1 <= sc["ior"] <= 1 and report.protocol["epochs"] == 2 and report.protocol["online_teacher"] is False
    assert report.protocol["loss"] == "KL(batchmean), no T^2" and report.protocol["temperature"] == 4.0
    assert report.settings["teachers_dir"] and report.storage["label_bytes"] > 0
    table = report.table()
    assert "IOR" in table and "HLR" in table and "ONLINE" not in table
    d = report.to_dict()
    assert d["scores"]["convnet"]["ior"] == sc["ior"]
    from dsdistill.compare import leaderboard  # `dsdistill compare` reads the same numbers from the JSON

    row = leaderboard([d], {d["dataset"]: 0.9})[0]
    assert row.ior == pytest.approx(sc["ior"]) and row.hlr == pytest.approx(sc["hlr"]) and 0 <= row.lrs <= 1


def test_same_seed_same_numbers(tiny_real, teachers_dir, report) -> None:
    again = evaluate_softlabel(make_syn(tiny_real, teachers_dir), tiny_real, runs=1, progress=False, hard=False,
                               baseline=False)
    assert again.runs[0].test_acc == report.runs[0].test_acc  # synthetic run, same seed


def test_online_teacher_is_flagged(tiny_real, teachers_dir) -> None:
    syn = make_syn(tiny_real, teachers_dir, epochs=1)
    rep = evaluate_softlabel(syn, tiny_real, runs=1, progress=False, online_teacher=True, hard=False,
                             baseline=False, teachers=teachers_dir)
    assert rep.protocol["online_teacher"] is True and rep.protocol["labels"] == "online teacher"
    assert rep.storage["teacher_bytes"] > 0 and "ONLINE TEACHER" in rep.table()
    assert "does not contain" in rep.settings["online_teacher_note"]


def test_errors(tiny_real, teachers_dir) -> None:
    syn = make_syn(tiny_real, teachers_dir)
    with pytest.raises(ConfigError, match="stores soft labels for 2 epochs but 3"):
        evaluate_softlabel(syn, tiny_real, runs=1, epochs=3, progress=False)
    bare = make_syn(tiny_real, teachers_dir, record=False)
    with pytest.raises(ConfigError, match="pass --teachers DIR"):
        evaluate_softlabel(bare, tiny_real, runs=1, progress=False)
    syn.provenance["teachers"] = [{"name": "mlp", "sha256": "0" * 64}]  # the set was labelled by another mlp
    with pytest.raises(ConfigError, match="teacher 'mlp' in .* is not the one the set was labelled with"):
        evaluate_softlabel(syn, tiny_real, runs=1, progress=False)
    plain = SyntheticSet(syn.images, syn.labels, 4, "dm", tiny_real.name, 2, space=tiny_real.space)
    with pytest.raises(ConfigError, match="no replay soft labels"):
        evaluate_softlabel(plain, tiny_real, runs=1, progress=False)
    # through the standard evaluator: the file's protocol dispatches here (no teachers needed without baseline)
    rep = evaluate(bare, tiny_real, runs=1, epochs=1, baseline=False, progress=False)
    assert isinstance(rep, SoftLabelReport) and rep.scores["convnet"]["ior"] is None


def test_bssl_and_topk_sets_evaluate(tiny_real, teachers_dir) -> None:
    syn = make_syn(tiny_real, teachers_dir, epochs=1, batch_specific=True, batch_size=4, top_k=2, mix="none")
    rep = evaluate_softlabel(syn, tiny_real, runs=1, progress=False, hard=False)
    assert {r.kind for r in rep.runs} == {"synthetic", "random"}
    assert rep.protocol["label_settings"]["batch_specific"] is True


def test_cli(tiny_real, tiny_name, teachers_dir, tmp_path) -> None:
    from dsdistill.cli import main

    path = tmp_path / "s.h5"
    save_synthetic(make_syn(tiny_real, teachers_dir, record=False), path)
    runner = CliRunner()
    res = runner.invoke(main, ["evaluate", str(path), "--dataset", tiny_name, "--protocol", "softlabel", "--runs", "1",
                               "--teachers", str(teachers_dir), "--full-acc", "0.8", "-q", "--checkpoint-every", "0"])
    assert res.exit_code == 0, res.output
    assert "IOR" in res.output and "random + same soft labels" in res.output
    res = runner.invoke(main, ["evaluate", str(path), "--dataset", tiny_name, "--runs", "1", "-q", "--epochs", "5",
                               "--checkpoint-every", "0"])
    assert res.exit_code == 2 and "stores soft labels for 2 epochs" in res.output
    res = runner.invoke(main, ["info", str(path)])
    assert res.exit_code == 0 and "2 epochs x 8 samples" in res.output


@pytest.mark.parametrize("online", [False, True])
def test_train_student_resumes_bitwise(tiny_real, teachers_dir, online) -> None:
    """Stopped after epoch 2 of 4 and resumed from the saved state (a fresh model and generator),
    the student ends bitwise where the uninterrupted one ends; online, augmentation is drawn from
    the restored generator."""
    from dsdistill.evaluators.softlabel_train import OnlineSource
    from dsdistill.teachers import load_committee

    syn = make_syn(tiny_real, teachers_dir, epochs=4)
    if online:
        nets = [t.model for t in load_committee(teachers_dir, list(NAMES), real=tiny_real)]
        source = OnlineSource(nets, torch.tensor([0.5, 0.5]), "logits", 4.0, (16, 16), (16, 16))
    else:
        source = ReplaySource(syn.replay)
    kw = {"epochs": 4, "batch_size": 3, "lr": 1e-2, "weight_decay": 0.01, "smoothing": 1.0, "hard": False}

    def fresh():
        return build_model("convnet", 4, (1, 16, 16), seed=0), make_generator(1, "s")

    full, gen = fresh()
    saved = {}
    train_student(full, syn.images, syn.labels, source, generator=gen, **kw,
                  checkpoint=lambda e, state: saved.setdefault(e, state()))
    assert sorted(saved) == [1, 2, 3, 4] and saved[2]["epoch"] == 2
    resumed, gen2 = fresh()  # another generator state: the saved one must be restored
    gen2.manual_seed(123)
    train_student(resumed, syn.images, syn.labels, source, generator=gen2, **kw, resume=saved[2])
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    key = next(iter(full.state_dict()))  # and epochs 3-4 did train: the weights moved after the save
    assert not torch.equal(saved[2]["model"][key], full.state_dict()[key])
