"""Named evaluation protocols: frozen, documented recipes for training students on a synthetic set.

``dc``  -- DatasetCondensation's protocol (DC/DSA/DM): ConvNet student, SGD lr 0.01, momentum 0.9,
          weight decay 5e-4, batch 256, 1000 epochs with lr x0.1 after half, DSA (independent
          per-sample parameters, one op group per batch) on every mini-batch, hard labels.
``tm``  -- trajectory matching (MTT/FTD/DATM): the ``dc`` recipe, but the student lr is the one
          learned with the set, and soft labels (when stored) are trained with soft cross-entropy.

Epoch counting: we train exactly ``epochs`` epochs and multiply the lr by 0.1 after
``round(epochs * 0.5)`` of them. (The reference loop runs ``Epoch + 1`` epochs and decays at
``Epoch // 2 + 1``; the difference is one epoch.) The accuracy reported is the final epoch's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dsdistill.registry import EVALUATORS
from dsdistill.synthetic import SyntheticSet
from dsdistill.train import TrainSettings


@dataclass(frozen=True)
class Protocol:
    """A student-training recipe.

    Attributes:
        name: Registry key.
        settings: Optimiser/schedule.
        augment: ``"dsa"`` or ``"none"``.
        use_learned_lr: Take the student lr from the set when it has one.
        use_soft_labels: Train on stored soft labels when present.
        description: One line for reports.
    """

    name: str
    settings: TrainSettings
    augment: str = "dsa"
    use_learned_lr: bool = False
    use_soft_labels: bool = False
    description: str = ""

    def with_overrides(self, **overrides) -> "Protocol":
        """A copy with TrainSettings fields replaced (None values ignored).

        An explicit ``lr`` also wins over a set's learned lr (``use_learned_lr`` is switched off):
        ``evaluate --lr`` on an ``mtt`` set trains at the lr asked for, not the learned one.
        """
        changes = {k: v for k, v in overrides.items() if v is not None}
        learned = self.use_learned_lr and "lr" not in changes
        return dataclasses.replace(self, settings=dataclasses.replace(self.settings, **changes), use_learned_lr=learned)

    def settings_for(self, syn: SyntheticSet | None) -> TrainSettings:
        """The settings for training on ``syn`` (learned lr applied when the protocol uses it)."""
        if syn is not None and self.use_learned_lr and syn.lr is not None:
            return dataclasses.replace(self.settings, lr=float(syn.lr))
        return self.settings


DC = EVALUATORS.register("dc")(Protocol(
    "dc", TrainSettings(), augment="dsa",
    description="ConvNet-style student, SGD 0.01 m0.9 wd5e-4, batch 256, 1000 ep, lr x0.1 at half, DSA"))
TM = EVALUATORS.register("tm")(Protocol(
    "tm", TrainSettings(), augment="dsa", use_learned_lr=True, use_soft_labels=True,
    description="dc protocol with the set's learned lr and soft cross-entropy on stored soft labels"))


def protocol_for(syn: SyntheticSet, name: str | None = None) -> Protocol:
    """The protocol named, else the one the file asks for, else ``tm`` if it has a learned lr, else ``dc``."""
    if name:
        return EVALUATORS.get(name)
    if syn.protocol and syn.protocol in EVALUATORS:
        return EVALUATORS.get(syn.protocol)
    if syn.replay is not None and "softlabel" in EVALUATORS:  # stored replay labels
        return EVALUATORS.get("softlabel")
    return TM if (syn.lr is not None or syn.soft_labels is not None) else DC
