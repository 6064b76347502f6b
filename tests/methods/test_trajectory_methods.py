"""mtt, ftd, ast and datm on tiny data with tiny experts (seconds each)."""

import logging
import math

import pytest
import torch
from click.testing import CliRunner

from dsdistill.condenser import Checkpointer, Interrupted
from dsdistill.errors import ConfigError, NumericalError
from dsdistill.evaluators.protocols import TM, protocol_for
from dsdistill.io import load_synthetic, save_synthetic
from dsdistill.methods.trajectory.ast import AST
from dsdistill.methods.trajectory.datm import DATM
from dsdistill.methods.trajectory.ftd import FTD
from dsdistill.methods.trajectory.init import representative_indices
from dsdistill.methods.trajectory.mtt import MTT

FAST = {"iterations": 3, "syn_steps": 4, "expert_epochs": 1, "max_start_epoch": 2, "lr_img": 10.0}


def test_checkpoint_unroll_gives_the_same_run_as_full(tiny_real, tiny_experts):
    runs = {mode: MTT.from_settings("tiny", 2, {**FAST, "experts": tiny_experts["mtt"], "unroll": mode}).condense(
        tiny_real, 2, seed=3, progress=False) for mode in ("full", "checkpoint")}
    assert torch.allclose(runs["full"].images, runs["checkpoint"].images, rtol=1e-4, atol=1e-5)
    assert runs["full"].lr == pytest.approx(runs["checkpoint"].lr, rel=1e-4)
    tesla = MTT.from_settings("tiny", 2, {**FAST, "experts": tiny_experts["mtt"], "unroll": "tesla"}).condense(
        tiny_real, 2, seed=3, progress=False)
    assert torch.isfinite(tesla.images).all() and tesla.lr > 0


def test_learned_lr_is_saved_and_used_by_the_tm_protocol(tiny_real, tiny_experts, tmp_path):
    syn = MTT.from_settings("tiny", 1, {**FAST, "experts": tiny_experts["mtt"]}).condense(tiny_real, 1, progress=False)
    assert syn.protocol == "tm" and syn.lr > 0 and syn.lr != pytest.approx(0.01)  # it was learned
    save_synthetic(syn, tmp_path / "m.h5")
    back = load_synthetic(tmp_path / "m.h5")
    assert back.lr == pytest.approx(syn.lr)
    proto = protocol_for(back)
    assert proto is TM and proto.settings_for(back).lr == pytest.approx(syn.lr)
    assert back.provenance["experts"]["recipe"] == "mtt"


def test_exploding_lr_is_rolled_back_and_logged(tiny_real, tiny_experts, caplog):
    cfg = {**FAST, "experts": tiny_experts["mtt"], "lr_teacher": 0.01, "max_syn_lr": 0.0101, "lr_lr": 1e-3,
           "iterations": 6}
    with caplog.at_level(logging.WARNING):
        try:
            syn = MTT.from_settings("tiny", 1, cfg).condense(tiny_real, 1, seed=0, progress=False)
        except NumericalError:
            syn = None
    assert "step rolled back" in caplog.text
    if syn is not None:
        assert 0 < syn.lr <= 0.0101 and syn.provenance["rolled_back_iterations"] > 0


def test_always_exploding_lr_stops_and_writes_nothing(tiny_name, tiny_experts, tmp_path):
    from dsdistill.cli import main

    out = tmp_path / "bad.h5"
    result = CliRunner().invoke(main, [
        "condense", "-m", "mtt", "-d", tiny_name, "--ipc", "1", "-o", str(out), "-q", "--iterations", "8",
        "-p", f"experts={tiny_experts['mtt']}", "-p", "syn_steps=3", "-p", "expert_epochs=1",
        "-p", "max_start_epoch=2", "-p", "lr_teacher=0.5", "-p", "max_syn_lr=0.5", "-p", "lr_lr=10"])
    assert result.exit_code == 2, result.output
    assert "consecutive non-finite steps" in result.output and "lr_lr" in result.output
    assert "consecutive non-finite steps" in result.output and "lr_lr" in result.output
    assert "Traceback" not in result.output and not out.exists() and not list(tmp_path.glob("*.h5*"))


def test_resume_after_interruption_is_identical(tiny_real, tiny_experts, tmp_path, stop_at):
    cfg = {**FAST, "experts": tiny_experts["ftd"], "iterations": 5, "ema_decay": 0.5}
    full = FTD.from_settings("tiny", 1, cfg).condense(tiny_real, 1, seed=2, progress=False)

    with pytest.raises(Interrupted):
        FTD.from_settings("tiny", 1, cfg).condense(tiny_real, 1, seed=2, progress=False,
                                                   checkpoint=stop_at(tmp_path / "r.ckpt", 2, every=0))
    resumed = FTD.from_settings("tiny", 1, cfg).condense(
        tiny_real, 1, seed=2, progress=False, checkpoint=Checkpointer(tmp_path / "r.ckpt", every=0, resume=True))
    assert torch.equal(full.images, resumed.images) and full.lr == resumed.lr


def test_bad_expert_settings_are_refused(tiny_real, tiny_experts, tmp_path):
    with pytest.raises(ConfigError, match="needs expert trajectories"):
        MTT.from_settings("tiny", 1, FAST).condense(tiny_real, 1, progress=False)
    with pytest.raises(ConfigError, match="lacks"):
        MTT.from_settings("tiny", 1, {**FAST, "experts": tiny_experts["mtt"], "max_start_epoch": 5}).condense(
            tiny_real, 1, progress=False)
    with pytest.raises(ConfigError, match="unroll must be one of"):
        MTT.from_settings("tiny", 1, {**FAST, "experts": tiny_experts["mtt"], "unroll": "fast"}).condense(
            tiny_real, 1, progress=False)


def test_experts_in_another_space_or_dataset_are_refused(tiny_name, tiny_experts, mnist):
    from dsdistill.data import load_real

    zca = load_real(tiny_name, val_fraction=0.25, zca=True)
    with pytest.raises(ConfigError, match="add --zca|drop --zca"):
        MTT.from_settings("tiny", 1, {**FAST, "experts": tiny_experts["mtt"]}).condense(zca, 1, progress=False)
    with pytest.raises(ConfigError, match="were trained on"):
        MTT.from_settings("mnist", 1, {**FAST, "experts": tiny_experts["mtt"]}).condense(mnist, 1, progress=False)


def test_ftd_returns_the_ema_of_the_images(tiny_real, tiny_experts):
    cfg = {**FAST, "experts": tiny_experts["ftd"], "lr_img": 100.0}
    slow = FTD.from_settings("tiny", 1, {**cfg, "ema_decay": 0.999999})
    syn_slow = slow.condense(tiny_real, 1, seed=4, progress=False)
    assert torch.allclose(syn_slow.images, slow._initial, atol=1e-3)  # a near-1 decay barely leaves the init
    fast = FTD.from_settings("tiny", 1, {**cfg, "ema_decay": 0.0}).condense(tiny_real, 1, seed=4, progress=False)
    assert not torch.allclose(fast.images, slow._initial, atol=1e-3)
    state = {"ema": None}
    slow._initial = torch.zeros(2)
    slow.config.ema_decay = 0.5
    slow.after_update(torch.ones(2), state)
    slow.after_update(torch.full((2,), 3.0), state)
    assert torch.allclose(slow.final_images(None, state), torch.full((2,), 1.75))


def test_representative_init_works_at_every_ipc():
    g = torch.Generator().manual_seed(0)
    logits = torch.cat([torch.randn(30, 4) + 10 * torch.eye(4)[j] for j in range(4)])
    for ipc in (1, 3, 10, 15):
        idx = representative_indices(logits, ipc, g)
        assert len(idx) == ipc and len(set(idx.tolist())) == ipc
    one = representative_indices(logits, 1, g)  # the single image nearest the mean of the class
    assert int(one) == int(torch.cdist(logits.double().mean(0, keepdim=True), logits.double()).argmin())


def test_ast_runs_with_momentum_perturbation_and_middle_loss(tiny_real, tiny_experts):
    cfg = {**FAST, "experts": tiny_experts["ast"], "expert_epochs": 2, "max_start_epoch": 1}
    ast = AST.from_settings("tiny", 1, cfg)
    assert ast.momentum == 0.9 and ast.middle_epochs() == [1]
    syn = ast.condense(tiny_real, 1, seed=0, progress=False)
    assert torch.isfinite(syn.images).all() and syn.lr > 0
    from dsdistill.experts import ExpertStore
    from dsdistill.methods.trajectory.student import FunctionalStudent

    store = ExpertStore.open(tiny_experts["ast"])
    init = ast.initial_images(tiny_real, 1, store, FunctionalStudent(store.build_model()),
                              torch.Generator().manual_seed(0), "cpu")
    assert init.shape == (4, 1, 16, 16)  # IPC 1 selects one real image per class (the reference: none)
    for c in range(4):
        own = tiny_real.train_images[tiny_real.indices_of(c)]
        assert (own - init[c]).flatten(1).abs().amax(1).min() == 0
    theta0 = torch.ones(10)

    class S:
        shapes = [(2, 1, 2, 2), (2,)]

        @staticmethod
        def split(t):
            return t.split([8, 2])

    moved = ast.prepare_theta0(theta0, S, torch.Generator().manual_seed(0))
    assert not torch.equal(moved[:8], theta0[:8]) and torch.equal(moved[8:], theta0[8:])
    ast.config.max_start_epoch = 20
    assert ast.inner_weight(10) == pytest.approx(math.log(8, 5))
    assert ast.inner_weight(0) == pytest.approx(1 / math.log(18, 5))


def test_datm_learns_soft_labels_and_saves_them(tiny_real, tiny_experts, tmp_path):
    cfg = {**FAST, "experts": tiny_experts["ftd"], "sequential_generation": False, "threshold": 100.0}
    syn = DATM.from_settings("tiny", 2, cfg).condense(tiny_real, 2, seed=0, progress=False)
    assert syn.soft_labels is not None and syn.soft_labels.kind == "logits"
    assert syn.soft_labels.values.shape == (8, 4)
    save_synthetic(syn, tmp_path / "d.h5")
    back = load_synthetic(tmp_path / "d.h5")
    assert torch.equal(back.soft_labels.values, syn.soft_labels.values) and back.lr == pytest.approx(syn.lr)
    gated = DATM.from_settings("tiny", 2, {**cfg, "threshold": 0.0}).condense(tiny_real, 2, seed=0, progress=False)
    assert gated.provenance["skipped_updates"] == 3 and gated.lr == pytest.approx(0.01)


def test_datm_start_window_grows_linearly():
    d = DATM.from_settings("cifar10", 10, {})
    assert d.start_range(0) == (0, 10) and d.start_range(500) == (0, 15) and d.start_range(5000) == (0, 20)


def test_recipes_follow_the_tables():
    c10 = MTT.recipe("cifar10", 10)
    assert c10["lr_img"] == 100 and c10["syn_steps"] == 30 and c10["lr_teacher"] == 0.001  # typo corrected
    assert MTT.recipe("CIFAR-100", 50)["batch_syn"] == 125
    assert MTT.recipe("mnist", 1)["zca"] is False and MTT.recipe("mnist", 1)["syn_steps"] == 50
    assert FTD.recipe("cifar10", 1)["ema_decay"] == 0.9999
    assert DATM.recipe("cifar10", 1)["threshold"] == 1.1


def test_collapsing_lr_is_rolled_back_and_never_written(tiny_real, tiny_experts, caplog):
    cfg = {**FAST, "experts": tiny_experts["mtt"], "lr_teacher": 0.01, "lr_lr": 1e-6, "iterations": 6}
    free = MTT.from_settings("tiny", 1, cfg).condense(tiny_real, 1, seed=0, progress=False)
    assert 1e-4 <= free.lr < 0.005 and free.provenance["rolled_back_iterations"] == 0  # this run's lr falls
    with caplog.at_level(logging.WARNING):
        try:
            syn = MTT.from_settings("tiny", 1, {**cfg, "min_syn_lr": 0.005}).condense(tiny_real, 1, seed=0,
                                                                                      progress=False)
        except NumericalError as err:
            assert "min_syn_lr" in str(err)
            syn = None
    assert "step rolled back" in caplog.text and "allowed: [0.005, 1]" in caplog.text
    if syn is not None:
        assert syn.lr >= 0.005 and syn.provenance["rolled_back_iterations"] > 0


def test_lr_teacher_outside_the_lr_bounds_is_a_config_error(tiny_real, tiny_experts):
    cfg = {**FAST, "experts": tiny_experts["mtt"], "lr_teacher": 1e-5}
    with pytest.raises(ConfigError, match="min_syn_lr"):
        MTT.from_settings("tiny", 1, cfg).condense(tiny_real, 1, progress=False)
