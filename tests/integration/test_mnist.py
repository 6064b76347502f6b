"""Integration on the real MNIST (shared data root or the shipped copy).

The default test is a few-minute-budget sanity run of the whole CLI path; the ``slow`` test checks
the headline claim (DM at IPC 1 clearly above the random subset, >= 85%) under a reduced budget.
"""

import json

import pytest
from click.testing import CliRunner

from dsdistill.cli import main


def test_cli_dm_on_real_mnist(tmp_path):
    out, report = tmp_path / "dm.h5", tmp_path / "r.json"
    runner = CliRunner()
    result = runner.invoke(main, ["condense", "--method", "dm", "--dataset", "mnist", "--ipc", "1",
                                  "--iterations", "5", "-p", "batch_real=32", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["evaluate", str(out), "--epochs", "30", "--runs", "1", "--json", str(report),
                                  "-q"])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    syn = [r["test_acc"] for r in data["runs"] if r["kind"] == "synthetic"][0]
    rnd = [r["test_acc"] for r in data["runs"] if r["kind"] == "random"][0]
    assert syn > 0.3 and rnd > 0.3  # ten images of real digits already train a usable classifier
    assert data["storage"]["synthetic"]["images"] == 10 * 28 * 28 * 4


@pytest.mark.slow
def test_dm_ipc1_beats_random_on_mnist(mnist):
    from dsdistill.evaluators import evaluate
    from dsdistill.methods.dm import DM

    syn = DM.from_settings("mnist", 1, {"iterations": 300}).condense(mnist, 1, progress=False)
    report = evaluate(syn, mnist, runs=2, epochs=300, progress=False)
    s = report.summary()["convnet"]
    assert s["synthetic"]["mean"] >= 85.0
    assert s["synthetic"]["mean"] >= s["random"]["mean"] + 10
