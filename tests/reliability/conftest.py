"""Helpers of the kill/resume tests: run ``python -m dsdistill`` and kill it at observed checkpoints.

Kill points are chosen by counting checkpoint writes seen by polling the checkpoint file (every
save is an atomic rename, so each one shows up as a new inode or mtime), never by fixed sleeps, so
the tests behave the same on an idle and on a heavily loaded machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

START_TIMEOUT = 600.0  # seconds until a checkpoint write (imports crawl on an overloaded machine)


def write_noisy_arrays(directory: Path, num_classes: int = 4, per_class: int = 24, test_per_class: int = 100,
                       size: int = 16, seed: int = 0) -> Path:
    """An arrays:DIR dataset whose classes are only weakly separable, so test accuracies (on 400
    images, steps of 0.25%) are sensitive to every weight of a student and differ between seeds."""
    rng = np.random.default_rng(seed)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(num_classes), n)
        images = rng.integers(0, 200, size=(len(labels), size, size, 1)).astype(np.uint8)
        q = size // 2
        for i, c in enumerate(labels):
            r, col = divmod(int(c) % 4, 2)
            images[i, r * q: r * q + q, col * q: col * q + q, :] += np.uint8(25)
        return images, labels.astype(np.uint8)

    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", per_class), ("test", test_per_class)):
        x, y = make(n)
        np.save(directory / f"{split}_images.npy", x)
        np.save(directory / f"{split}_labels.npy", y)
    return directory


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """``python -m dsdistill ARGS`` with one thread, output captured."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "dsdistill", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def wait_for_saves(proc: subprocess.Popen, ckpt: Path, count: int, timeout: float = START_TIMEOUT) -> int:
    """Block until ``proc`` has replaced ``ckpt`` ``count`` times; return the number seen.

    Raises:
        AssertionError: ``proc`` exited first or the timeout passed (with its stderr).
    """
    seen, last = 0, _stamp(ckpt)
    deadline = time.monotonic() + timeout
    while seen < count:
        stamp = _stamp(ckpt)
        if stamp is not None and stamp != last:
            seen, last = seen + 1, stamp
            continue
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended (rc {proc.returncode}) after {seen} of {count} checkpoint "
                                 f"writes; make the run longer\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {count} checkpoint writes within {timeout} s")
        time.sleep(0.002)
    return seen


def stop(proc: subprocess.Popen, sig: int, timeout: float = 120.0) -> tuple[int, str, str]:
    """Send ``sig`` and wait; return (exit code, stdout, stderr)."""
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def kill9(proc: subprocess.Popen) -> None:
    rc, _, _ = stop(proc, signal.SIGKILL)
    assert rc == -signal.SIGKILL, f"expected death by SIGKILL, got rc {rc}"


def leftovers(directory: Path, final: str) -> list[str]:
    """Files in ``directory`` whose name starts with ``final`` or its temporary prefix."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith((final, f".{final}")))


def report_numbers(path) -> dict:
    """An evaluation report without wall-clock seconds (what must match after a resume)."""
    report = json.loads(Path(path).read_text())
    for row in report["runs"]:
        row.pop("seconds")
    return report


def progress(ckpt) -> tuple[int, int]:
    """(finished students, epochs of the one in progress) in an evaluation checkpoint."""
    import torch

    state = torch.load(ckpt, weights_only=True)
    return len(state["done"]), 0 if state["current"] is None else int(state["current"]["train"]["epoch"])


@pytest.fixture(scope="session")
def procs():
    """This module's helpers (importlib mode cannot import a conftest by name)."""
    return sys.modules[__name__]


@pytest.fixture(scope="session")
def noisy_name(tmp_path_factory) -> str:
    """Catalogue name of the weakly separable dataset."""
    return f"arrays:{write_noisy_arrays(tmp_path_factory.mktemp('noisy'))}"
