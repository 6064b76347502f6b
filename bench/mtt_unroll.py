"""MTT's student unroll: memory and time of ``full`` vs ``checkpoint``, gradient errors of
``checkpoint`` and ``tesla`` vs ``full``, and seconds per iteration vs a reference-style unroll.

Problem: ConvNet-3 (width 128, instance norm) on MNIST-shaped inputs (1x28x28, 10 classes), IPC 10
N(0, 1) images as the synthetic set (values do not change memory or time, and loading MNIST would
add ~1 GB to every process on a shared machine), ``syn_steps`` plain-SGD student steps on the whole set
(``batch_syn`` 0) with fresh DSA each step, the MTT loss against a perturbed target.

* Peak memory: each mode runs once in a fresh subprocess; peak = ``ru_maxrss`` after the unroll
  and its backward minus the resident set size just before it (``/proc/self/statm``), i.e. the
  process's high-water mark of the resident set (glibc heap tuning of ``dsdistill.perf`` on).
* Time: ``reference`` (``mtt-distillation/distill.py``: a ReparamModule-style student whose flat
  vector is split and ``setattr`` into the modules before every forward, contiguous NCHW inputs,
  the whole graph kept), ``full`` and ``checkpoint`` iterations, interleaved in one process; the
  ratios are what to read on a shared machine.
* Gradient errors: relative L2 error of the image gradient (and the lr gradient) of ``checkpoint``
  and ``tesla`` vs ``full`` with the same plan, at lr 0.01 and 0.5 (float32). In float32 a
  20-30-step unroll amplifies rounding to ~1e-2 relative error in the image gradient for *every*
  mode, the reference-style one included; the float64 check (a smaller IPC, same steps) shows
  ``checkpoint`` equals ``full`` to ~1e-15 and that float32 ``full`` itself is that far from the
  float64 gradient.

Usage: python bench/mtt_unroll.py [--syn-steps 30] [--ipc 10] [--repeats 2]
       [--json bench/results/mtt_unroll.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dsdistill.augment import DSA, strategy_for
from dsdistill.methods.trajectory.student import FunctionalStudent
from dsdistill.methods.trajectory.unroll import Inner, make_plan, matching_loss, unroll
from dsdistill.models import build_model
from dsdistill.perf import tune_allocator


def setup(ipc: int, syn_steps: int, seed: int = 0):
    """Images, a student, theta_0/theta*, a plan (all deterministic in ``seed``)."""
    num_classes, shape = 10, (1, 28, 28)
    g = torch.Generator().manual_seed(seed)
    images = torch.randn((num_classes * ipc, *shape), generator=g)
    labels = torch.arange(num_classes).repeat_interleave(ipc)
    net = build_model("convnet", num_classes, shape, seed=seed)
    student = FunctionalStudent(net)
    theta0 = torch.cat([p.detach().flatten() for p in net.parameters()])
    target = theta0 + 0.01 * torch.randn(theta0.shape, generator=g)
    dsa = DSA(strategy_for("mnist"), align_corners=True)
    plan = make_plan(len(images), shape, syn_steps, 0, dsa, g)
    return student, net, theta0, target, images, labels, dsa, plan


def ours(mode, student, theta0, target, images, labels, dsa, plan, lr=0.01):
    """One iteration of our unroll + loss + backward; returns (image grad, lr grad)."""
    x = images.clone().requires_grad_(True)
    lr_t = torch.tensor(lr, requires_grad=True)
    thetas = unroll(Inner(student, plan, dsa, labels), theta0, x, lr_t, None, mode)
    matching_loss(thetas[-1], theta0, target).backward()
    return x.grad, lr_t.grad


class ReparamStudent:
    """``mtt-distillation/reparam_module.py``-style: the module's parameters are deleted and, before
    each forward, views of the flat vector are ``setattr`` into the modules."""

    def __init__(self, net):
        self.net = copy.deepcopy(net)
        self.infos = [(name.rsplit(".", 1), p.shape, p.numel()) for name, p in self.net.named_parameters()]
        for (path, _, _) in self.infos:
            mod = self.net.get_submodule(path[0]) if len(path) == 2 else self.net
            delattr(mod, path[-1])

    def __call__(self, flat, x):
        for (path, shape, _), t in zip(self.infos, flat.split([n for _, _, n in self.infos])):
            mod = self.net.get_submodule(path[0]) if len(path) == 2 else self.net
            setattr(mod, path[-1], t.view(shape))
        return self.net(x)


def reference(ref, theta0, target, images, labels, dsa, plan, lr=0.01):
    """``distill.py``'s unroll: list of flat params, grad with create_graph, one backward at the end."""
    x_all = images.clone().requires_grad_(True)
    syn_lr = torch.tensor(lr, requires_grad=True)
    params = [theta0.clone().requires_grad_(True)]
    for k, idx in enumerate(plan.chunks):
        x = x_all[idx]
        op, p = plan.augs[k]
        x = dsa._apply(x, op, p)
        ce = F.cross_entropy(ref(params[-1], x), labels[idx])
        grad = torch.autograd.grad(ce, params[-1], create_graph=True)[0]
        params.append(params[-1] - syn_lr * grad)
    loss = F.mse_loss(params[-1], target, reduction="sum") / F.mse_loss(theta0, target, reduction="sum")
    loss.backward()
    return x_all.grad, syn_lr.grad


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child_memory(mode: str, ipc: int, syn_steps: int) -> None:
    """Run one unroll of ``mode`` and print the peak RSS increase in bytes (subprocess entry)."""
    tune_allocator()
    args = setup(ipc, syn_steps)
    student, net, theta0, target, images, labels, dsa, plan = args
    before = rss_bytes()
    if mode == "reference":
        reference(ReparamStudent(net), theta0, target, images, labels, dsa, plan)
    else:
        ours(mode, student, theta0, target, images, labels, dsa, plan)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_increase_bytes": peak - before}))


def measure_memory(mode: str, ipc: int, syn_steps: int) -> int:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--ipc", str(ipc), "--syn-steps", str(syn_steps)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_increase_bytes"]


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def float64_check(ipc: int, syn_steps: int) -> dict:
    """Image-gradient errors that separate the method from float32 rounding: ``checkpoint`` vs
    ``full`` in float64 (exact up to rounding, ~1e-15) and float32 ``full``/``checkpoint`` vs float64
    ``full`` (long unrolls amplify float32 rounding; both modes sit at the same floor)."""
    student, net, theta0, target, images, labels, dsa, plan = setup(ipc, syn_steps)
    g32f = ours("full", student, theta0, target, images, labels, dsa, plan)[0]
    g32c = ours("checkpoint", student, theta0, target, images, labels, dsa, plan)[0]
    st64 = FunctionalStudent(net.double())
    args64 = (theta0.double(), target.double(), images.double(), labels, dsa, plan)
    g64f, g64c = ours("full", st64, *args64)[0], ours("checkpoint", st64, *args64)[0]
    return {"ipc": ipc, "syn_steps": syn_steps, "checkpoint64_vs_full64": rel(g64c, g64f),
            "full32_vs_full64": rel(g32f.double(), g64f), "checkpoint32_vs_full64": rel(g32c.double(), g64f),
            "checkpoint32_vs_full32": rel(g32c, g32f)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--syn-steps", type=int, default=30)
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-reference-memory", action="store_true")
    ap.add_argument("--float64-ipc", type=int, default=2,
                    help="IPC of the float64 exactness check (same syn_steps; 0 skips it)")
    ap.add_argument("--reference-seconds", type=float, default=None,
                    help="the reference code's own s/iteration on this machine kind for the same problem, if known "
                         "(issue 3: 33 s at IPC 10, syn_steps 20; 72 s at syn_steps 40), to print ours/that")
    ap.add_argument("--json", default="bench/results/mtt_unroll.json")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child_memory(a.child, a.ipc, a.syn_steps)
    tune_allocator()
    res: dict = {"problem": {"model": "convnet (width 128, instancenorm)", "input": "1x28x28 N(0,1), 10 classes",
                             "ipc": a.ipc, "syn_steps": a.syn_steps, "batch_syn": "all", "dtype": "float32",
                             "threads": torch.get_num_threads()},
                 "memory_method": "ru_maxrss after unroll+backward minus RSS before, fresh subprocess per mode"}
    modes = ["full", "checkpoint"] + ([] if a.skip_reference_memory else ["reference"])
    mem = {m: measure_memory(m, a.ipc, a.syn_steps) for m in modes}
    res["peak_memory_bytes"] = mem
    res["checkpoint_over_full_memory"] = mem["checkpoint"] / mem["full"]
    print(f"peak memory: full {mem['full'] / 2**30:.2f} GiB, checkpoint {mem['checkpoint'] / 2**30:.2f} GiB "
          f"-> ratio {res['checkpoint_over_full_memory']:.3f} (target <= 0.40)"
          + (f"; reference {mem['reference'] / 2**30:.2f} GiB" if "reference" in mem else ""))

    student, net, theta0, target, images, labels, dsa, plan = setup(a.ipc, a.syn_steps)
    ref_student = ReparamStudent(net)
    times = {"reference": [], "full": [], "checkpoint": []}
    grads = {}
    for _ in range(a.repeats):
        for mode in ("reference", "full", "checkpoint"):
            t = time.perf_counter()
            if mode == "reference":
                grads[mode] = reference(ref_student, theta0, target, images, labels, dsa, plan)
            else:
                grads[mode] = ours(mode, student, theta0, target, images, labels, dsa, plan)
            times[mode].append(time.perf_counter() - t)
    sec = {m: min(v) for m, v in times.items()}
    res["seconds_per_iteration_min"] = sec
    res["seconds_all"] = times
    res["full_over_reference_time"] = sec["full"] / sec["reference"]
    res["checkpoint_over_reference_time"] = sec["checkpoint"] / sec["reference"]
    res["checkpoint_over_full_time"] = sec["checkpoint"] / sec["full"]
    res["checkpoint_vs_full_rel_error"] = {"images": rel(grads["checkpoint"][0], grads["full"][0]),
                                           "lr": rel(grads["checkpoint"][1], grads["full"][1])}
    res["full_vs_reference_rel_error"] = {"images": rel(grads["full"][0], grads["reference"][0])}
    print(f"seconds/iteration (min of {a.repeats}): reference {sec['reference']:.1f}, full {sec['full']:.1f}, "
          f"checkpoint {sec['checkpoint']:.1f}; full/reference {res['full_over_reference_time']:.2f}, "
          f"checkpoint/reference {res['checkpoint_over_reference_time']:.2f} (target <= 0.5), "
          f"checkpoint/full {res['checkpoint_over_full_time']:.2f}")
    print(f"checkpoint vs full gradient rel. error: images {res['checkpoint_vs_full_rel_error']['images']:.2e}, "
          f"lr {res['checkpoint_vs_full_rel_error']['lr']:.2e} (float32)")

    if a.reference_seconds:
        res["full_over_reference_code_time"] = sec["full"] / a.reference_seconds
        print(f"full/reference code's measured {a.reference_seconds:g} s: {res['full_over_reference_code_time']:.2f}"
              " (measured elsewhere, not in this run)")
    if a.float64_ipc:
        res["float64_check"] = float64_check(a.float64_ipc, a.syn_steps)
        c = res["float64_check"]
        print(f"float64 check (IPC {a.float64_ipc}, syn_steps {a.syn_steps}), image-gradient rel. errors: checkpoint vs "
              f"full in float64 {c['checkpoint64_vs_full64']:.2e} (exactness); float32 full vs float64 full "
              f"{c['full32_vs_full64']:.2e} (float32 noise floor); float32 checkpoint vs float64 full "
              f"{c['checkpoint32_vs_full64']:.2e}")

    res["tesla_vs_full_rel_error"] = {}
    for lr in (0.01, 0.5):
        g_full = ours("full", student, theta0, target, images, labels, dsa, plan, lr=lr)
        g_tesla = ours("tesla", student, theta0, target, images, labels, dsa, plan, lr=lr)
        e = {"images": rel(g_tesla[0], g_full[0]), "lr": rel(g_tesla[1], g_full[1]),
             "cosine_images": float(F.cosine_similarity(g_tesla[0].flatten(), g_full[0].flatten(), dim=0))}
        res["tesla_vs_full_rel_error"][str(lr)] = e
        print(f"tesla vs full at lr {lr}: image-gradient rel. error {e['images']:.3e} (cosine "
              f"{e['cosine_images']:.5f}), lr-gradient rel. error {e['lr']:.3e}")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=2))
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
