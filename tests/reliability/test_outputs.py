"""Every file the CLI writes refuses to replace an existing one without ``--overwrite`` (leaving it
byte-identical) and is written atomically: a failure at the last moment (simulated inside the
atomic writer's fsync) leaves neither a file under the final name nor a temporary file."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import dsdistill.io.atomic as atomic
import dsdistill.io.interop as interop
from dsdistill.cli import main


@pytest.fixture(scope="module")
def made(tiny_name, tmp_path_factory):
    d = tmp_path_factory.mktemp("outputs")
    runner = CliRunner()
    assert runner.invoke(main, ["condense", "-m", "random", "-d", tiny_name, "--ipc", "2", "-o", str(d / "set.h5"),
                                "-q"]).exit_code == 0
    result = runner.invoke(main, ["evaluate", str(d / "set.h5"), "--epochs", "1", "--runs", "1", "--json",
                                  str(d / "report.json"), "-q", "--threads", "1"])
    assert result.exit_code == 0, result.output
    return d


def commands(d, tiny_name, out):
    """Each writing command with ``out`` as its output."""
    return {
        "condense": ["condense", "-m", "random", "-d", tiny_name, "--ipc", "2", "-o", str(out), "-q"],
        "evaluate --json": ["evaluate", str(d / "set.h5"), "--epochs", "1", "--runs", "1", "--no-baseline",
                            "--json", str(out), "-q", "--threads", "1"],
        "visualize": ["visualize", str(d / "set.h5"), "-o", str(out)],
        "export": ["export", str(d / "set.h5"), "--to", "pt", "-o", str(out)],
        "compare": ["compare", str(d / "report.json"), "-o", str(out)],
    }


NAMES = {"condense": "x.h5", "evaluate --json": "x.json", "visualize": "x.png", "export": "xdir", "compare": "x.md"}


@pytest.mark.parametrize("command", sorted(NAMES))
def test_refuses_to_overwrite_and_overwrites_with_flag(made, tiny_name, tmp_path, command):
    out = tmp_path / NAMES[command]
    if command == "export":
        out.mkdir()
        (out / "keep.txt").write_text("old")
    else:
        out.write_bytes(b"old contents")
    args = commands(made, tiny_name, out)[command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "exists; pass --overwrite" in result.output and len(result.output.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "old" if command == "export" else out.read_bytes() == b"old contents"
    result = CliRunner().invoke(main, args + ["--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists() if command == "export" else out.read_bytes() != b"old contents"


@pytest.mark.parametrize("command", sorted(NAMES))
def test_failure_while_finishing_a_write_leaves_nothing(made, tiny_name, tmp_path, monkeypatch, command):
    def broken_fsync(path):
        raise OSError("simulated disk failure")

    monkeypatch.setattr(atomic, "_fsync_file", broken_fsync)
    monkeypatch.setattr(interop, "_fsync", broken_fsync)
    out = tmp_path / NAMES[command]
    result = CliRunner().invoke(main, commands(made, tiny_name, out)[command])
    assert result.exit_code != 0
    assert list(tmp_path.iterdir()) == [], [p.name for p in tmp_path.iterdir()]
