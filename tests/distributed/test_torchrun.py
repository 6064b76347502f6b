"""torchrun (gloo on CPU) gives the same evaluation as one process; methods that do not split are refused."""

import json

import pytest

from click.testing import CliRunner

from dsdistill.cli import main


def test_two_process_evaluation_equals_one_process(tiny_name, tmp_path, torchrun):
    syn = tmp_path / "r.h5"
    runner = CliRunner()
    assert runner.invoke(main, ["condense", "-m", "random", "-d", tiny_name, "--ipc", "2", "-o", str(syn),
                                "-q"]).exit_code == 0
    args = ["evaluate", str(syn), "--epochs", "3", "--runs", "2", "--model", "convnet,mlp", "-q", "--threads", "1"]
    single = runner.invoke(main, args + ["--json", str(tmp_path / "one.json")])
    assert single.exit_code == 0, single.output
    proc = torchrun([*args, "--json", str(tmp_path / "two.json")])
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    key = lambda r: (r["model"], r["run"], r["kind"])  # noqa: E731
    assert [key(r) for r in one["runs"]] == [key(r) for r in two["runs"]]
    assert [r["test_acc"] for r in one["runs"]] == [r["test_acc"] for r in two["runs"]]
    assert two["settings"]["processes"] == 2 and one["settings"]["processes"] == 1
    assert proc.stdout.count("| convnet |") == 1  # only rank 0 prints


def test_methods_that_do_not_split_are_refused_under_torchrun(tiny_name, tmp_path, monkeypatch):
    from dsdistill.api import condense
    from dsdistill.errors import ConfigError
    from dsdistill.registry import CONDENSERS

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="'dm' does not split its work across torchrun processes"):
        condense("dm", tiny_name, 2, iterations=1, output=tmp_path / "dm.h5", progress=False)
    assert not (tmp_path / "dm.h5").exists()
    assert CONDENSERS.get("sre2l").splits_across_processes and CONDENSERS.get("cvdd").splits_across_processes
