"""Trajectory matching: ``mtt``, ``ftd``, ``ast`` and ``datm`` (MATCHING.md 3-6, 10).

Modules: :mod:`.student` (the network on flat parameters), :mod:`.unroll` (the inner loop and
its ``full`` / ``checkpoint`` / ``tesla`` memory modes), :mod:`.base` (the shared outer loop,
learned lr, guards, checkpoints), :mod:`.init` (expert-guided initialisations) and one module per
method. Importing this package registers the four condensers.
"""

from . import ast, datm, ftd, mtt  # noqa: F401  (registration side effects)
