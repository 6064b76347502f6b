"""The CLI on graph data: condense mirage on MUTAG, evaluate, info, and one-line errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dsdistill.cli import main

pytest.importorskip("torch_geometric")


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def assert_clean_error(code, output, phrase):
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and phrase in lines[0], output


@pytest.fixture(scope="module")
def mutag_h5(tmp_path_factory):
    out = tmp_path_factory.mktemp("gcli") / "m.h5"
    code, output = run("condense", "--method", "mirage", "--dataset", "mutag", "--output", out, "-q",
                       "-p", "search_epochs=10", "-p", "search_min_steps=0", "-p", "search_runs=1", "-p", "search_grid=[0.4, 0.15]")
    assert code == 0, output
    assert output.startswith(f"wrote {out}: mirage on mutag") and out.exists()
    return out


def test_info_describes_the_graph_file(mutag_h5):
    code, output = run("info", mutag_h5)
    assert code == 0, output
    for needle in ("dsdistill graph set", "mirage", "mutag", "computation trees of depth 2", "storage"):
        assert needle in output, needle


def test_evaluate_graph_file(mutag_h5, tmp_path):
    report = tmp_path / "r.json"
    code, output = run("evaluate", mutag_h5, "--epochs", 2, "--runs", 1, "--json", report, "-q")
    assert code == 0, output
    assert "| gin | synthetic |" in output and "| gcn | random |" in output
    data = json.loads(report.read_text())
    assert data["protocol"]["name"] == "graph" and len(data["runs"]) == 4 and data["runs"][0]["test_auc"] is not None


@pytest.mark.parametrize("args,phrase", [
    (["condense", "--method", "mirage", "--dataset", "mnist", "-o", "x.h5"], "needs a graph dataset"),
    (["condense", "--method", "dm", "--dataset", "mutag", "-o", "x.h5"], "'dm' is not a graph method"),
    (["condense", "--method", "mirage", "--dataset", "mutag", "-o", "x.h5", "-p", "depth=0"], "depth >= 1"),
    (["condense", "--method", "mirage", "--dataset", "mutag", "-o", "x.h5", "-p", "bogus=1"], "unknown setting"),
])
def test_bad_input_is_one_line(args, phrase, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, output = run(*args)
    assert_clean_error(code, output, phrase)
    assert not (tmp_path / "x.h5").exists()


def test_graph_file_with_image_protocol_or_model(mutag_h5):
    assert_clean_error(*run("evaluate", mutag_h5, "--protocol", "dc"), "evaluated with --protocol graph")
    assert_clean_error(*run("evaluate", mutag_h5, "--model", "convnet", "--epochs", 1), "unknown graph model")


def test_list_shows_graph_methods_and_datasets():
    code, output = run("list")
    assert code == 0 and "graph_methods:" in output and "mirage" in output and "imdb-binary" in output


def test_image_file_with_graph_protocol(tmp_path):
    import torch

    from dsdistill.io import save_synthetic
    from dsdistill.synthetic import SyntheticSet

    path = tmp_path / "img.h5"
    save_synthetic(SyntheticSet(images=torch.zeros(2, 1, 4, 4), labels=torch.tensor([0, 1]), num_classes=2,
                                method="dm", dataset="mnist", ipc=1), path)
    assert_clean_error(*run("evaluate", path, "--protocol", "graph"), "--protocol graph is for graph sets")


def test_evaluation_interrupted_by_a_signal_resumes_to_the_same_report(mutag_h5, tmp_path, monkeypatch):
    """SIGTERM during the first student-checkpoint save: exit 130 with the resume hint; --resume
    skips the saved student and the report's numbers equal an uninterrupted evaluation's."""
    import os
    import signal

    import torch

    from dsdistill.condenser import Checkpointer

    args = ["evaluate", mutag_h5, "--epochs", 2, "--runs", 1, "--model", "gin", "-q", "--checkpoint-every", 1]
    ref, out = tmp_path / "ref.json", tmp_path / "out.json"
    assert run(*args, "--json", ref)[0] == 0
    original, saves = Checkpointer.save, []

    def save_then_signal(self, state):
        original(self, state)
        saves.append(len(state["done"]))
        if len(saves) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Checkpointer, "save", save_then_signal)
    code, output = run(*args, "--json", out)
    monkeypatch.undo()
    assert code == 130 and "rerun the same command with --resume" in output and not out.exists()
    assert len(torch.load(f"{out}.ckpt", weights_only=True)["done"]) == 1
    code, output = run(*args, "--json", out, "--resume")
    assert code == 0, output
    strip = lambda path: [{k: v for k, v in row.items() if k != "seconds"}  # noqa: E731
                          for row in json.loads(path.read_text())["runs"]]
    assert strip(out) == strip(ref) and len(strip(out)) == 2
    assert not os.path.exists(f"{out}.ckpt")
