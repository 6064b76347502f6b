"""The HeLlO label projector: CLIP image encoder + linear head, both with LoRA adapters.

``f(x) = s * normalize(E_I(P(x))) @ W^T`` where ``P`` is :class:`~.clip_loader.PixelMap` (the
set's images to CLIP input), ``E_I`` the open_clip image tower with LoRA adapters on its
Conv2d/Linear layers, ``W`` ``(K, D)`` the head whose frozen base rows are the normalised text
embeddings of ``template.format(class_name)`` (zero-shot CLIP, the paper's Prop. 1) plus a LoRA
adapter, and ``s = exp(log_scale)`` starting at the backbone's ``logit_scale.exp()`` (clamped to
100 as CLIP does). Without training the projector *is* zero-shot CLIP.

Training (:func:`train_projector`): ``MSE(f(A(x)), Y') + lambda * CE(f(A(x)), y)`` on augmented
**real training images** ``A(x)`` (RandomResizedCrop, optional flip, CutMix inside the batch; the
student later sees the same kind of inputs), where ``Y'`` are the teacher committee's
**logits** (weighted average of the teachers' logits, weights = normalised validation accuracies
or uniform) on exactly those inputs and the CE uses the CutMix-mixed hard labels. MSE on logits is
G-VBSM's ``mse_gt`` space; the student loss of the ``hello`` protocol uses the same space. Trained
parameters: the adapters' ``A``/``B`` and ``log_scale`` (:meth:`Projector.param_groups`: the head
adapter and the scale at their own, higher rate); the backbone (BatchNorm statistics too) stays
frozen in eval mode. :meth:`Projector.center_on` optionally subtracts a stored mean feature
before the normalisation (not in the paper; off unless asked for).
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsdistill.softlabels import augment, draw_params, label_batch
from dsdistill.methods.hello.clip_loader import Backbone, PixelMap, import_open_clip
from dsdistill.methods.hello.lora import LoRADelta, add_lora, adapter_tensors, load_adapter_tensors

PREFIX = "hello."


@torch.no_grad()
def text_head(backbone: Backbone, class_names: Sequence[str], template: str = "a photo of a {}.") -> Tensor:
    """``(K, D)`` normalised text embeddings of the class prompts (open_clip's bundled BPE tokenizer)."""
    open_clip = import_open_clip()
    text_cfg = backbone.config.get("text_cfg") or {}
    tokenizer = open_clip.SimpleTokenizer(context_length=int(text_cfg.get("context_length", 77)),
                                          **(text_cfg.get("tokenizer_kwargs") or {}))
    tokens = tokenizer([template.format(name) for name in class_names])
    return backbone.model.encode_text(tokens, normalize=True).float()


class Projector(nn.Module):
    """Image-to-label projector (module docstring).

    Args:
        backbone: The frozen open_clip backbone (its image tower is copied, not modified).
        pixel_map: Set space -> CLIP input.
        head_base: ``(K, D)`` frozen head rows (normalised text embeddings at condense time).
        encoder_rank, head_rank: LoRA ranks (0 = no adapters there).
        kinds: Layer kinds adapted in the encoder (``"conv"``, ``"linear"``).
        alpha: LoRA alpha (None: scale 1).
        generator: Draws the adapters' ``A`` matrices.
        log_scale: Initial ``log s`` (default: the backbone's ``logit_scale``, clamped to log 100).
    """

    def __init__(self, backbone: Backbone, pixel_map: PixelMap, head_base: Tensor, *, encoder_rank: int,
                 head_rank: int, kinds: Sequence[str] = ("conv", "linear"), alpha: float | None = None,
                 generator: torch.Generator, log_scale: float | None = None) -> None:
        super().__init__()
        self.pixel_map = pixel_map
        self.visual = copy.deepcopy(backbone.model.visual).float().eval()
        self.head = nn.Linear(head_base.shape[1], head_base.shape[0], bias=False)
        with torch.no_grad():
            self.head.weight.copy_(head_base)
        self.encoder_adapters = add_lora(self.visual, encoder_rank, kinds=kinds, alpha=alpha,
                                         generator=generator) if encoder_rank > 0 else {}
        if not encoder_rank:
            for p in self.visual.parameters():
                p.requires_grad_(False)
        self.head_adapters = add_lora(self.head, head_rank, kinds=("linear",), alpha=alpha,
                                      generator=generator) if head_rank > 0 else {}
        if not head_rank:
            self.head.weight.requires_grad_(False)
        if log_scale is None:
            log_scale = min(float(backbone.model.logit_scale.detach().reshape(-1)[0]), math.log(100.0))
        self.log_scale = nn.Parameter(torch.tensor(float(log_scale)))
        self.alpha = alpha
        self.register_buffer("feature_mean", torch.zeros(head_base.shape[1]))
        self.centered = False

    @torch.no_grad()
    def center_on(self, images: Tensor, chunk: int = 256) -> None:
        """Subtract the mean encoder feature of ``images`` before normalising (a stored ``(D,)`` vector).

        Not in the paper: a small backbone on an out-of-domain dataset gives features that share
        one dominant direction (cosine ~0.9 between any two MNIST digits for our CIFAR-10-trained
        RN), which leaves the normalised features ill-conditioned for the head; centring fixes that.
        """
        was = self.training
        self.eval()
        feats = torch.cat([self.visual(self.pixel_map(x)) for x in images.split(chunk)])
        self.feature_mean.copy_(feats.float().mean(0))
        self.centered = True
        self.train(was)

    def train(self, mode: bool = True) -> "Projector":
        super().train(mode)
        self.visual.eval()  # frozen backbone: BatchNorm keeps the backbone's statistics
        return self

    def features(self, x: Tensor) -> Tensor:
        """``(B, D)`` normalised image features of ``(B, C, H, W)`` set-space images (adapted encoder)."""
        return F.normalize(self.visual(self.pixel_map(x)) - self.feature_mean, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, K)`` label logits of ``(B, C, H, W)`` set-space images."""
        return self.log_scale.exp() * self.head(self.features(x))

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def param_groups(self, lr: float, head_lr: float) -> list[dict]:
        """Optimizer groups: encoder adapters at ``lr``; head adapter and logit scale at ``head_lr``.

        Each group keeps its peak rate as ``peak_lr`` (the cosine schedule of :func:`train_projector`).
        """
        head = [p for p in self.head.parameters() if p.requires_grad] + [self.log_scale]
        ids = {id(p) for p in head}
        encoder = [p for p in self.trainable() if id(p) not in ids]
        return [{"params": encoder, "lr": lr, "peak_lr": lr}, {"params": head, "lr": head_lr, "peak_lr": head_lr}]

    # -- storage -------------------------------------------------------------------------------
    def label_generator_tensors(self) -> dict[str, Tensor]:
        """Everything the file stores to rebuild the projector from the backbone: names -> tensors."""
        head_base = self.head.parametrizations.weight.original if self.head_adapters else self.head.weight
        out = {f"{PREFIX}head.base": head_base.detach(), f"{PREFIX}logit_scale": self.log_scale.detach().reshape(1)}
        if self.centered:
            out[f"{PREFIX}feature_mean"] = self.feature_mean.detach()
        out.update({f"{PREFIX}lora.visual.{k}": v for k, v in adapter_tensors(self.encoder_adapters).items()})
        out.update({f"{PREFIX}lora.head.{k}": v for k, v in adapter_tensors(self.head_adapters).items()})
        return out

    def load_label_generator(self, tensors: dict[str, Tensor], what: str) -> None:
        """Inverse of :meth:`label_generator_tensors` (ValueError naming ``what`` on a mismatch)."""
        head_base = self.head.parametrizations.weight.original if self.head_adapters else self.head.weight
        base = tensors[f"{PREFIX}head.base"]
        if tuple(base.shape) != tuple(head_base.shape):
            raise ValueError(f"{what}: stored head is {tuple(base.shape)}, the backbone gives {tuple(head_base.shape)}")
        with torch.no_grad():
            head_base.copy_(base.float())
            self.log_scale.copy_(tensors[f"{PREFIX}logit_scale"].float().reshape(()))
            mean = tensors.get(f"{PREFIX}feature_mean")
            if mean is not None:
                if tuple(mean.shape) != tuple(self.feature_mean.shape):
                    raise ValueError(f"{what}: stored feature mean is {tuple(mean.shape)}, the backbone gives "
                                     f"{tuple(self.feature_mean.shape)}")
                self.feature_mean.copy_(mean.float())
                self.centered = True
        for prefix, adapters in (("lora.visual.", self.encoder_adapters), ("lora.head.", self.head_adapters)):
            sub = {k[len(PREFIX + prefix):]: v.float() for k, v in tensors.items() if k.startswith(PREFIX + prefix)}
            load_adapter_tensors(adapters, sub, what)


def ranks_of(tensors: dict[str, Tensor]) -> tuple[int, int]:
    """``(encoder_rank, head_rank)`` requested when the stored adapters were made (max stored rank)."""
    enc = [v.shape[0] for k, v in tensors.items() if k.startswith(PREFIX + "lora.visual.") and k.endswith(".A")]
    head = [v.shape[0] for k, v in tensors.items() if k.startswith(PREFIX + "lora.head.") and k.endswith(".A")]
    return (max(enc) if enc else 0), (max(head) if head else 0)


def mixed_ce(logits: Tensor, labels: Tensor, lam: Tensor, partner_labels: Tensor) -> Tensor:
    """``mean(lam * CE(y) + (1 - lam) * CE(y_partner))``."""
    return (lam * F.cross_entropy(logits, labels, reduction="none")
            + (1 - lam) * F.cross_entropy(logits, partner_labels, reduction="none")).mean()


def augmented_batch(images: Tensor, labels: Tensor, generator: torch.Generator, *, scale: tuple[float, float],
                    flip: bool, mix: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """RRC + flip + CutMix (within the batch) of ``(B, C, H, W)`` images: ``(x, y, lam, y_partner)``."""
    size = tuple(images.shape[2:])
    params = draw_params(len(images), size, size, generator, scale=scale, flip=flip, mix=mix)
    idx = torch.arange(len(images))
    x = augment(images, params, idx, size)
    lam, partner = params.cutmix(idx, size)
    return x, labels, lam.to(images.device), labels[partner.to(labels.device)]


def train_projector(projector: Projector, images: Tensor, labels: Tensor, teachers: Sequence[nn.Module],
                    weights: Tensor, *, steps: int, start: int = 0, batch_size: int, lr: float, lam: float,
                    generator: torch.Generator, optimizer: torch.optim.Optimizer, scale: tuple[float, float],
                    flip: bool, mix: str, on_step: Callable[[int, float], None] | None = None) -> None:
    """Fit the projector's adapters to the teachers (module docstring) from step ``start`` to ``steps``.

    Args:
        projector: Trained in place.
        images, labels: ``(N, C, H, W)`` real training images (set space) and ``(N,)`` labels.
        teachers: Frozen eval-mode classifiers of the set's space.
        weights: ``(M,)`` committee weights summing to 1.
        steps, start: Total steps and the first one (resume).
        batch_size, lr, lam: Batch, peak learning rate (cosine to 0; a group's own ``peak_lr`` wins),
            CE weight lambda.
        generator: Batch indices and augmentation (restored by the caller on resume).
        optimizer: Over ``projector.trainable()``.
        scale, flip, mix: RandomResizedCrop scale range, flips, ``"cutmix"``/``"none"``.
        on_step: Called with ``(step + 1, loss)`` after each step (checkpointing, progress).
    """
    projector.train()
    for step in range(start, steps):
        for group in optimizer.param_groups:
            group["lr"] = 0.5 * (1 + math.cos(math.pi * step / steps)) * group.get("peak_lr", lr)
        idx = torch.randint(len(images), (batch_size,), generator=generator).to(images.device)
        x, y, mix_lam, y2 = augmented_batch(images[idx], labels[idx], generator, scale=scale, flip=flip, mix=mix)
        target = label_batch(x, teachers, weights.to(x.device), "logits", 1.0)
        out = projector(x)
        loss = F.mse_loss(out, target) + lam * mixed_ce(out, y, mix_lam, y2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step + 1, float(loss.detach()))


@torch.no_grad()
def projector_accuracy(projector: Projector, images: Tensor, labels: Tensor, chunk: int = 256) -> float:
    """Top-1 accuracy (fraction) of the projector's argmax on ``images``."""
    projector.eval()
    pred = torch.cat([projector(x).argmax(1) for x in images.split(chunk)])
    return float((pred.cpu() == labels.cpu()).float().mean())


__all__ = ["Projector", "LoRADelta", "text_head", "train_projector", "projector_accuracy", "augmented_batch",
           "mixed_ce", "ranks_of", "PREFIX"]
