"""Method-specific components in the HDF5 file, storage accounting by part, and protocol dispatch."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from dsdistill.errors import SyntheticFileError
from dsdistill.evaluators.report import EvalReport
from dsdistill.evaluators.storage import REPLAY_PARAM_BYTES, per_epoch_label_bytes, storage_breakdown, storage_lines
from dsdistill.io import describe, load_synthetic, save_synthetic
from dsdistill.synthetic import Component, SyntheticSet

K, IPC, SHAPE = 3, 2, (1, 4, 4)


def make_set(**components) -> SyntheticSet:
    g = torch.Generator().manual_seed(0)
    return SyntheticSet(images=torch.randn(K * IPC, *SHAPE, generator=g), labels=torch.arange(K).repeat_interleave(IPC),
                        num_classes=K, method="dm", dataset="toy", ipc=IPC, components=components)


def test_components_round_trip_with_dtypes_meta_and_storage(tmp_path):
    comps = {"ufc": Component(torch.randn(2, 1, *SHAPE), "images", {"per": "architecture", "n": 2}),
             "dbr": Component(torch.rand(4, K * IPC, 2).half(), "labels"),
             "hello.lora.A": Component(torch.randn(3, 5, dtype=torch.float64), "label_generator"),
             "order": Component(torch.arange(6, dtype=torch.int16), "labels")}
    syn = make_set(**comps)
    save_synthetic(syn, tmp_path / "c.h5")
    back = load_synthetic(tmp_path / "c.h5")
    assert set(back.components) == set(comps)
    for name, comp in comps.items():
        got = back.components[name]
        assert got.part == comp.part and got.meta == comp.meta
        assert got.values.dtype == comp.values.dtype and torch.equal(got.values, comp.values)
    st = back.storage_bytes()
    assert st["component_images"] == 2 * 16 * 4
    assert st["component_labels"] == 4 * 6 * 2 * 2 + 6 * 2
    assert st["label_generator"] == 15 * 8
    assert st["total"] == syn.storage_bytes()["total"] == 6 * 16 * 4 + 6 * 8 + 128 + 108 + 120
    with h5py.File(tmp_path / "c.h5") as f:
        assert int(f["storage"].attrs["label_generator"]) == 120
        assert int(f["storage"].attrs["total"]) == st["total"]
    text = describe(tmp_path / "c.h5")
    assert "component    ufc: images, shape (2, 1, 1, 4, 4)" in text and "label generator 120 B" in text


@pytest.mark.parametrize("name, part", [("bad/name", "labels"), ("", "labels"), ("ok", "weights")])
def test_invalid_components_are_refused_before_writing(name, part):
    with pytest.raises(ValueError):
        make_set(**{name: Component(torch.zeros(2), part)}) if part in ("images", "labels") else \
            Component(torch.zeros(2), part)


def test_corrupt_or_foreign_component_is_one_clear_error(tmp_path):
    path = tmp_path / "c.h5"
    save_synthetic(make_set(dbr=Component(torch.rand(6, 2), "labels")), path)
    with h5py.File(path, "r+") as f:  # a bit flip in the values: caught by the content checksum
        data = f["components/dbr"][()]
        data[0, 0] += 1.0
        f["components/dbr"][...] = data
    with pytest.raises(SyntheticFileError, match="checksum|corrupt"):
        load_synthetic(path)
    for mutate, why in ((lambda f: f["components/dbr"].attrs.__setitem__("part", np.bytes_(b"weights")), "part"),
                        (lambda f: f["components"].create_dataset("x y", data=np.zeros(2)), "component name"),
                        (lambda f: f["components"].create_dataset("s", data=np.bytes_(b"text")), "/components/s")):
        save_synthetic(make_set(dbr=Component(torch.rand(6, 2), "labels")), path)
        with h5py.File(path, "r+") as f:
            mutate(f)
        with pytest.raises(SyntheticFileError, match=why):
            load_synthetic(path)


class _Real:
    train_images = torch.zeros(60, *SHAPE, dtype=torch.uint8)


def test_storage_breakdown_counts_every_part_and_models_at_training():
    syn = make_set(ufc=Component(torch.zeros(1, 1, *SHAPE), "images"), lab=Component(torch.zeros(9, K).half(), "labels"),
                   head=Component(torch.zeros(K, 7), "label_generator"))
    st = storage_breakdown(syn, _Real(), training_models={"CLIP backbone (frozen)": 1000}, effective_instances=9,
                           epochs=5)
    assert st["parts"] == {"images": 6 * 64 + 64, "labels": 6 * 8 + 9 * K * 2, "label_generator": K * 7 * 4}
    assert st["counted_images"] == 7 and st["training_instances"] == 9
    assert st["models_at_training"] == 1000 and st["total_with_models"] == st["total"] + 1000
    assert st["ratio_to_full"] == pytest.approx(st["total"] / (60 * 16))
    assert st["per_epoch_label_bytes"] == per_epoch_label_bytes(IPC * K, 5, K) == 6 * 5 * (2 * K + REPLAY_PARAM_BYTES)
    text = "\n".join(storage_lines(st))
    assert "CLIP backbone (frozen) 1,000 B" in text and "effective training instances: 9" in text
    assert "per-epoch relabeling" in text
    report = EvalReport("f.h5", "x", "toy", IPC, K, {"name": "p", "epochs": 5}, storage=st)
    assert "models needed at training time" in report.table()


def test_evaluate_dispatches_to_a_protocol_with_its_own_loop(tmp_path, tiny_name, monkeypatch):
    from dataclasses import dataclass

    from dsdistill import api
    from dsdistill.registry import EVALUATORS

    seen = {}

    @dataclass(frozen=True)
    class Probe:
        name: str = "probe_protocol"
        description: str = "test"

        def evaluate_set(self, syn, real, **kw):
            seen.update(kw)
            return EvalReport(kw["file"], syn.method, syn.dataset, syn.ipc, syn.num_classes, {"name": self.name},
                              storage=storage_breakdown(syn, real))

    monkeypatch.setitem(EVALUATORS._items, "probe_protocol", Probe())
    syn = api.condense("random", tiny_name, 1, progress=False)
    syn.protocol = "probe_protocol"
    save_synthetic(syn, tmp_path / "s.h5")
    report = api.evaluate_file(tmp_path / "s.h5", progress=False, clip_weights="w.pt", checkpoint_every=5)
    assert report.protocol == {"name": "probe_protocol"}
    assert seen["options"]["clip_weights"] == "w.pt" and seen["runs"] == 3 and seen["checkpoint"] is not None


def test_evaluation_checkpoint_signature_covers_components(tiny_real):
    from dsdistill.evaluators.checkpoint import signature

    a = make_set(dbr=Component(torch.zeros(2, K * IPC, 2).half(), "labels"))
    b = make_set(dbr=Component(torch.ones(2, K * IPC, 2).half(), "labels"))
    jobs = [("convnet", 0, "synthetic")]
    assert signature(a, tiny_real, jobs, 0, {}) != signature(b, tiny_real, jobs, 0, {})
    assert signature(a, tiny_real, jobs, 0, {}) == signature(make_set(dbr=Component(torch.zeros(2, K * IPC, 2).half(),
                                                                                    "labels")), tiny_real, jobs, 0, {})
