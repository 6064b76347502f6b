"""How far a synthetic set carries a student along expert segments, and what that student knows.

Trajectory matching optimises a set for one thing: from an expert snapshot ``theta_0`` (epoch s),
``syn_steps`` SGD steps on the set should land near the snapshot ``theta*`` at epoch s + M. This
script measures that objective on a finished set, for any set (a ``dm`` or random set too, with
``--lr``), without changing anything:

* ``loss``: the matching loss ``||theta_N - theta*||^2 / ||theta_0 - theta*||^2`` (1 = no closer),
* ``acc_start`` / ``acc_end`` / ``acc_target``: test accuracy (%) of ``theta_0``, ``theta_N`` and
  ``theta*`` on the first ``--test-images`` test images (``acc_end`` is the "horizon" accuracy:
  what the set teaches within the segment it was made for),

averaged over every expert, the given start epochs and ``--repeats`` draws of the batches and DSA.
Comparing ``acc_end`` with the accuracy of the usual evaluation (300 epochs from scratch) tells
whether a set falls short at the segments themselves or only when trained far beyond them.

Usage: python bench/trajectory_horizon.py SET.h5 --experts DIR --starts 0,1,2,3 --expert-epochs 2
       --syn-steps 20 [--batch-syn 0] [--lr LR] [--momentum 0] [--repeats 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dsdistill.augment import DSA, strategy_for
from dsdistill.data import load_real
from dsdistill.experts import ExpertStore
from dsdistill.experts.params import load_flat_
from dsdistill.io.hdf5 import load_synthetic
from dsdistill.train import accuracy
from dsdistill.methods.trajectory.student import FunctionalStudent
from dsdistill.methods.trajectory.unroll import Inner, make_plan, matching_loss, unroll


def student_steps(inner: Inner, theta0: torch.Tensor, images: torch.Tensor, lr: float,
                  soft: torch.Tensor | None) -> torch.Tensor:
    """``theta_N`` ``(P,)`` after the plan's steps: the condensers' own forward unroll, no graph kept."""
    with torch.no_grad():
        return unroll(inner, theta0, images, torch.tensor(float(lr)), soft, "checkpoint")[-1]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("set")
    ap.add_argument("--experts", required=True)
    ap.add_argument("--starts", required=True, help="comma-separated start epochs s")
    ap.add_argument("--expert-epochs", type=int, default=2)
    ap.add_argument("--syn-steps", type=int, default=20)
    ap.add_argument("--batch-syn", type=int, default=0)
    ap.add_argument("--lr", type=float, default=None, help="student lr (default: the set's learned lr)")
    ap.add_argument("--momentum", type=float, default=0.0, help="student momentum (ast: 0.9)")
    ap.add_argument("--no-dsa", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--test-images", type=int, default=2000, help="first N test images (0: all 10,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    t0 = time.process_time()

    syn = load_synthetic(args.set)
    lr = args.lr if args.lr is not None else syn.lr
    if lr is None:
        ap.error(f"{args.set} has no learned lr; pass --lr")
    real = load_real(syn.dataset)
    store = ExpertStore.open(args.experts)
    student = FunctionalStudent(store.build_model())
    soft = None if syn.soft_labels is None else syn.soft_labels.probabilities().clamp_min(1e-12).log()
    dsa = None if args.no_dsa else DSA(strategy_for(real.name), align_corners=True)
    gen = torch.Generator().manual_seed(args.seed)
    starts = [int(s) for s in args.starts.split(",")]

    n_test = args.test_images or len(real.test_labels)
    test_x, test_y = real.test_images[:n_test], real.test_labels[:n_test]

    probe = store.build_model().eval()  # one network, its weights overwritten per measurement

    def test_acc(flat: torch.Tensor) -> float:
        return 100 * accuracy(load_flat_(probe, flat), test_x, test_y)

    rows = []
    for e in range(store.num_experts):
        for s in starts:
            theta0, target = store.snapshots(e, [s, s + args.expert_epochs])
            acc0, acc_t = test_acc(theta0), test_acc(target)
            for r in range(args.repeats):
                plan = make_plan(syn.num_images, syn.image_shape, args.syn_steps, args.batch_syn, dsa, gen)
                inner = Inner(student, plan, dsa, syn.labels, momentum=args.momentum)
                theta_n = student_steps(inner, theta0, syn.images, lr, soft)
                rows.append(dict(expert=e, start=s, repeat=r, loss=float(matching_loss(theta_n, theta0, target)),
                                 acc_start=acc0, acc_end=test_acc(theta_n), acc_target=acc_t))
            last = rows[-args.repeats:]
            print(f"expert {e} start {s}: loss {sum(x['loss'] for x in last) / len(last):.3f}  test acc "
                  f"theta_0 {acc0:.2f} -> theta_N {sum(x['acc_end'] for x in last) / len(last):.2f} "
                  f"(target {acc_t:.2f})", flush=True)
    mean = {k: sum(x[k] for x in rows) / len(rows) for k in ("loss", "acc_start", "acc_end", "acc_target")}
    out = dict(set=str(args.set), method=syn.method, lr=lr, experts=args.experts, starts=starts,
               expert_epochs=args.expert_epochs, syn_steps=args.syn_steps, batch_syn=args.batch_syn,
               momentum=args.momentum, dsa=dsa is not None, repeats=args.repeats, test_images=n_test,
               mean=mean, rows=rows,
               cpu_seconds=round(time.process_time() - t0, 1))
    print(f"mean: loss {mean['loss']:.3f}  test acc theta_0 {mean['acc_start']:.2f} -> theta_N {mean['acc_end']:.2f} "
          f"(target {mean['acc_target']:.2f}); {out['cpu_seconds']} CPU-s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)  # here, not in main(): importing callers keep their thread count
    main()
