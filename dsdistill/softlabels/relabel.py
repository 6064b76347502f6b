"""``relabel``: FKD/SRe2L-style stored soft labels, optionally CV-DD batch-specific (BSSL).

For each student epoch the parameters of every sample (crop box, flip, CutMix partner and box)
are drawn from the generator in a fixed order, the augmented inputs are built with
:meth:`ReplayLabels.inputs` and the teacher committee labels them. See
:mod:`dsdistill.softlabels.replay` for the stored layout and the interpolation.

Committee averaging (a setting, recorded with the labels):

* ``average="logits"`` (CV-DD, INFER): ``z = sum_m w_m z_m`` with ``w`` normalised to sum 1;
  stored as logits, the student softens them at ``temperature``.
* ``average="probs"`` (MEAL-V2): ``p = sum_m w_m softmax(z_m / T)``; stored as probabilities at T.

``top_k`` quantises the target distribution (``softmax(z / T)`` or ``p``) FKD-style: the k largest
probabilities and their class indices are stored; :func:`expand_topk` spreads the remaining mass
uniformly over the other classes.

Teacher BN mode: by default every teacher runs in eval mode (SRe2L). ``batch_specific=True``
(CV-DD BSSL) puts the teachers' BatchNorm layers in train mode, so they normalise with the
statistics of the current micro-batch of ``batch_size`` augmented samples; the micro-batches are
consecutive chunks of a per-epoch random order, stored as ``ReplayLabels.order`` so the labels
can be recomputed exactly.

Differences from the reference, all deliberate:
* labels are keyed by (epoch, sample) and the CutMix partner is any sample of the set (SRe2L mixes
  within the relabel batch, which ties replay to that batch size);
* BSSL switches only BatchNorm to train mode; CV-DD leaves the whole teacher in train mode, which
  also turns on dropout (MobileNetV2's classifier) and makes the labels random; the teachers are
  copied first, so their running statistics are never modified;
* the teacher always labels the mixed image (CV-DD labels the unmixed one under Mixup by aliasing
  accident); only CutMix (Beta(1, 1), SRe2L's default) and no mixing are offered.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator, Literal, Sequence

import torch
from torch import Tensor, nn

from dsdistill.softlabels.params import AugParams, augment, draw_params
from dsdistill.softlabels.replay import ReplayLabels

_BN = (nn.modules.batchnorm._BatchNorm,)


def bn_train_copies(teachers: Sequence[nn.Module]) -> list[nn.Module]:
    """Copies of the teachers in eval mode except BatchNorm, which normalises with batch statistics."""
    copies = [copy.deepcopy(t).eval() for t in teachers]
    for t in copies:
        for m in t.modules():
            if isinstance(m, _BN):
                m.train()
    return copies


@contextmanager
def teacher_mode(teachers: Sequence[nn.Module], batch_specific: bool) -> Iterator[list[nn.Module]]:
    """Teachers ready to label: eval mode, or copies with only BatchNorm in train mode (BSSL).

    The original modules' ``training`` flags are restored on exit.
    """
    if batch_specific:
        yield bn_train_copies(teachers)
        return
    flags = [[m.training for m in t.modules()] for t in teachers]
    try:
        yield [t.eval() for t in teachers]
    finally:
        for t, fl in zip(teachers, flags):
            for m, f in zip(t.modules(), fl):
                m.training = f


def combine(logits: list[Tensor], weights: Tensor, average: str, temperature: float) -> Tensor:
    """Committee label of ``M`` teachers' ``(B, K)`` logits with normalised ``weights`` (M,)."""
    if average == "logits":
        return sum(w * z.float() for w, z in zip(weights.tolist(), logits))
    if average == "probs":
        return sum(w * torch.softmax(z.float() / temperature, 1) for w, z in zip(weights.tolist(), logits))
    raise ValueError(f"average must be 'logits' or 'probs', got {average!r}")


@torch.no_grad()
def label_batch(x: Tensor, teachers: Sequence[nn.Module], weights: Tensor, average: str,
                temperature: float) -> Tensor:
    """``(B, K)`` float32 committee label of a batch of inputs (teachers already in their mode)."""
    return combine([t(x) for t in teachers], weights, average, temperature)


def _norm_weights(weights: Tensor | Sequence[float] | None, m: int) -> Tensor:
    if m < 1:
        raise ValueError("relabel needs at least one teacher")
    w = torch.ones(m, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != (m,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not float(w.sum()) > 0:
        raise ValueError(f"weights must be {m} non-negative finite numbers with a positive sum")
    return w / w.sum()


def relabel(
    images: Tensor,
    teachers: Sequence[nn.Module],
    weights: Tensor | Sequence[float] | None = None,
    *,
    epochs: int,
    generator: torch.Generator,
    average: Literal["logits", "probs"] = "logits",
    temperature: float = 20.0,
    batch_specific: bool = False,
    batch_size: int = 256,
    mix: Literal["cutmix", "none"] = "cutmix",
    dtype: torch.dtype = torch.float16,
    top_k: int | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
    size: tuple[int, int] | None = None,
    teacher_names: Sequence[str] | None = None,
    progress=None,
) -> ReplayLabels:
    """Label ``epochs`` epochs of augmented views of ``images`` with a teacher committee.

    Args:
        images: ``(N, C, H, W)`` in the set's space (the teachers' input space); the teachers
            must live on ``images.device``.
        teachers: ``M`` classifiers returning ``(B, K)`` logits.
        weights: ``(M,)`` committee weights (normalised to sum 1), or None for equal weights.
        epochs: Student epochs to label (one set of parameters per epoch and sample).
        generator: CPU generator for every parameter draw (crops, flips, CutMix, BSSL order).
        average: Committee averaging space, ``"logits"`` or ``"probs"`` (module docstring).
        temperature: Student loss temperature (stored; applied here for ``"probs"``/``top_k``).
        batch_specific: CV-DD BSSL: teachers' BN in train mode on micro-batches of ``batch_size``.
        batch_size: Teacher forward chunk; with ``batch_specific`` the BN micro-batch (CV-DD: 8).
        mix: ``"cutmix"`` or ``"none"``.
        dtype: Storage dtype of the labels (float16 default, or float32).
        top_k: Keep only the k largest probabilities per label (FKD quantisation), or None.
        scale, ratio: RandomResizedCrop ranges (torchvision defaults).
        flip: Random horizontal flips (p = 0.5).
        size: Output ``(h, w)``; default the images' own size.
        teacher_names: Names recorded in ``settings`` (for relabelling a baseline the same way).
        progress: Optional callable receiving the epoch index after each epoch.

    Returns:
        The :class:`ReplayLabels`; labels without a teacher's running statistics changed.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be positive")
    if dtype not in (torch.float16, torch.float32):
        raise ValueError(f"dtype must be torch.float16 or torch.float32, got {dtype}")
    if not temperature > 0:
        raise ValueError("temperature must be positive")
    w = _norm_weights(weights, len(teachers))
    n, _, h, wd = images.shape
    size = tuple(size or (h, wd))
    idx_dtype = torch.int16 if max(h, wd, *size) < 2**15 else torch.int32
    values = probs_out = None
    crops = torch.empty(epochs, n, 4, dtype=idx_dtype)
    flips = torch.empty(epochs, n, dtype=torch.bool)
    partners = torch.empty(epochs, n, dtype=torch.int32) if mix != "none" else None
    boxes = torch.empty(epochs, n, 4, dtype=idx_dtype) if mix != "none" else None
    order = torch.empty(epochs, n, dtype=torch.int32) if batch_specific else None
    indices = None
    with teacher_mode(teachers, batch_specific) as active:
        for e in range(epochs):
            p: AugParams = draw_params(n, (h, wd), size, generator, scale=scale, ratio=ratio, flip=flip, mix=mix)
            perm = torch.randperm(n, generator=generator) if batch_specific else torch.arange(n)
            crops[e], flips[e] = p.crops.to(idx_dtype), p.flips
            if partners is not None:
                partners[e], boxes[e] = p.partners.to(torch.int32), p.mix_boxes.to(idx_dtype)
            if order is not None:
                order[e] = perm.to(torch.int32)
            for chunk in perm.split(batch_size):
                x = augment(images, p, chunk, size)
                y = label_batch(x, active, w.to(x.device), average, temperature).cpu()
                k = y.shape[1]
                if top_k is not None:
                    if not 1 <= top_k <= k:
                        raise ValueError(f"top_k must be in [1, {k}], got {top_k}")
                    probs = y if average == "probs" else torch.softmax(y / temperature, 1)
                    top = probs.topk(top_k, dim=1)
                    y = top.values
                    if indices is None:
                        indices = torch.empty(epochs, n, top_k, dtype=torch.int16 if k < 2**15 else torch.int32)
                    indices[e, chunk] = top.indices.to(indices.dtype)
                if values is None:
                    values = torch.empty(epochs, n, y.shape[1], dtype=dtype)
                    probs_out = k
                values[e, chunk] = y.to(dtype)
            if progress is not None:
                progress(e)
    kind = "probs" if (average == "probs" or top_k is not None) else "logits"
    settings = {"scale": list(scale), "ratio": list(ratio), "flip": bool(flip), "mix": mix, "cutmix_beta": 1.0,
                "average": average, "weights": [float(v) for v in w], "batch_specific": bool(batch_specific),
                "batch_size": int(batch_size), "top_k": top_k, "dtype": str(dtype).replace("torch.", ""),
                "teachers": list(teacher_names or []), "teacher_bn": "train (micro-batch)" if batch_specific
                else "eval", "interpolation": "bilinear, align_corners=False, border padding"}
    return ReplayLabels(crops, flips, partners, boxes, values, indices, kind=kind, temperature=float(temperature),
                        num_classes=int(probs_out), size=size, order=order,
                        micro_batch=int(batch_size) if batch_specific else 0, settings=settings)


def relabel_like(images: Tensor, teachers: Sequence[nn.Module], like: ReplayLabels, *, epochs: int | None = None,
                 generator: torch.Generator) -> ReplayLabels:
    """Label ``images`` the way ``like`` was made (same committee weights, averaging, temperature,
    BN mode, mix, crop ranges, dtype, top-k): the random-subset baseline under the same labels."""
    s = like.settings
    return relabel(images, teachers, s.get("weights"), epochs=epochs or like.epochs, generator=generator,
                   average=s.get("average", "logits"), temperature=like.temperature,
                   batch_specific=like.micro_batch > 0, batch_size=like.micro_batch or int(s.get("batch_size", 256)),
                   mix=s.get("mix", "cutmix" if like.partners is not None else "none"),
                   dtype=like.values.dtype if like.values.dtype in (torch.float16, torch.float32) else torch.float16,
                   top_k=like.top_k, scale=tuple(s.get("scale", (0.08, 1.0))), ratio=tuple(s.get("ratio", (3 / 4, 4 / 3))),
                   flip=bool(s.get("flip", True)), size=like.size, teacher_names=s.get("teachers"))
