"""An open_clip backbone from a local weights file, never downloading anything.

``load_backbone(name, weights)`` builds the open_clip model ``name`` without pretrained weights
and fills it from ``weights``:

* ``name`` is a config registered with open_clip (``open_clip.list_models()``, or one added with
  ``open_clip.add_model_config``) or the path of a model-config JSON file (the
  ``{"embed_dim", "vision_cfg", "text_cfg"}`` dict, optionally wrapped as ``{"model_cfg": ...,
  "preprocess_cfg": ...}`` like ``open_clip_config.json``). ``hf-hub:``/``local-dir:`` names, and
  configs whose text tower or tokenizer comes from Hugging Face, are refused: they need files
  from the network;
* ``weights`` is an open_clip checkpoint or state dict: ``.safetensors`` (``safetensors``), or a
  ``torch.save`` file read with ``torch.load(weights_only=True)`` (``.pt``/``.pth``/``.bin``;
  ``{"state_dict": ...}`` training checkpoints and DataParallel ``module.`` prefixes accepted).

A missing file, an unreadable file or a state dict that does not fit the model raises one
:class:`~dsdistill.errors.ConfigError` naming the file and the model. ``HF_HUB_OFFLINE`` and
``TRANSFORMERS_OFFLINE`` are set (unless the caller set them) before open_clip is imported, so
even an unexpected Hugging Face call fails instead of reaching the network.

:class:`PixelMap` maps a dataset's images (1 or 3 channels, any size, in the set's space:
``pixel``, ``normalized`` or ``zca``) to the model's input: [0, 1] pixels, 3 channels, bilinear
resize to the model's ``image_size``, CLIP normalisation. It is differentiable (the image update
backpropagates through it).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsdistill.errors import ConfigError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def import_open_clip():
    """``open_clip``, imported with the Hugging Face hub switched offline; ConfigError when absent."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import open_clip
    except ImportError:
        raise ConfigError("the hello method needs open_clip: pip install 'dsdistill[clip]' "
                          "(open_clip_torch)") from None
    return open_clip


@dataclass
class Backbone:
    """A frozen open_clip model and what identifies it.

    Attributes:
        model: The CLIP model (eval mode, every parameter frozen, float32, CPU).
        name: The model name or config path as given.
        weights: Absolute path of the weights file.
        sha256: Of the weights file.
        config: The model config dict it was built from.
        image_size: ``(h, w)`` input size of the image tower.
        mean, std: CLIP input normalisation (3 values each).
    """

    model: nn.Module
    name: str
    weights: str
    sha256: str
    config: dict[str, Any]
    image_size: tuple[int, int]
    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD
    embed_dim: int = field(init=False)

    def __post_init__(self) -> None:
        self.embed_dim = int(self.config["embed_dim"])

    @property
    def nbytes(self) -> int:
        """Bytes of the whole backbone's parameters and buffers as loaded (float32)."""
        return sum(t.numel() * t.element_size() for t in self.model.state_dict().values())

    @property
    def visual_nbytes(self) -> int:
        """Bytes of the image tower alone (all a student's training needs once the head exists)."""
        return sum(t.numel() * t.element_size() for t in self.model.visual.state_dict().values())


def resolve_config(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model_cfg, preprocess_cfg)`` of a registered open_clip config or a config JSON file."""
    open_clip = import_open_clip()
    if not name:
        raise ConfigError("hello needs an open_clip model: --clip-model NAME (a registered config or a config "
                          "JSON file)")
    if name.startswith(("hf-hub:", "local-dir:")):
        raise ConfigError(f"clip model {name!r}: hf-hub:/local-dir: names are not supported (nothing is downloaded); "
                          "pass a registered open_clip config name or a model-config JSON file")
    preprocess: dict[str, Any] = {}
    if name.endswith(".json") or Path(name).is_file():
        path = Path(name)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"clip model config file {path} does not exist") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"clip model config file {path} is unreadable ({exc})") from None
        if isinstance(raw, dict) and isinstance(raw.get("model_cfg"), dict):
            raw, preprocess = raw["model_cfg"], dict(raw.get("preprocess_cfg") or {})
        cfg = raw
    else:
        cfg = open_clip.get_model_config(name.replace("/", "-"))  # open_clip's own name cleaning
        if cfg is None:
            raise ConfigError(f"unknown open_clip model {name!r}; pass a model-config JSON file or one of "
                              f"{', '.join(open_clip.list_models()[:8])}, ...")
        cfg = json.loads(json.dumps(cfg))
    if not isinstance(cfg, dict) or not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ConfigError(f"clip model config {name!r} must have embed_dim, vision_cfg and text_cfg")
    text = cfg.get("text_cfg") or {}
    if text.get("hf_model_name") or text.get("hf_tokenizer_name") or "multimodal_cfg" in cfg:
        raise ConfigError(f"clip model {name!r} needs a Hugging Face text tower/tokenizer or is a CoCa model; "
                          "only CLIP configs with the built-in text transformer are supported offline")
    if (cfg.get("vision_cfg") or {}).get("timm_model_name"):
        cfg["vision_cfg"]["timm_model_pretrained"] = False
    return cfg, preprocess


def build_model(name: str, cfg: dict[str, Any]) -> nn.Module:
    """The randomly initialised open_clip model of ``cfg`` (``name`` registered: ``create_model``)."""
    open_clip = import_open_clip()
    try:
        with torch.random.fork_rng(devices=[]):  # open_clip initialises from the global RNG; leave it untouched
            return _instantiate(open_clip, name, cfg)
    except ConfigError:
        raise
    except Exception as exc:  # open_clip raises assorted errors for bad configs
        raise ConfigError(f"clip model {name!r} cannot be built from its config "
                          f"({type(exc).__name__}: {str(exc)[:200]})") from None


def _instantiate(open_clip, name: str, cfg: dict[str, Any]) -> nn.Module:
    registered = not (name.endswith(".json") or Path(name).is_file()) and \
        open_clip.get_model_config(name.replace("/", "-")) is not None
    if registered:
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)  # open_clip logs "initialized randomly": the weights come next
        try:
            return open_clip.create_model(name, pretrained=None, load_weights=False, pretrained_image=False,
                                          pretrained_text=False, device="cpu")
        finally:
            logging.disable(previous)
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = dict(cfg)
    cls = CustomTextCLIP if cfg.pop("custom_text", False) else CLIP
    return cls(**cfg)


def read_state(path: Path, name: str) -> dict[str, Tensor]:
    """The state dict stored in ``path`` (see the module docstring for the accepted forms)."""
    if not path.is_file():
        raise ConfigError(f"clip weights file {path} for model {name!r} does not exist "
                          "(nothing is downloaded; pass --clip-weights PATH of a local open_clip checkpoint)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"clip weights file {path} for model {name!r} cannot be read as a weights-only "
                          f"state dict ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(f"clip weights file {path} for model {name!r} is not a state dict of tensors")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


def fit_state(model: nn.Module, state: dict[str, Tensor], path: Path, name: str) -> None:
    """Load ``state`` into ``model`` (open_clip's format conversions first); one ConfigError if it does not fit."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict

    state = convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    own = model.state_dict()
    if "logit_scale" in state and "logit_scale" in own and state["logit_scale"].ndim != own["logit_scale"].ndim:
        state["logit_scale"] = state["logit_scale"].reshape(own["logit_scale"].shape)
    from dsdistill.teachers.store import state_mismatch

    problem = state_mismatch(own, state)
    if problem:
        raise ConfigError(f"clip weights file {path} does not fit open_clip model {name!r}: {problem}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})


def load_backbone(name: str, weights: str | os.PathLike) -> Backbone:
    """Build open_clip model ``name`` and load ``weights`` (a local file) into it; frozen, eval mode.

    Raises:
        ConfigError: open_clip missing, unknown/unsupported model, missing or unreadable weights
            file, or weights that do not fit the model (one message naming both).
    """
    from dsdistill.teachers.store import file_sha256

    if not weights:
        raise ConfigError(f"hello needs local CLIP weights for model {name!r}: --clip-weights PATH "
                          "(nothing is downloaded)")
    cfg, preprocess = resolve_config(name)
    path = Path(weights).expanduser().resolve()
    state = read_state(path, name)
    model = build_model(name, cfg)
    fit_state(model, state, path, name)
    model = model.float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    size = (cfg.get("vision_cfg") or {}).get("image_size", 224)
    size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    mean = tuple(float(v) for v in preprocess.get("mean", OPENAI_MEAN))
    std = tuple(float(v) for v in preprocess.get("std", OPENAI_STD))
    return Backbone(model, name, str(path), file_sha256(path), cfg, size, mean, std)


class PixelMap(nn.Module):
    """Dataset images in their space -> CLIP input (differentiable).

    Args:
        info: ``RealData.preprocess_info()`` or the same fields of a SyntheticSet
            (``space``, ``mean``, ``std``, ``zca``).
        size: CLIP input ``(h, w)``.
        clip_mean, clip_std: CLIP normalisation (3 values each).
    """

    def __init__(self, info: dict[str, Any], size: tuple[int, int], clip_mean=OPENAI_MEAN, clip_std=OPENAI_STD):
        super().__init__()
        self.space, self.size = info["space"], tuple(size)
        self.zca = None
        if self.space == "zca":
            from dsdistill.augment.zca import ZCA

            self.zca = ZCA.from_state(info["zca"])
        mean = info.get("mean") or (0.0,)
        std = info.get("std") or (1.0,)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("clip_mean", torch.tensor(clip_mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("clip_std", torch.tensor(clip_std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` images in the set's space -> ``(B, 3, h, w)`` CLIP-normalised input."""
        if self.space == "zca":
            x = self.zca.inverse(x)
        elif self.space == "normalized":
            x = x * self.std + self.mean
        x = x.clamp(0.0, 1.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ConfigError(f"CLIP takes 1- or 3-channel images, got {x.shape[1]} channels")
        if tuple(x.shape[2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False,
                              antialias=x.shape[2] > self.size[0])
        return (x - self.clip_mean) / self.clip_std
