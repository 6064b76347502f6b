"""Guards for the namespace mapping of methods/, evaluators/ and data/ (DESIGN.md 2)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_mapped_packages_import_under_dsdistill_only():
    import dsdistill.data
    import dsdistill.evaluators
    import dsdistill.methods  # noqa: F401

    for name in ("methods", "evaluators", "data"):
        assert name not in sys.modules, f"top-level '{name}' must never be importable as its own package"


def test_importing_twice_does_not_double_register():
    import importlib

    import dsdistill.methods.dm as dm

    importlib.reload(dm)  # re-running the decorators registers new class objects under the same name
    from dsdistill.registry import CONDENSERS

    assert CONDENSERS.get("dm").__module__ == "dsdistill.methods.dm"


def test_setup_shim_finds_every_subpackage(tmp_path):
    code = ("import runpy, setuptools, json\n"
            "captured = {}\n"
            "setuptools.setup = lambda **kw: captured.update(kw)\n"
            "runpy.run_path('setup.py')\n"
            "print(json.dumps(captured['packages']))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    packages = set(__import__("json").loads(out.stdout))
    expected = {"dsdistill", "dsdistill.methods", "dsdistill.evaluators", "dsdistill.data", "dsdistill.io",
                "dsdistill.models", "dsdistill.augment"}
    assert expected <= packages
    for folder, package in (("methods", "dsdistill.methods"), ("evaluators", "dsdistill.evaluators"),
                            ("data", "dsdistill.data")):
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            name = ".".join([package, *rel.parts]) if rel.parts else package
            assert name in packages, f"{name} would be missing from the wheel"


def test_wheel_contains_mapped_packages_and_embedded_data(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path), str(REPO)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {result.stderr[-300:]}")
    wheel = next(tmp_path.glob("dsdistill-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "dsdistill/methods/dm.py" in names and "dsdistill/evaluators/standard.py" in names
    assert "dsdistill/data/catalogue.py" in names
    assert "dsdistill/data/embedded/MNIST/raw/train-images-idx3-ubyte.gz" in names
    assert not any(n.startswith(("methods/", "evaluators/", "data/")) for n in names)
