"""`dsdistill experts`: bad input is one line with exit code 2; torchrun gives the single-process files."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dsdistill.cli import main
from dsdistill.experts import ExpertStore

FAST = ["--model-option", "width=8", "--batch-size", "16", "--threads", "1", "-q"]


def _run(*args):
    return CliRunner().invoke(main, ["experts", *args])


def _one_line_error(res, pattern):
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern in lines[0], res.output
    assert "Traceback" not in res.output


def test_cli_writes_experts(tiny_name, tmp_path):
    out = tmp_path / "e"
    res = _run("-d", tiny_name, "-n", "2", "-e", "2", "--dtype", "float16", "-o", str(out), *FAST)
    assert res.exit_code == 0, res.output
    assert "wrote 2 mtt experts" in res.output and "test accuracy" in res.output
    store = ExpertStore.open(out)
    assert store.num_experts == 2 and store.dtype == "float16" and store.model_kwargs == {"width": 8}
    manifest = json.loads((out / "experts.json").read_text())
    assert manifest["num_experts"] == 2 and len(manifest["experts"]) == 2
    assert all(e["seconds_per_epoch"] > 0 for e in manifest["experts"])


@pytest.mark.parametrize("args, pattern", [
    (["--recipe", "sam"], "unknown expert recipe 'sam'"),
    (["--model", "nope"], "nope"),
    (["--dtype", "int8"], "--dtype must be float32 or float16"),
    (["--keep-epochs", "5"], "--keep-epochs must be in [1, --epochs=2]"),
    (["--num-experts", "0"], "at least 1"),
    (["--resume", "--overwrite"], "contradict"),
])
def test_cli_bad_settings(tiny_name, tmp_path, args, pattern):
    _one_line_error(_run("-d", tiny_name, "-n", "1", "-e", "2", "-o", str(tmp_path / "e"), *FAST, *args), pattern)
    assert not (tmp_path / "e").exists()


def test_cli_missing_data(tmp_path):
    _one_line_error(_run("-d", f"arrays:{tmp_path / 'none'}", "-o", str(tmp_path / "e"), *FAST), "does not exist")
    _one_line_error(_run("-d", "mnist", "--data-root", str(tmp_path / "none"), "-o", str(tmp_path / "e"), *FAST),
                    "does not exist")
    _one_line_error(_run("-d", "nosuchset", "-o", str(tmp_path / "e"), *FAST), "nosuchset")
    assert not (tmp_path / "e").exists()  # nothing is created before the data loads


def test_cli_existing_output_needs_overwrite(tiny_name, tmp_path):
    out = tmp_path / "e"
    assert _run("-d", tiny_name, "-n", "1", "-e", "1", "-o", str(out), *FAST).exit_code == 0
    before = (out / "expert_00000.h5").read_bytes()
    _one_line_error(_run("-d", tiny_name, "-n", "1", "-e", "1", "-o", str(out), *FAST), "--overwrite")
    assert (out / "expert_00000.h5").read_bytes() == before
    (tmp_path / "file").write_text("x")
    _one_line_error(_run("-d", tiny_name, "-o", str(tmp_path / "file"), *FAST), "not a directory")
    res = _run("-d", tiny_name, "-n", "1", "-e", "2", "-o", str(out), "--overwrite", *FAST)
    assert res.exit_code == 0 and ExpertStore.open(out).epochs == 2


def test_store_errors_are_one_line(tmp_path):
    (tmp_path / "expert_00000.h5").write_bytes(b"not hdf5")
    from dsdistill.errors import SyntheticFileError

    with pytest.raises(SyntheticFileError, match="not a readable HDF5 file"):
        ExpertStore.open(tmp_path)


def test_torchrun_two_processes_equal_one_process(tiny_name, tmp_path, torchrun):
    args = ["experts", "-d", tiny_name, "-n", "3", "-e", "2", "--recipe", "ftd", *FAST]
    one = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    proc = torchrun([*args, "-o", str(tmp_path / "two")])
    files = sorted(p.name for p in (tmp_path / "one").glob("expert_*.h5"))
    assert files == sorted(p.name for p in (tmp_path / "two").glob("expert_*.h5")) and len(files) == 3
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    manifest = json.loads((tmp_path / "two" / "experts.json").read_text())
    assert manifest["processes"] == 2 and manifest["num_experts"] == 3
    assert proc.stdout.count("wrote 3 ftd experts") == 1  # only rank 0 prints
