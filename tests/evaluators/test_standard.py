import json

import pytest
import torch

from dsdistill.errors import ConfigError
from dsdistill.evaluators import DC, TM, evaluate, protocol_for
from dsdistill.methods.coreset import RandomSelection
from dsdistill.synthetic import SoftLabels


@pytest.fixture()
def tiny_syn(tiny_real):
    return RandomSelection.from_settings("tiny", 3).condense(tiny_real, 3, progress=False)


def test_report_has_synthetic_and_random_rows_and_storage(tiny_syn, tiny_real):
    report = evaluate(tiny_syn, tiny_real, models=["convnet", "mlp"], runs=2, epochs=15, progress=False)
    assert len(report.runs) == 2 * 2 * 2
    s = report.summary()
    assert set(s) == {"convnet", "mlp"} and set(s["convnet"]) == {"synthetic", "random"}
    assert s["convnet"]["synthetic"]["mean"] > 50  # 4 easy classes, chance is 25%
    assert report.protocol["epochs"] == 15 and report.protocol["name"] == "dc"
    assert report.storage["synthetic"]["images"] == 12 * 16 * 16 * 4
    json.dumps(report.to_dict())
    assert "| convnet |" in report.table()


def test_same_seed_same_numbers(tiny_syn, tiny_real):
    a = evaluate(tiny_syn, tiny_real, runs=1, epochs=5, progress=False, baseline=False)
    b = evaluate(tiny_syn, tiny_real, runs=1, epochs=5, progress=False, baseline=False)
    assert a.runs[0].test_acc == b.runs[0].test_acc


def test_protocol_selection(tiny_syn):
    assert protocol_for(tiny_syn) is DC
    tiny_syn.lr = 0.02
    assert protocol_for(tiny_syn) is DC  # the file's own protocol wins
    tiny_syn.protocol = None
    assert protocol_for(tiny_syn) is TM and TM.settings_for(tiny_syn).lr == 0.02
    assert DC.settings_for(tiny_syn).lr == 0.01


def test_explicit_lr_wins_over_the_learned_lr(tiny_syn, tiny_real):
    tiny_syn.lr, tiny_syn.protocol = 0.02, None
    assert TM.with_overrides(epochs=5).settings_for(tiny_syn).lr == 0.02  # other overrides keep the learned lr
    assert TM.with_overrides(lr=0.005).settings_for(tiny_syn).lr == 0.005
    report = evaluate(tiny_syn, tiny_real, runs=1, epochs=2, lr=0.005, progress=False, baseline=False)
    assert report.protocol["name"] == "tm" and report.protocol["lr_used"] == 0.005


def test_soft_labels_are_used_under_tm(tiny_syn, tiny_real):
    tiny_syn.soft_labels = SoftLabels(torch.nn.functional.one_hot(tiny_syn.labels, 4).float() * 5, "logits")
    report = evaluate(tiny_syn, tiny_real, runs=1, epochs=3, progress=False, baseline=False, protocol="tm")
    assert report.protocol["soft_labels"] is True


def test_mismatched_dataset_is_refused(tiny_syn, mnist):
    with pytest.raises(ConfigError, match="does not match dataset mnist"):
        evaluate(tiny_syn, mnist, runs=1, epochs=1, progress=False)


def test_robustness_runs_feed_the_robust_scores(tiny_syn, tiny_real):
    from dsdistill.compare import leaderboard

    tiny_syn.soft_labels = SoftLabels(torch.nn.functional.one_hot(tiny_syn.labels, 4).float() * 3, "logits")
    report = evaluate(tiny_syn, tiny_real, runs=1, epochs=3, progress=False, protocol="tm", robustness=True)
    kinds = {r.kind for r in report.runs}
    assert kinds == {"synthetic", "random", "synthetic_noaug", "random_noaug", "synthetic_hard"}
    row = leaderboard([report.to_dict()], full_acc={tiny_syn.dataset: 1.0})[0]
    assert row.ars is not None and 0.0 <= row.ars <= 1.0
    assert row.lrs is not None and 0.0 <= row.lrs <= 1.0
