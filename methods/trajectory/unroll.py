"""The student's inner loop and its three memory modes (MATCHING.md 3.2, 6.3, 10.5).

The student takes ``N = syn_steps`` steps from ``theta_0`` on the synthetic set::

    g_k = grad_theta  w * CE(f(DSA_k(x[chunk_k]); theta_k), y[chunk_k])
    b_{k+1} = mu * b_k + g_k                (mu = 0: plain SGD, MTT/FTD/DATM; mu = 0.9: AST)
    theta_{k+1} = theta_k - lr * b_{k+1}

and the outer loss is a function of some of the ``theta_k`` (``theta_N``; AST adds intermediate
ones). How the gradient of that loss w.r.t. the images, the lr and the soft labels is computed:

``full``
    Every step is built with ``create_graph=True`` and the loss is backpropagated through the whole
    graph (the reference). Memory grows linearly with ``N`` (every step's activations and
    double-backward graph stay alive).
``checkpoint``
    Exact reverse-mode accumulation over the steps. The forward pass keeps only the parameter
    vectors ``theta_k`` (and momentum buffers), ``N * P`` floats, and no graph. The backward pass
    walks ``k = N-1 .. 0``, rebuilds step ``k``'s graph from ``theta_k`` (same chunk, same replayed
    DSA parameters) and takes one vector-Jacobian product of ``(theta_{k+1}, b_{k+1})`` with the
    adjoint ``(a_theta, a_b)``; that gives ``a_k`` (through Hessian-vector products) and this step's
    image, lr and label gradients. The result equals ``full`` up to float rounding; only one step's
    graph is alive at a time, at the cost of one extra forward/backward per step.
``tesla``
    TESLA's constant-memory approximation (Cui et al., ICML 2023): the same backward walk, but the
    recomputed gradient ``g_k`` is taken at a *detached* ``theta_k``, so the adjoint is carried
    without the Hessian terms (``a_k = a_{k+1}`` for plain SGD). That drops the cross-step terms
    ``dg_j/dtheta_j * dtheta_j/dx_i`` (j > i): the image and lr gradients are exact only to first
    order in the lr (exact for ``N = 1``; MATCHING.md 6.3 measured cosine 0.93 at lr 0.5, 6 steps).
    TESLA's lr gradient ``-<a, sum_k g_k>`` is what this gives too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from dsdistill.augment import DSA
from .student import FunctionalStudent

MODES = ("full", "checkpoint", "tesla")


@dataclass
class InnerPlan:
    """Everything random about one unroll, drawn up front so a recomputation replays it exactly.

    Attributes:
        chunks: Per step, the ``(b,)`` indices of the synthetic images it trains on.
        augs: Per step, DSA's ``(op, params)`` for that chunk, or None without augmentation.
        record: Step counts ``k`` (1..N, increasing, N last) whose ``theta_k`` the unroll returns.
    """

    chunks: list[Tensor]
    augs: list[tuple[str, dict] | None]
    record: tuple[int, ...]

    @property
    def steps(self) -> int:
        return len(self.chunks)


def make_plan(num_images: int, image_shape: tuple[int, int, int], syn_steps: int, batch_syn: int,
              dsa: DSA | None, generator: torch.Generator, record: tuple[int, ...] = ()) -> InnerPlan:
    """MTT's batching: chunks of a random permutation, a new permutation when one runs out.

    Args:
        num_images: Synthetic set size.
        image_shape: ``(C, H, W)``.
        syn_steps: Number of inner steps N.
        batch_syn: Chunk size (0 or >= num_images: the whole set every step).
        dsa: Augmentation drawn fresh (independent per-sample parameters) for every step.
        generator: Source of the permutations and the DSA draws.
        record: Extra intermediate steps to return (N is always added).
    """
    b = num_images if batch_syn <= 0 else min(batch_syn, num_images)
    chunks: list[Tensor] = []
    while len(chunks) < syn_steps:
        chunks.extend(torch.randperm(num_images, generator=generator).split(b))
    chunks = chunks[:syn_steps]
    augs = [dsa._sample((len(c), *image_shape), generator, False) if dsa is not None and dsa.tokens else None
            for c in chunks]
    steps = tuple(sorted({int(k) for k in record if 0 < int(k) < syn_steps} | {syn_steps}))
    return InnerPlan(chunks, augs, steps)


@dataclass
class Inner:
    """The fixed ingredients of an unroll.

    Attributes:
        student: Network evaluated on flat parameters.
        plan: Chunks, DSA draws and recorded steps.
        dsa: The augmentation whose draws ``plan.augs`` holds.
        labels: ``(N_syn,)`` int64 hard labels (used when no soft labels are given).
        momentum: Student momentum mu (0 = plain SGD).
        weight: Multiplier of the inner cross-entropy (AST's balanced loss; 1 otherwise).
    """

    student: FunctionalStudent
    plan: InnerPlan
    dsa: DSA | None
    labels: Tensor
    momentum: float = 0.0
    weight: float = 1.0
    tesla: bool = field(default=False, repr=False)

    def step_loss(self, k: int, theta: Tensor, images: Tensor, soft: Tensor | None) -> Tensor:
        """Step ``k``'s training loss at ``theta`` on its (augmented) chunk of ``images``."""
        idx = self.plan.chunks[k].to(images.device)
        x = images[idx]
        aug = self.plan.augs[k]
        if aug is not None:
            x = self.dsa._apply(x, aug[0], {n: v.to(x.device) for n, v in aug[1].items()})
        logits = self.student.logits(theta, x)
        if soft is None:
            loss = F.cross_entropy(logits, self.labels[idx.to(self.labels.device)])
        else:
            target = torch.softmax(soft[idx], dim=1)
            loss = -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
        return loss * self.weight


def _step(inner: Inner, k: int, theta: Tensor, buf: Tensor | None, images: Tensor, lr: Tensor,
          soft: Tensor | None, create_graph: bool) -> tuple[Tensor, Tensor | None]:
    """One student update; returns ``(theta_{k+1}, b_{k+1})`` (b is None for plain SGD)."""
    at = theta.detach() if inner.tesla else theta
    if not at.requires_grad:
        at = at.requires_grad_(True)
    g = torch.autograd.grad(inner.step_loss(k, at, images, soft), at, create_graph=create_graph)[0]
    if inner.momentum:
        buf = g if buf is None else inner.momentum * buf + g
        return theta - lr * buf, buf
    return theta - lr * g, None


def unroll_full(inner: Inner, theta0: Tensor, images: Tensor, lr: Tensor,
                soft: Tensor | None = None) -> list[Tensor]:
    """Exact unroll keeping the whole graph; returns ``theta_k`` for ``k`` in ``plan.record``."""
    theta, buf, out = theta0.detach().requires_grad_(True), None, []
    for k in range(inner.plan.steps):
        theta, buf = _step(inner, k, theta, buf, images, lr, soft, create_graph=True)
        if k + 1 in inner.plan.record:
            out.append(theta)
    return out


class _AdjointUnroll(torch.autograd.Function):
    """Forward without a graph, backward by per-step recomputation (``checkpoint``/``tesla``)."""

    @staticmethod
    def forward(ctx, inner: Inner, theta0: Tensor, images: Tensor, lr: Tensor, soft: Tensor | None):
        thetas, bufs = [theta0.detach()], [None]
        with torch.enable_grad():
            for k in range(inner.plan.steps):
                theta, buf = _step(inner, k, thetas[-1].requires_grad_(True), bufs[-1], images.detach(),
                                   lr.detach(), None if soft is None else soft.detach(), create_graph=False)
                thetas[-1].requires_grad_(False)
                thetas.append(theta.detach())
                bufs.append(None if buf is None else buf.detach())
        ctx.inner, ctx.thetas, ctx.bufs = inner, thetas, bufs
        ctx.save_for_backward(images, lr, soft)
        return tuple(thetas[k].clone() for k in inner.plan.record)

    @staticmethod
    def backward(ctx, *grads):
        inner: Inner = ctx.inner
        images, lr, soft = ctx.saved_tensors
        record = {k: i for i, k in enumerate(inner.plan.record)}
        a_theta = torch.zeros_like(ctx.thetas[0])
        a_buf = torch.zeros_like(a_theta) if inner.momentum else None
        g_images, g_lr = torch.zeros_like(images), torch.zeros_like(lr)
        g_soft = None if soft is None else torch.zeros_like(soft)
        for k in range(inner.plan.steps - 1, -1, -1):
            if k + 1 in record and grads[record[k + 1]] is not None:
                a_theta = a_theta + grads[record[k + 1]]
            idx = inner.plan.chunks[k].to(images.device)
            with torch.enable_grad():
                theta = ctx.thetas[k].detach().requires_grad_(True)
                buf = ctx.bufs[k].detach().requires_grad_(True) if ctx.bufs[k] is not None else None
                chunk = images[idx].detach().requires_grad_(True)
                full = torch.zeros_like(images).index_put((idx,), chunk)  # only the chunk is read
                lr_k = lr.detach().requires_grad_(True)
                soft_k = None if soft is None else soft.detach().requires_grad_(True)
                new_theta, new_buf = _step(inner, k, theta, buf, full, lr_k, soft_k, create_graph=True)
                outs, adj = [new_theta], [a_theta]
                if new_buf is not None:
                    outs.append(new_buf)
                    adj.append(a_buf)
                wrt = [theta, chunk, lr_k] + ([buf] if buf is not None else []) + \
                      ([soft_k] if soft_k is not None else [])
                got = torch.autograd.grad(outs, wrt, adj, allow_unused=True)
            a_theta = got[0] if got[0] is not None else a_theta
            if got[1] is not None:
                g_images.index_add_(0, idx, got[1])
            if got[2] is not None:
                g_lr = g_lr + got[2]
            pos = 3
            if buf is not None:
                a_buf = got[pos] if got[pos] is not None else torch.zeros_like(a_theta)
                pos += 1
            elif inner.momentum:  # step 0 created the buffer from g: nothing further back
                a_buf = torch.zeros_like(a_theta)
            if soft_k is not None and got[pos] is not None:
                g_soft = g_soft + got[pos]
        del ctx.thetas, ctx.bufs
        return None, None, g_images, g_lr, g_soft


def unroll(inner: Inner, theta0: Tensor, images: Tensor, lr: Tensor, soft: Tensor | None = None,
           mode: str = "full") -> list[Tensor]:
    """Run the student and return ``theta_k`` (``(P,)`` each) for ``k`` in ``inner.plan.record``.

    Args:
        inner: Student, plan, labels, momentum, loss weight.
        theta0: ``(P,)`` starting parameters (treated as a constant).
        images: ``(N_syn, C, H, W)`` synthetic images (may require grad).
        lr: 0-d student learning rate (may require grad).
        soft: ``(N_syn, K)`` learnable label logits, or None for hard labels.
        mode: ``full``, ``checkpoint`` or ``tesla`` (module docstring).

    Returns:
        The recorded parameter vectors, differentiable w.r.t. ``images``, ``lr`` and ``soft``.
    """
    if mode not in MODES:
        raise ValueError(f"unroll must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "full":
        inner.tesla = False
        return unroll_full(inner, theta0, images, lr, soft)
    inner.tesla = mode == "tesla"
    return list(_AdjointUnroll.apply(inner, theta0, images, lr, soft))


def matching_loss(theta: Tensor, theta0: Tensor, target: Tensor) -> Tensor:
    """MTT's normalised distance ``||theta - target||^2 / ||theta0 - target||^2`` (0-d)."""
    return (theta - target).pow(2).sum() / (theta0 - target).pow(2).sum()
