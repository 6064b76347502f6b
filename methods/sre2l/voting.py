"""CV-DD committee voting: which teachers recover IPC index ``i`` and with which weights.

Weights (``recover/utils_recover.py`` ``load_recover_model``; SOFTLABEL.md section 2):

* ``prior``: ``softmax(prior_m / T)`` over the selected voters, priors in percent (CV-DD's are
  percentages), ``T = 5`` for synthesis and ``T = 10`` for the labels;
* ``equal``: ``1 / M`` each;
* ``random``: uniform random numbers normalised to sum 1 (drawn from the run's generator).

Voter schedules (``recover.py`` ``model_setting``), one voter set per IPC index ``i``:

* ``top2``: the two teachers with the best priors, for every index (IPC 1, setting 4);
* ``pairs``: all ``M (M - 1) / 2`` pairs in committee order, index ``i`` takes pair ``i mod #pairs``
  (IPC 10 with 5 teachers = the 10 pairs, setting 5);
* ``random_pairs``: two teachers sampled without replacement per index (IPC 50, setting 3);
* ``all``: every teacher at every index;
* ``auto``: ``top2`` at IPC 1, ``pairs`` below IPC 50, ``random_pairs`` from IPC 50.

Priors are the teachers' *validation* accuracies. CV-DD's hard-coded priors are post-evaluation
test accuracies of sets distilled by each model, i.e. test-set leakage (SOFTLABEL.md (b).2); here
nothing that touches the test split can reach a weight or a schedule.
"""

from __future__ import annotations

from itertools import combinations

import torch

SCHEDULES = ("auto", "top2", "pairs", "random_pairs", "all")
WEIGHTINGS = ("prior", "equal", "random")


def resolve_schedule(schedule: str, ipc: int) -> str:
    """The concrete schedule ``auto`` stands for at this IPC."""
    if schedule != "auto":
        return schedule
    return "top2" if ipc == 1 else ("pairs" if ipc < 50 else "random_pairs")


def voter_schedule(priors: list[float], ipc: int, schedule: str, generator: torch.Generator) -> list[list[int]]:
    """Teacher indices (into the committee) voting at each IPC index.

    Args:
        priors: Per-teacher priors (validation accuracy, percent), committee order.
        ipc: Images per class.
        schedule: One of :data:`SCHEDULES`.
        generator: For ``random_pairs``.

    Returns:
        ``ipc`` lists of teacher indices (sorted, committee order).
    """
    m = len(priors)
    schedule = resolve_schedule(schedule, ipc)
    if schedule not in SCHEDULES:
        raise ValueError(f"voters must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if m == 1 or schedule == "all":
        return [list(range(m)) for _ in range(ipc)]
    if schedule == "top2":
        top = sorted(sorted(range(m), key=lambda j: -priors[j])[:2])  # stable: ties keep committee order
        return [list(top) for _ in range(ipc)]
    if schedule == "pairs":
        pairs = list(combinations(range(m), 2))
        return [list(pairs[i % len(pairs)]) for i in range(ipc)]
    return [sorted(torch.randperm(m, generator=generator)[:2].tolist()) for _ in range(ipc)]


def voter_weights(priors: list[float], weighting: str, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """``(M,)`` float64 weights summing to 1 for teachers with these priors."""
    p = torch.tensor(priors, dtype=torch.float64)
    if weighting == "prior":
        if not temperature > 0:
            raise ValueError("the weight temperature must be positive")
        return torch.softmax(p / temperature, 0)
    if weighting == "equal":
        return torch.full_like(p, 1.0 / len(p))
    if weighting == "random":
        r = torch.rand(len(p), generator=generator, dtype=torch.float64)
        return r / r.sum()
    raise ValueError(f"voter_weights must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
