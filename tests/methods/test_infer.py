"""INFER: budget split, expansion layout, compensator optimisation, the condenser's file, resume, errors."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import dsdistill.methods  # noqa: F401
from dsdistill.cli import main
from dsdistill.condenser import Checkpointer, Interrupted
from dsdistill.errors import ConfigError, SyntheticFileError
from dsdistill.io import load_synthetic, save_synthetic
from dsdistill.methods.infer import budget_split, expand, expanded_labels, infer_parts
from dsdistill.methods.infer.condenser import static_labels
from dsdistill.methods.infer.ufc import UFCSettings, optimise_ufc, valid_clamp
from dsdistill.methods.sre2l.recover import BNStatLoss, ValidRange, committee_loss
from dsdistill.models import build_model
from dsdistill.registry import CONDENSERS
from dsdistill.synthetic import Component
from dsdistill.teachers import load_committee
from dsdistill.teachers.store import save_teacher

FAST = {"iterations": 4}


def condense(real, teachers, ipc=3, seed=0, checkpoint=None, **kw):
    return CONDENSERS.get("infer").from_settings("tiny", ipc, {**FAST, "teachers": teachers, **kw}).condense(
        real, ipc, seed=seed, progress=False, checkpoint=checkpoint)


@pytest.fixture(scope="module")
def syn(tiny_real, tiny_teachers):
    return condense(tiny_real, tiny_teachers)


def test_budget_split_matches_the_reference_and_never_exceeds_the_budget():
    assert budget_split(10, 100, 4) == 9 and budget_split(50, 100, 4) == 48  # CIFAR-100: 9 + 36 per class
    assert budget_split(10, 10, 1) == 9 and budget_split(10, 10, 3) == 7 and budget_split(2, 4, 2) == 1
    for ipc in range(1, 30):
        for k in (2, 4, 10, 100):
            for m in (1, 2, 3, 4):
                try:
                    n = budget_split(ipc, k, m)
                except ConfigError:
                    assert ipc * k < m + k
                    continue
                assert n >= 1 and n * (k + m) <= ipc * k < (n + 1) * (k + m)
    with pytest.raises(ConfigError, match=r"IPC 1 is too small.*--ipc >= 2"):
        budget_split(1, 10, 3)


def test_expand_layout_and_clipping(tiny_real):
    valid = ValidRange(tiny_real)
    k, ipc_init, m = 4, 2, 3
    base = valid_clamp(torch.randn(k * ipc_init, 1, 16, 16), valid)
    ufc = torch.randn(m, ipc_init, 1, 16, 16) * 3
    out = expand(base, ufc, valid)
    assert out.shape == (k * ipc_init * (m + 1), 1, 16, 16)
    total = ipc_init * (m + 1)
    for c in range(k):
        for s in range(total):
            b = base[c * ipc_init + s % ipc_init]
            want = b if s < ipc_init else valid_clamp(b + ufc[s // ipc_init - 1, s % ipc_init], valid)[0]
            assert torch.equal(out[c * total + s], want)
    pixels = tiny_real.to_pixels(out)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5 and (ufc.abs() > 1).any()
    assert expanded_labels(k, ipc_init, m).tolist() == [c for c in range(k) for _ in range(total)]
    u = torch.zeros(1, 1, 16, 16, requires_grad=True)  # gradients pass where the sum is inside the range
    valid_clamp(base[:4] + u, valid).sum().backward()
    assert u.grad is not None and u.grad.abs().sum() > 0


def test_one_compensator_lowers_the_teachers_loss(tiny_real, tiny_teachers):
    teacher = load_committee(tiny_teachers, ["convnet_bn"], real=tiny_real)[0].model
    hook, valid = BNStatLoss(teacher), ValidRange(tiny_real)
    base = torch.stack([tiny_real.train_images[tiny_real.indices_of(c)[0]] for c in range(4)])
    targets = torch.arange(4)

    def loss_of(u):
        return float(committee_loss(valid_clamp(base + u, valid), targets, [teacher], [hook], [1.0], 1.0, 10.0)[0].detach())

    settings = UFCSettings(iterations=30, lr=0.1, r_bn=1.0, first_bn_multiplier=10.0, jitter=0, random_crop=False,
                           crop_scale_min=1.0, flip=False)
    seen = []
    u, last = optimise_ufc(base, teacher, hook, settings, torch.Generator().manual_seed(0), valid,
                           on_step=lambda it, u_, opt, loss: seen.append(it))
    assert u.shape == (1, 1, 16, 16) and seen == list(range(1, 31)) and last is not None
    assert loss_of(u) < 0.9 * loss_of(torch.zeros_like(u))
    hook.remove()


def test_condensed_file_layout_labels_and_provenance(syn, tiny_real, tiny_teachers, tmp_path):
    # 2 BN teachers, 4 classes, IPC 3 -> ipc_init = floor(12 / 6) = 2
    assert syn.ipc == 3 and syn.protocol == "infer" and syn.images.shape == (8, 1, 16, 16)
    assert syn.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for img, c in zip(syn.images, syn.labels.tolist()):  # base images are untouched real images of their class
        pool = tiny_real.train_images[tiny_real.indices_of(c)]
        assert any(torch.equal(img, p) for p in pool)
    ufc, lab = syn.components["ufc"], syn.components["static_labels"]
    assert ufc.part == "images" and ufc.values.shape == (2, 2, 1, 16, 16) and ufc.values.dtype == torch.float32
    assert lab.part == "labels" and lab.values.shape == (4 * 2 * 3, 4) and lab.values.dtype == torch.float16
    assert float(ufc.values.abs().max()) > 0
    committee = load_committee(tiny_teachers, real=tiny_real)
    instances = expand(syn.images, ufc.values, ValidRange(tiny_real))
    want = sum(t.model(instances) for t in committee) / 2  # mean of the teachers' logits, eval mode
    assert torch.allclose(lab.values.float(), want, atol=2e-2, rtol=1e-2)
    assert torch.equal(static_labels(instances, [t.model for t in committee], 5).half(), lab.values)
    prov = syn.provenance
    assert prov["ipc_init"] == 2 and prov["counted_images"] == 12 <= 3 * 4 and prov["effective_instances"] == 24
    assert [t["name"] for t in prov["teachers"]] == ["convnet_bn", "shufflenetv2"]
    assert all(len(t["sha256"]) == 64 for t in prov["teachers"]) and prov["teachers_dir"]
    st = syn.storage_bytes()
    assert st["component_images"] == 2 * 2 * 256 * 4 and st["component_labels"] == 24 * 4 * 2
    save_synthetic(syn, tmp_path / "s.h5")
    back = load_synthetic(tmp_path / "s.h5")
    parts = infer_parts(back)
    assert back.ipc == 3 and parts.ipc_init == 2 and parts.num_archs == 2 and parts.effective_instances == 24
    assert torch.equal(parts.ufc, ufc.values) and torch.equal(parts.labels, lab.values)


def test_group_m_depends_only_on_teacher_m(syn, tiny_real, tiny_teachers):
    alone = condense(tiny_real, tiny_teachers, committee="convnet_bn")  # M = 1, IPC 3: ipc_init = floor(12/5) = 2
    assert alone.components["ufc"].values.shape[0] == 1 and torch.equal(alone.images, syn.images)
    assert torch.equal(alone.components["ufc"].values[0], syn.components["ufc"].values[0])
    assert not torch.equal(syn.components["ufc"].values[0], syn.components["ufc"].values[1])


def test_resume_is_exact(syn, tiny_real, tiny_teachers, tmp_path, stop_at):
    path = tmp_path / "c.ckpt"
    with pytest.raises(Interrupted):
        condense(tiny_real, tiny_teachers, checkpoint=stop_at(path, stop_at=6, every=3))  # inside the 2nd UFC
    state = torch.load(path, weights_only=True)
    assert state["done_items"] == [[0, 0]] and state["current"]["item"] == [0, 1]
    assert state["current"]["iteration"] == 2
    resumed = condense(tiny_real, tiny_teachers, checkpoint=Checkpointer(path, every=3, resume=True))
    assert torch.equal(resumed.components["ufc"].values, syn.components["ufc"].values)
    assert torch.equal(resumed.components["static_labels"].values, syn.components["static_labels"].values)
    state["done_ufcs"][0] = torch.zeros_like(state["done_ufcs"][0])  # a finished UFC is taken from the checkpoint
    torch.save(state, path)
    tampered = condense(tiny_real, tiny_teachers, checkpoint=Checkpointer(path, every=0, resume=True))
    assert not tampered.components["ufc"].values[0, 0].any()
    assert torch.equal(tampered.components["ufc"].values[0, 1], syn.components["ufc"].values[0, 1])


def test_bad_input_is_one_clear_error(tiny_real, tiny_teachers, tmp_path):
    with pytest.raises(ConfigError, match="IPC 1 is too small"):
        condense(tiny_real, tiny_teachers, ipc=1)
    with pytest.raises(ConfigError, match="needs a teachers directory"):
        condense(tiny_real, "")
    with pytest.raises(ConfigError, match="does not exist"):
        condense(tiny_real, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="label_dtype"):
        condense(tiny_real, tiny_teachers, label_dtype="int8")
    no_bn = tmp_path / "mlp_teachers"
    save_teacher(no_bn, "mlp", build_model("mlp", 4, tiny_real.image_shape, seed=0),
                 {"model": "mlp", "dataset": tiny_real.name, "num_classes": 4, "image_shape": list(tiny_real.image_shape),
                  "space": tiny_real.space, "dataset_fingerprint": tiny_real.fingerprint, "val_accuracy": 0.5})
    with pytest.raises(ConfigError, match="no teacher .* has BatchNorm"):
        condense(tiny_real, str(no_bn))
    with pytest.raises(ConfigError, match="mlp have no BatchNorm"):
        condense(tiny_real, str(no_bn), committee="mlp")


def test_corrupt_components_are_refused(syn):
    import dataclasses

    def with_component(name, values):
        comps = dict(syn.components)
        comps[name] = Component(values, comps[name].part, comps[name].meta)
        return dataclasses.replace(syn, components=comps)

    with pytest.raises(SyntheticFileError, match="'static_labels' has shape"):
        infer_parts(with_component("static_labels", syn.components["static_labels"].values[:-1]))
    with pytest.raises(SyntheticFileError, match="'ufc' has shape"):
        infer_parts(with_component("ufc", syn.components["ufc"].values[..., :8]))
    bad = syn.components["ufc"].values.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(SyntheticFileError, match="NaN"):
        infer_parts(with_component("ufc", bad))
    with pytest.raises(SyntheticFileError, match="no 'ufc' component"):
        infer_parts(dataclasses.replace(syn, components={}))


def test_cli_condense(tiny_name, tiny_teachers, tmp_path):
    out = tmp_path / "i.h5"
    res = CliRunner().invoke(main, ["condense", "-m", "infer", "-d", tiny_name, "--ipc", "2", "-p",
                                    f"teachers={tiny_teachers}", "-p", "iterations=2", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert load_synthetic(out).components["ufc"].values.shape == (2, 1, 1, 16, 16)
    res = CliRunner().invoke(main, ["condense", "-m", "infer", "-d", tiny_name, "--ipc", "1", "-p",
                                    f"teachers={tiny_teachers}", "-o", str(tmp_path / "j.h5"), "-q"])
    assert res.exit_code == 2 and "too small" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "j.h5").exists()
