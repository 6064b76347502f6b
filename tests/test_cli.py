"""The CLI end to end on tiny data, and its handling of bad input (one line, exit 2, no file)."""

import json
import subprocess
import sys

import h5py
import pytest
from click.testing import CliRunner

from dsdistill.cli import main


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def assert_clean_error(code, output, phrase):
    assert code == 2, output
    lines = [l for l in output.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert phrase in lines[0], output
    assert "Traceback" not in output


@pytest.fixture(scope="module")
def tiny_h5(tiny_name, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "dm.h5"
    code, output = run("condense", "--method", "dm", "--dataset", tiny_name, "--ipc", 2, "--iterations", 3,
                       "-p", "batch_real=8", "-o", out, "--quiet")
    assert code == 0, output
    assert "wrote" in output and out.exists() and not out.with_name("dm.h5.ckpt").exists()
    return out


def test_info_describes_the_file(tiny_h5):
    code, output = run("info", tiny_h5)
    assert code == 0 and "dm" in output and "IPC" in output and "normalized" in output


def test_evaluate_prints_table_and_writes_json(tiny_h5, tmp_path):
    report = tmp_path / "r.json"
    code, output = run("evaluate", tiny_h5, "--epochs", 4, "--runs", 2, "--model", "convnet,mlp", "--json",
                       report, "--quiet")
    assert code == 0, output
    assert "random real subset" in output and "| mlp |" in output
    data = json.loads(report.read_text())
    assert data["protocol"]["epochs"] == 4 and len(data["runs"]) == 8 and "summary" in data


def test_list():
    code, output = run("list")
    methods = next(line for line in output.splitlines() if line.startswith("methods: "))
    protocols = next(line for line in output.splitlines() if line.startswith("protocols: "))
    assert code == 0 and "dm" in methods.split(": ")[1].split(", ") and "dc" in protocols.split(": ")[1].split(", ")


def test_config_fills_defaults_and_flags_win(tiny_name, tmp_path):
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(f"method: random\ndataset: '{tiny_name}'\nipc: 3\nquiet: true\n")
    code, output = run("condense", "--config", cfg, "--ipc", 2, "-o", tmp_path / "r.h5")
    assert code == 0, output
    from dsdistill.io import read_header

    header = read_header(tmp_path / "r.h5")
    assert header["method"] == "random" and header["ipc"] == 2


def test_config_params_reach_the_method(tiny_name, tmp_path):
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(f"method: dm\ndataset: '{tiny_name}'\nipc: 1\niterations: 2\nparam: {{batch_real: 4, lr_img: 0.5}}\n")
    code, output = run("condense", "--config", cfg, "-o", tmp_path / "d.h5", "-q")
    assert code == 0, output
    from dsdistill.io import load_synthetic

    assert load_synthetic(tmp_path / "d.h5").provenance["config"]["lr_img"] == 0.5


@pytest.mark.parametrize("args,phrase", [
    (["--method", "nope"], "unknown method 'nope'; choose one of: "),
    (["--method", "dm", "--dataset", "imagenet-99"], "unknown dataset 'imagenet99'"),
    (["--method", "dm", "--ipc", "0"], "--ipc must be a positive integer"),
    (["--method", "random", "--ipc", "500", "--dataset", "TINY"], "larger than the smallest class"),
    (["--method", "dm", "--dataset", "cifar10", "--data-root", "/nonexistent/dir"], "does not exist"),
    (["--method", "dm", "-p", "lr_image=3"], "unknown setting(s) lr_image"),
    (["--method", "dm", "-p", "lr_img=fast"], "must be a number"),
    (["--method", "dm", "-p", "lr_img=nan"], "must be a number, got 'nan'"),
])
def test_condense_bad_input(args, phrase, tmp_path, tiny_name):
    out = tmp_path / "out.h5"
    args = [tiny_name if a == "TINY" else a for a in args]
    code, output = run("condense", *args, "-o", out, "-q")
    assert_clean_error(code, output, phrase)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_exponent_numbers_are_numbers():
    """YAML 1.1 reads ``1e-6`` (no dot) as a string; settings still take it as the number."""
    from dsdistill.cli import parse_params
    from dsdistill.condenser import resolve_config
    from dsdistill.registry import CONDENSERS

    params = parse_params(("lr_img=1e-6", "iterations=2"))
    assert params["lr_img"] == "1e-6"
    config = resolve_config(CONDENSERS.get("dm").Config, params)
    assert config.lr_img == 1e-6 and config.iterations == 2


def test_unknown_config_key_lists_valid_ones(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("methd: dm\n")
    code, output = run("condense", "--config", cfg, "-o", tmp_path / "o.h5")
    assert_clean_error(code, output, "unknown key(s) methd")
    assert "valid keys:" in output


def test_refuses_to_overwrite(tiny_h5, tiny_name):
    code, output = run("condense", "--method", "random", "--dataset", tiny_name, "--ipc", 1, "-o", tiny_h5)
    assert_clean_error(code, output, "exists; pass --overwrite")


def test_protocol_option_is_refused_where_it_does_not_apply(tiny_h5):
    code, output = run("evaluate", tiny_h5, "--protocol-option", "alpha_dbr=1", "--quiet")
    assert_clean_error(code, output, "--protocol-option applies to the infer, dbr and hello protocols, not 'dc'")


def test_unknown_model_for_evaluate(tiny_h5):
    code, output = run("evaluate", tiny_h5, "--model", "convnet,transformer9")
    assert_clean_error(code, output, "unknown model 'transformer9'")


@pytest.mark.parametrize("kind", ["truncated", "foreign", "future", "missing", "text"])
def test_bad_files(kind, tiny_h5, tmp_path):
    path = tmp_path / f"{kind}.h5"
    if kind == "truncated":
        data = tiny_h5.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "foreign":
        with h5py.File(path, "w") as f:
            f["x"] = [1, 2, 3]
    elif kind == "future":
        path.write_bytes(tiny_h5.read_bytes())
        with h5py.File(path, "r+") as f:
            f.attrs["format_version"] = 7
    elif kind == "text":
        path.write_text("hello")
    phrases = {"truncated": "not a readable HDF5 file", "foreign": "not a dsdistill file", "future": "upgrade",
               "missing": "does not exist", "text": "not a readable HDF5 file"}
    for command in (["info"], ["evaluate", "--epochs", "1", "--runs", "1"]):
        code, output = run(*command[:1], path, *command[1:])
        assert_clean_error(code, output, phrases[kind])


def test_real_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dsdistill", "condense", "--method", "nope", "-o",
                           str(tmp_path / "x.h5")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: unknown method")
    assert "Traceback" not in proc.stderr and not (tmp_path / "x.h5").exists()
