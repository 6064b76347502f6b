"""The evaluation notebooks run top to bottom, headless, under the small budget."""

import os
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, workdir: Path, monkeypatch) -> tuple[nbformat.NotebookNode, float]:
    """Run a notebook in ``workdir`` with the venv's python3 kernel; return it and the seconds taken."""
    monkeypatch.setenv("DSDISTILL_NB_BUDGET", "small")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the kernel must not grab every core
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    started = time.time()
    client.execute()
    return nb, time.time() - started


def outputs(nb, output_type=None):
    for cell in nb.cells:
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                if output_type is None or out.output_type == output_type:
                    yield cell, out


def text_of(nb) -> str:
    parts = []
    for _, out in outputs(nb):
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out and "text/plain" in out.data:
            parts.append(out.data["text/plain"])
    return "\n".join(parts)


def png_count(nb) -> int:
    return sum("image/png" in out.get("data", {}) for _, out in outputs(nb))


def assert_no_errors(nb):
    errors = [out for _, out in outputs(nb, "error")]
    assert not errors, errors


def test_quickstart(tmp_path, monkeypatch):
    nb, seconds = execute("01_quickstart.ipynb", tmp_path, monkeypatch)
    assert_no_errors(nb)
    assert png_count(nb) >= 3  # DM grid, random grid, bar chart
    text = text_of(nb)
    assert "random real subset" in text and "DM gains" in text
    assert (tmp_path / "outputs" / "mnist_dm.h5").is_file()
    assert (tmp_path / "outputs" / "mnist_dm_report.json").is_file()
    print(f"01_quickstart: {seconds:.1f} s", file=sys.stderr)


def test_compare_methods(tmp_path, monkeypatch):
    nb, seconds = execute("02_compare_methods.ipynb", tmp_path, monkeypatch)
    assert_no_errors(nb)
    assert png_count(nb) >= 2  # accuracy vs IPC, accuracy vs bytes
    text = text_of(nb)
    for method in ("random", "herding", "k-center", "dm"):
        assert f"| {method} | convnetw32 |" in text
    assert "| dm | lenet |" in text and "| dm | mlp |" in text  # cross-architecture table
    assert (tmp_path / "outputs" / "leaderboard.csv").is_file()
    print(f"02_compare_methods: {seconds:.1f} s", file=sys.stderr)


def test_graphs_runs_or_skips_cleanly(tmp_path, monkeypatch):
    nb, seconds = execute("03_graphs.ipynb", tmp_path, monkeypatch)
    assert_no_errors(nb)
    text = text_of(nb)
    first = "".join(out.get("text", "") for out in nb.cells[1].get("outputs", [])
                    if out.output_type == "stream" and out.name == "stdout")
    if first.startswith("skipped: "):
        assert png_count(nb) == 0 and "budget" not in text  # every later cell did nothing
    else:
        assert "running Mirage on MUTAG" in first
        assert png_count(nb) >= 1 and (tmp_path / "outputs" / "mutag_mirage_report.json").is_file()
    print(f"03_graphs: {seconds:.1f} s", file=sys.stderr)
