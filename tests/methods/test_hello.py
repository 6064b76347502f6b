"""HeLlO: offline CLIP loading, LoRA adapters, the text-initialised projector and the condenser (tiny, CPU)."""

from __future__ import annotations

import json
import socket

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("open_clip")

from dsdistill.errors import ConfigError  # noqa: E402
from dsdistill.methods.hello.clip_loader import PixelMap, build_model, load_backbone  # noqa: E402
from dsdistill.methods.hello.images import unstitch  # noqa: E402
from dsdistill.methods.hello.lora import add_lora  # noqa: E402
from dsdistill.methods.hello.projector import Projector, text_head, train_projector  # noqa: E402


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection or DNS lookup fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def make_projector(tiny_clip, num_classes=4, encoder_rank=4, head_rank=2, info=None):
    backbone = load_backbone(tiny_clip["name"], tiny_clip["weights"])
    info = info or {"space": "normalized", "mean": (0.5,), "std": (0.25,), "zca": None}
    head = text_head(backbone, [f"class{c}" for c in range(num_classes)])
    proj = Projector(backbone, PixelMap(info, backbone.image_size), head, encoder_rank=encoder_rank,
                     head_rank=head_rank, generator=torch.Generator().manual_seed(0))
    return backbone, proj


def test_loads_offline_by_registered_name_and_by_config_file(tiny_clip, no_network):
    saved = torch.load(tiny_clip["weights"], weights_only=True)
    for name in (tiny_clip["name"], tiny_clip["config"]):
        backbone = load_backbone(name, tiny_clip["weights"])
        state = backbone.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in saved.items())
        assert backbone.image_size == (32, 32) and backbone.embed_dim == 16
        assert not any(p.requires_grad for p in backbone.model.parameters()) and not backbone.model.training
    assert len(backbone.sha256) == 64 and backbone.visual_nbytes < backbone.nbytes


def test_loads_safetensors_and_wrapped_checkpoints(tiny_clip, tmp_path):
    from safetensors.torch import save_file

    state = torch.load(tiny_clip["weights"], weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.pt")
    for path in (tmp_path / "w.safetensors", tmp_path / "ckpt.pt"):
        got = load_backbone(tiny_clip["name"], path).model.state_dict()
        assert all(torch.equal(got[k], v) for k, v in state.items())


def test_missing_weights_file_is_one_clear_error(tiny_clip, tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(ConfigError, match="does not exist") as err:
        load_backbone(tiny_clip["name"], missing)
    assert str(missing) in str(err.value) and tiny_clip["name"] in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="--clip-weights"):
        load_backbone(tiny_clip["name"], "")


def test_weights_of_another_model_do_not_fit(tiny_clip, tmp_path):
    other = json.loads(json.dumps(tiny_clip["cfg"]))
    other["vision_cfg"]["width"] = 16
    wrong = tmp_path / "wider.pt"
    torch.save(build_model("wider", other).state_dict(), wrong)
    with pytest.raises(ConfigError, match="does not fit open_clip model") as err:
        load_backbone(tiny_clip["name"], wrong)
    msg = str(err.value)
    assert str(wrong) in msg and tiny_clip["name"] in msg and "shape mismatch" in msg and "\n" not in msg
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ConfigError, match="not a state dict"):
        load_backbone(tiny_clip["name"], tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_backbone(tiny_clip["name"], tmp_path / "junk.pt")


def test_unknown_or_network_only_models_are_refused(tiny_clip):
    with pytest.raises(ConfigError, match="unknown open_clip model"):
        load_backbone("no-such-model", tiny_clip["weights"])
    with pytest.raises(ConfigError, match="not supported"):
        load_backbone("hf-hub:org/model", tiny_clip["weights"])


def test_pixel_map_to_clip_input():
    pm = PixelMap({"space": "normalized", "mean": (0.5,), "std": (0.25,), "zca": None}, (32, 32))
    x = torch.full((2, 1, 16, 16), 1.0)  # pixel 0.75
    out = pm(x)
    assert out.shape == (2, 3, 32, 32)
    expected = (0.75 - pm.clip_mean.view(3)) / pm.clip_std.view(3)
    assert torch.allclose(out[0, :, 5, 7], expected)
    rgb = PixelMap({"space": "pixel", "mean": None, "std": None, "zca": None}, (8, 8))(torch.rand(1, 3, 64, 64))
    assert rgb.shape == (1, 3, 8, 8)


def test_lora_starts_as_the_base_and_only_adapters_train(tiny_clip):
    backbone, proj = make_projector(tiny_clip)
    x = torch.randn(6, 1, 16, 16)
    zero_shot = proj.log_scale.exp() * F.normalize(backbone.model.encode_image(proj.pixel_map(x)), dim=-1) \
        @ proj.head.weight.T
    assert torch.allclose(proj(x), zero_shot, atol=1e-6)
    names = {n for n, p in proj.named_parameters() if p.requires_grad}
    assert names and all(n == "log_scale" or n.endswith((".A", ".B")) for n in names)
    assert any(".attnpool.q_proj." in n for n in names)  # read through .weight by F.multi_head_attention_forward
    frozen = {k: v.clone() for k, v in backbone.model.visual.state_dict().items()}
    base = {n: p.clone() for n, p in proj.named_parameters() if not p.requires_grad}
    opt = torch.optim.Adam(proj.trainable(), lr=1e-2)
    proj(x).pow(2).sum().backward()
    opt.step()
    assert not torch.allclose(proj(x), zero_shot)  # the adapters changed the output
    assert all(torch.equal(p, base[n]) for n, p in proj.named_parameters() if not p.requires_grad)
    assert all(torch.equal(v, frozen[k]) for k, v in backbone.model.visual.state_dict().items())


def test_lora_on_a_vit_and_a_linear_layer():
    lin = torch.nn.Linear(6, 5)
    ref = lin.weight.detach().clone()
    adapters = add_lora(lin, 8, kinds=("linear",), generator=torch.Generator().manual_seed(0))
    assert adapters[""].rank == 5 and torch.equal(lin.weight, ref)  # rank capped at min(out, fan_in); B = 0
    mha = torch.nn.MultiheadAttention(8, 2)
    mha.eval()
    x = torch.randn(3, 2, 8)
    before = mha(x, x, x)[0]
    add_lora(mha, 2, kinds=("linear",), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(mha(x, x, x)[0], before)
    with torch.no_grad():
        mha.out_proj.parametrizations.weight[0].B.fill_(0.1)
    assert not torch.allclose(mha(x, x, x)[0], before)


def test_head_rows_are_normalised_text_embeddings(tiny_clip):
    import open_clip

    backbone, proj = make_projector(tiny_clip, head_rank=0)
    tokens = open_clip.SimpleTokenizer(context_length=12)([f"a photo of a class{c}." for c in range(4)])
    text = backbone.model.encode_text(tokens)
    assert torch.allclose(proj.head.weight, text / text.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(proj.head.weight.norm(dim=1), torch.ones(4), atol=1e-6)
    expected = min(100.0, float(backbone.model.logit_scale.exp()))
    assert float(proj.log_scale.detach().exp()) == pytest.approx(expected, rel=1e-6)


def test_projector_training_reduces_the_teacher_gap(tiny_clip, tiny_real, tiny_teachers):
    from dsdistill.softlabels import label_batch
    from dsdistill.teachers import load_committee

    teachers = [t.model for t in load_committee(tiny_teachers, real=tiny_real)]
    w = torch.full((len(teachers),), 1 / len(teachers))
    _, proj = make_projector(tiny_clip, info=tiny_real.preprocess_info())
    x = tiny_real.train_images
    gap = lambda: float(F.mse_loss(proj(x).detach(), label_batch(x, teachers, w, "logits", 1.0)))  # noqa: E731
    before = gap()
    opt = torch.optim.Adam(proj.trainable(), lr=1e-2)
    train_projector(proj, x, tiny_real.train_labels, teachers, w, steps=30, batch_size=16, lr=1e-2, lam=0.0,
                    generator=torch.Generator().manual_seed(0), optimizer=opt, scale=(1.0, 1.0), flip=False, mix="none")
    assert gap() < 0.7 * before


def test_unstitch_inverts_stitch():
    from dsdistill.methods.sre2l.patches import stitch

    patches = torch.rand(8, 1, 16, 16)
    mosaics = stitch(patches, 2)
    tiles = unstitch(mosaics, 2)
    small = F.interpolate(patches, size=(8, 8), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(tiles, small)


SMALL = {"projector_steps": 3, "projector_batch": 16, "iterations": 2, "patch_pool": 8, "encoder_rank": 2,
         "head_rank": 2}


def test_condense_stores_adapters_and_head_as_label_generator(tiny_clip, tiny_real, tiny_teachers, tmp_path):
    from dsdistill.io import load_synthetic, save_synthetic
    from dsdistill.registry import CONDENSERS

    settings = {**SMALL, "clip_model": tiny_clip["name"], "clip_weights": tiny_clip["weights"],
                "teachers": tiny_teachers}
    syn = CONDENSERS.get("hello").from_settings("tiny", 2, settings).condense(tiny_real, 2, progress=False)
    assert syn.protocol == "hello" and syn.images.shape == (8, 1, 16, 16) and torch.isfinite(syn.images).all()
    comps = syn.components
    assert comps and all(c.part == "label_generator" for c in comps.values())
    assert comps["hello.head.base"].values.shape == (4, 16) and comps["hello.head.base"].values.dtype == torch.float16
    assert comps["hello.logit_scale"].values.dtype == torch.float32
    # independent count: every adapted Conv2d/Linear of the image tower stores r * (out + fan_in) fp16 values
    backbone = load_backbone(tiny_clip["name"], tiny_clip["weights"])
    layers = [m for m in backbone.model.visual.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    encoder = sum(min(2, m.weight.shape[0], m.weight[0].numel()) * (m.weight.shape[0] + m.weight[0].numel())
                  for m in layers)
    expected = 2 * (encoder + 2 * (4 + 16) + 4 * 16) + 4
    assert syn.storage_bytes()["label_generator"] == expected
    assert syn.provenance["clip_sha256"] == backbone.sha256 and syn.provenance["lora"]["adapted_layers"] == len(layers)
    save_synthetic(syn, tmp_path / "h.h5")
    back = load_synthetic(tmp_path / "h.h5")
    assert back.protocol == "hello" and set(back.components) == set(comps)
    assert all(torch.equal(back.components[k].values, c.values) for k, c in comps.items())


def test_condense_needs_clip_weights_and_teachers(tiny_clip, tiny_real, tiny_teachers, tmp_path):
    from dsdistill.registry import CONDENSERS

    make = lambda **kw: CONDENSERS.get("hello").from_settings("tiny", 1, {**SMALL, **kw})  # noqa: E731
    with pytest.raises(ConfigError, match="does not exist"):
        make(clip_model=tiny_clip["name"], clip_weights=str(tmp_path / "gone.pt"),
             teachers=tiny_teachers).condense(tiny_real, 1, progress=False)
    with pytest.raises(ConfigError, match="teachers directory"):
        make(clip_model=tiny_clip["name"], clip_weights=tiny_clip["weights"]).condense(tiny_real, 1, progress=False)
    with pytest.raises(ConfigError, match="lora_layers"):
        make(lora_layers="attention").condense(tiny_real, 1, progress=False)


def test_without_open_clip_one_config_error(monkeypatch):
    import sys

    from dsdistill.methods.hello.clip_loader import import_open_clip

    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(ConfigError, match="needs open_clip"):
        import_open_clip()


@pytest.mark.parametrize("stop", [2, 4])  # inside the projector phase (3 steps) and inside the image update
def test_condense_resumes_exactly(stop, tiny_clip, tiny_real, tiny_teachers, tmp_path, stop_at):
    from dsdistill.condenser import Checkpointer, Interrupted
    from dsdistill.registry import CONDENSERS

    settings = {**SMALL, "clip_model": tiny_clip["name"], "clip_weights": tiny_clip["weights"],
                "teachers": tiny_teachers}
    make = lambda: CONDENSERS.get("hello").from_settings("tiny", 1, settings)  # noqa: E731
    full = make().condense(tiny_real, 1, progress=False)
    ckpt = tmp_path / "c.ckpt"
    with pytest.raises(Interrupted):
        make().condense(tiny_real, 1, progress=False, checkpoint=stop_at(ckpt, stop_at=stop, every=0))
    resumed = make().condense(tiny_real, 1, progress=False, checkpoint=Checkpointer(ckpt, every=0, resume=True))
    assert torch.equal(resumed.images, full.images)
    assert all(torch.equal(resumed.components[k].values, c.values) for k, c in full.components.items())


def test_feature_centring_is_stored_and_restored(tiny_clip, tiny_real):
    _, proj = make_projector(tiny_clip, info=tiny_real.preprocess_info())
    x = tiny_real.train_images
    proj.center_on(x)
    with torch.no_grad():
        raw = proj.visual(proj.pixel_map(x))
    assert torch.allclose((raw - proj.feature_mean).mean(0), torch.zeros(16), atol=1e-5)
    tensors = proj.label_generator_tensors()
    assert torch.equal(tensors["hello.feature_mean"], proj.feature_mean)
    _, fresh = make_projector(tiny_clip, info=tiny_real.preprocess_info())
    fresh.load_label_generator(tensors, "test")
    assert fresh.centered and torch.allclose(fresh(x), proj(x))
