"""The leaderboard reproduces the reports' numbers; LRS/ARS use fractions and stay in [0, 1]."""

import csv
import io
import json
import math

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from dsdistill.cli import main
from dsdistill.compare import (augmentation_robust_score, compare_files, label_robust_score, leaderboard,
                               to_csv, to_markdown)
from dsdistill.errors import ConfigError


def report(method="dm", dataset="mnist", ipc=10, model="convnet", syn=(0.9, 0.92), rnd=(0.7, 0.74),
           soft=False, augment="dsa", epochs=300, extra=()):
    runs = [{"model": model, "kind": "synthetic", "run": i, "test_acc": a, "val_acc": a, "seconds": 1.0}
            for i, a in enumerate(syn)]
    runs += [{"model": model, "kind": "random", "run": i, "test_acc": a, "val_acc": a, "seconds": 1.0}
             for i, a in enumerate(rnd)]
    runs += [{"model": model, "kind": kind, "run": 0, "test_acc": a, "val_acc": a, "seconds": 1.0} for kind, a in extra]
    return {"file": f"{method}-{ipc}-{augment}-{soft}.h5", "method": method, "dataset": dataset, "ipc": ipc,
            "num_classes": 10, "protocol": {"name": "tm" if soft else "dc", "epochs": epochs, "augment": augment,
                                            "soft_labels": soft},
            "runs": runs, "storage": {"synthetic": {"total": 4096}, "ratio_to_full": 0.002}, "settings": {}}


def test_numbers_match_the_reports():
    rows = leaderboard([report(), report(method="random", syn=(0.7, 0.72)), report(model="mlp", syn=(0.5,))])
    assert [(r.method, r.model) for r in rows] == [("dm", "convnet"), ("dm", "mlp"), ("random", "convnet")]
    dm = rows[0]
    assert dm.syn == [0.9, 0.92] and dm.random == [0.7, 0.74] and dm.hard == dm.syn  # hard-label set
    md = to_markdown(rows)
    assert "| mnist | 10 | dm | convnet | dc (300) | 91.00 ± 1.00 (n=2) | 72.00 ± 2.00 (n=2) | +19.00 | " in md
    assert "4.0 KiB (0.200% of full)" in md
    table = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert float(table[0]["acc_mean_pct"]) == pytest.approx(91.0)
    assert float(table[0]["acc_std_pct"]) == pytest.approx(1.0)
    assert table[1]["acc_n"] == "1" and table[0]["lrs"] == "" and "full-data" in table[0]["lrs_note"]


def test_real_evaluation_report_round_trips(tiny_real):
    from dsdistill.evaluators import evaluate
    from dsdistill.methods.coreset import RandomSelection

    syn = RandomSelection.from_settings("tiny", 2).condense(tiny_real, 2, progress=False)
    rep = evaluate(syn, tiny_real, runs=2, epochs=2, progress=False)
    (row,) = leaderboard([json.loads(json.dumps(rep.to_dict()))])
    summary = rep.summary()["convnet"]
    assert 100 * sum(row.syn) / len(row.syn) == pytest.approx(summary["synthetic"]["mean"])
    assert 100 * sum(row.random) / len(row.random) == pytest.approx(summary["random"]["mean"])
    assert row.storage_bytes == rep.storage["synthetic"]["total"]


def test_lrs_and_ars_from_several_reports():
    soft = report(method="datm", soft=True, syn=(0.95,), rnd=(0.7,), extra=[("full", 0.99)])
    hard = report(method="datm", soft=False, syn=(0.85,), rnd=(0.72,))
    noaug = report(method="datm", soft=True, augment="none", syn=(0.9,), rnd=(0.6,))
    (row,) = leaderboard([soft, hard, noaug])
    assert row.hard == [0.85] and row.random == [0.7, 0.72] and row.full == 0.99
    alpha = 0.5 * (0.95 - 0.71) - 0.5 * (0.99 - 0.85)
    assert row.lrs == pytest.approx((math.exp(alpha) - math.exp(-1)) / (math.e - math.exp(-1)))
    assert row.hlr == pytest.approx(0.14) and row.ior == pytest.approx(0.24)
    beta = 0.5 * (0.95 - 0.71) + 0.5 * (0.9 - 0.6)
    assert row.ars == pytest.approx((math.exp(beta) - math.exp(-1)) / (math.e - math.exp(-1)))


def test_missing_inputs_leave_scores_empty_with_reasons():
    (row,) = leaderboard([report(method="datm", soft=True)])
    assert row.lrs is None and "hard-label accuracy" in row.lrs_note and "full-data accuracy" in row.lrs_note
    assert row.ars is None and "without augmentation" in row.ars_note
    (row,) = leaderboard([report()], full_acc={"mnist:convnet": 0.99})
    assert row.lrs is not None and row.ars is None
    md = to_markdown([row])
    assert "–[1]" in md and "[1] dm/mnist/IPC10/convnet: ARS needs" in md
    with pytest.raises(ConfigError, match="fraction"):
        leaderboard([report()], full_acc={"mnist": 99.2})


@pytest.mark.parametrize("args,expected", [((0, 1, 1, 0), 1.0), ((1, 0, 0, 1), 0.0), ((1, 1, 1, 1), None)])
def test_lrs_extremes(args, expected):
    lrs, hlr, ior = label_robust_score(*args)
    if expected is None:  # alpha = 0 -> (1 - e^-1) / (e - e^-1)
        expected = (1 - math.exp(-1)) / (math.e - math.exp(-1))
    assert lrs == pytest.approx(expected, abs=1e-12) and 0.0 <= lrs <= 1.0


fraction = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(fraction, fraction, fraction, fraction, st.floats(0.0, 1.0))
def test_scores_stay_in_unit_interval(a, b, c, d, w):
    lrs, hlr, ior = label_robust_score(a, b, c, d, w=w)
    assert 0.0 <= lrs <= 1.0 and -1.0 <= hlr <= 1.0 and -1.0 <= ior <= 1.0
    assert 0.0 <= augmentation_robust_score(a, b, c, d, gamma=w) <= 1.0


def test_percent_accuracies_are_refused():
    with pytest.raises(ConfigError, match="divided by 100"):
        label_robust_score(99.0, 80.0, 85.0, 60.0)
    with pytest.raises(ConfigError, match="fraction"):
        leaderboard([report(syn=(91.0,))])


def test_cli_compare(tmp_path):
    paths = []
    for i, rep in enumerate([report(), report(method="herding", syn=(0.8,))]):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(rep))
    out = tmp_path / "table.md"
    result = CliRunner().invoke(main, ["compare", *map(str, paths), "-o", str(out), "--full-acc", "mnist=0.99"])
    assert result.exit_code == 0, result.output
    assert "| dm |" in out.read_text() and "| herding |" in out.read_text()
    rows = list(csv.DictReader(io.StringIO((tmp_path / "table.csv").read_text())))
    assert len(rows) == 2 and all(0 <= float(r["lrs"]) <= 1 for r in rows)
    (tmp_path / "bad.json").write_text(json.dumps({"hello": 1}))
    (tmp_path / "broken.json").write_text("{")
    for args, phrase in [([str(tmp_path / "nope.json")], "does not exist"),
                         ([str(tmp_path / "bad.json")], "not a dsdistill evaluation report"),
                         ([str(tmp_path / "broken.json")], "not valid JSON"),
                         ([str(paths[0]), "--full-acc", "mnist"], "--full-acc expects")]:
        result = CliRunner().invoke(main, ["compare", *args, "-o", str(tmp_path / "t2.md")])
        assert result.exit_code == 2 and result.output.startswith("error: ") and phrase in result.output
        assert not (tmp_path / "t2.md").exists() and not (tmp_path / "t2.csv").exists()


def test_compare_files_refuses_csv_output(tmp_path):
    with pytest.raises(ConfigError, match="must not end in .csv"):
        compare_files([tmp_path / "r.json"], tmp_path / "t.csv")
