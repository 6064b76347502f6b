"""Expert trajectories for trajectory matching (MTT, FTD, AST, DATM).

``train_experts`` trains ``N`` networks on real data with one of the recipes of
:mod:`dsdistill.experts.recipes` and stores each one's flat parameters after every epoch in
``DIR/expert_XXXXX.h5``; :class:`ExpertStore` reads such a directory back, validated.

Differences from the reference (``mtt-distillation/buffer.py``, FTD ``buffer_FTD.py``, AST ``buffer.py``):

* Experts train on the training split minus the toolkit's held-out validation split (10% per
  class); validation and test accuracy are measured once, after the last epoch (the references
  train on the whole training set and print test accuracy every epoch).
* Randomness comes from explicit generators derived from (seed, expert index, epoch); the
  references reseed the global RNG from the clock in ``get_network``.
* Trajectories are HDF5 files (one per expert, fp32 or fp16, only the epochs asked for), not
  pickled lists of tensors in ``replay_buffer_{n}.pt``.
* AST's published commits disagree (lr 0.003 or 0.004, loss scale over 5, 10 or 11 epochs, penalty
  weight 0.1 or 2, penalty on or off by default); we follow MATCHING.md §5.1: lr 0.003, x0.6,
  loss scale ``0.5 + 0.05 e`` for e < 10, penalty weight 2, always on.

Example:
    >>> from dsdistill.experts import ExpertStore, unflatten_params      # doctest: +SKIP
    >>> store = ExpertStore.open("runs/experts/mnist_mtt")
    >>> theta0 = store.snapshot(0, 2)                                     # (P,) float32
    >>> params = unflatten_params(theta0, store.param_names, store.param_shapes)
"""

from dsdistill.experts.params import flatten_params, load_flat_, param_spec, unflatten_params
from dsdistill.experts.recipes import RECIPES, ExpertRecipe, get_recipe
from dsdistill.experts.store import ExpertStore, read_expert_header, write_expert


def train_experts(*args, **kwargs):
    """Train and store N experts; see :func:`dsdistill.experts.run.train_experts`."""
    from dsdistill.experts.run import train_experts as _train

    return _train(*args, **kwargs)


__all__ = ["ExpertStore", "ExpertRecipe", "RECIPES", "get_recipe", "flatten_params", "unflatten_params",
           "param_spec", "load_flat_", "train_experts", "write_expert", "read_expert_header"]
