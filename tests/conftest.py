"""Shared fixtures: a tiny learnable dataset in the array layout, and the shared data root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dsdistill.condenser import Checkpointer
from dsdistill.data.paths import default_data_root


def write_tiny_arrays(directory: Path, num_classes: int = 4, per_class: int = 24, test_per_class: int = 10,
                      size: int = 16, channels: int = 1, seed: int = 0) -> Path:
    """Write a class-structured uint8 dataset (each class a bright square at its own place)."""
    rng = np.random.default_rng(seed)

    def make(n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(num_classes), n_per_class)
        images = rng.integers(0, 60, size=(len(labels), size, size, channels)).astype(np.uint8)
        q = size // 2
        for i, c in enumerate(labels):
            r, col = divmod(int(c) % 4, 2)
            images[i, r * q: r * q + q, col * q: col * q + q, :] += np.uint8(150 + 10 * (c // 4))
        return images, labels.astype(np.uint8)

    directory.mkdir(parents=True, exist_ok=True)
    train_x, train_y = make(per_class)
    test_x, test_y = make(test_per_class)
    np.save(directory / "train_images.npy", train_x)
    np.save(directory / "train_labels.npy", train_y)
    np.save(directory / "test_images.npy", test_x)
    np.save(directory / "test_labels.npy", test_y)
    (directory / "classes.txt").write_text("\n".join(f"class{c}" for c in range(num_classes)))
    return directory


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Directory of a 4-class 1x16x16 dataset (24 train / 10 test images per class)."""
    return write_tiny_arrays(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_name(tiny_dir) -> str:
    """Catalogue name of the tiny dataset."""
    return f"arrays:{tiny_dir}"


@pytest.fixture(scope="session")
def tiny_real(tiny_name):
    from dsdistill.data import load_real

    return load_real(tiny_name, val_fraction=0.25)


@pytest.fixture(scope="session")
def shared_root() -> Path:
    """The shared data root (../shared/data); tests needing it skip when it is absent."""
    root = default_data_root()
    if not (root / "MANIFEST.md").exists() and not (root / "CIFAR10-npy-xz").exists():
        pytest.skip(f"shared data root not found at {root}")
    return root


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST (shared root or the shipped copy)."""
    from dsdistill.data import load_real

    return load_real("mnist")


def mutate_bytes(raw: bytes, edits: list[tuple[str, float, int]], cut: float | None) -> bytes:
    """A fuzzed copy of a file: bit flips / byte overwrites at relative positions, then truncation.

    Args:
        raw: The valid file's bytes.
        edits: ``(op, where, value)`` with op ``"flip"`` (flip bit ``value % 8``) or ``"set"``, and
            ``where`` in [0, 1) a relative offset.
        cut: Keep this fraction of the bytes (None: no truncation). With no edit and no cut the last
            byte is dropped, so every example mutates something.
    """
    data = bytearray(raw)
    for op, where, value in edits:
        i = int(where * len(data))
        data[i] = data[i] ^ (1 << (value % 8)) if op == "flip" else value
    if cut is not None:
        data = data[: int(cut * len(data))]
    if not edits and cut is None:
        data = data[: len(data) - 1]
    return bytes(data)


@pytest.fixture(scope="session")
def fuzz_bytes():
    """:func:`mutate_bytes` (importlib mode cannot import a conftest by name)."""
    return mutate_bytes


def run_torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node NPROC -m dsdistill ARGS`` on CPU (gloo, one thread
    per process); skips the test when no rendezvous port is free, fails on any other error."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), "-m", "dsdistill", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0 and "Address already in use" in proc.stderr:
        pytest.skip("no free port for the rendezvous")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="session")
def torchrun():
    """:func:`run_torchrun` (importlib mode cannot import a conftest by name)."""
    return run_torchrun


class StopAt(Checkpointer):
    """A checkpointer that requests a stop (as SIGINT would) when iteration ``stop_at`` is reached."""

    def __init__(self, path, stop_at: int, **kwargs) -> None:
        super().__init__(path, **kwargs)
        self.stop_at = stop_at

    def due(self, iteration: int) -> bool:
        if iteration == self.stop_at:
            self.stop_requested = True
        return super().due(iteration)


@pytest.fixture(scope="session")
def stop_at():
    """:class:`StopAt` (importlib mode cannot import a conftest by name)."""
    return StopAt


class StopAfterSaves(Checkpointer):
    """A checkpointer (every 2 iterations, resuming) that requests a stop, as SIGTERM would, after ``n`` saves."""

    def __init__(self, path, n: int) -> None:
        super().__init__(path, every=2, resume=True)
        self.n = n

    def save(self, state) -> None:
        super().save(state)
        self.n -= 1
        if self.n <= 0:
            self.stop_requested = True


@pytest.fixture(scope="session")
def stop_after_saves():
    """:class:`StopAfterSaves` (importlib mode cannot import a conftest by name)."""
    return StopAfterSaves


TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
             "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 8, "heads": 2, "layers": 1}}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> dict:
    """A tiny randomly initialised open_clip ModifiedResNet CLIP (32 px, 16-d embedding), registered with
    open_clip as ``dsd-test-tiny-rn`` and saved as a state dict: ``{"name", "config", "weights", "cfg"}``
    (``config``: the JSON path; skips without open_clip)."""
    import json

    import torch

    pytest.importorskip("open_clip")
    from dsdistill.methods.hello.clip_loader import build_model, import_open_clip

    open_clip = import_open_clip()
    root = tmp_path_factory.mktemp("clip")
    (root / "dsd-test-tiny-rn.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(root / "dsd-test-tiny-rn.json")
    with torch.random.fork_rng():  # open_clip's initialisers draw from the global RNG: restore it afterwards
        torch.manual_seed(0)
        model = build_model("dsd-test-tiny-rn", TINY_CLIP)
    torch.save(model.state_dict(), root / "tiny_rn.pt")
    return {"name": "dsd-test-tiny-rn", "config": str(root / "dsd-test-tiny-rn.json"),
            "weights": str(root / "tiny_rn.pt"), "cfg": TINY_CLIP}
