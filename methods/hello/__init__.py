"""HeLlO (``hello``): label-light distillation with a LoRA-adapted CLIP label projector.

Modules: :mod:`.clip_loader` (open_clip model from a local weights file, never downloading;
dataset images -> CLIP input), :mod:`.lora` (LoRA adapters as weight parametrizations),
:mod:`.projector` (CLIP encoder + text-initialised head, trained on the teacher committee),
:mod:`.images` (RDED-style mosaics, the CLIP-feature image loss) and
:mod:`.condenser` (the ``hello`` condenser). The evaluation protocol is
:mod:`dsdistill.evaluators.hello`. open_clip is imported lazily, so importing this package works
without it; using the method without it raises one ConfigError.
"""

from dsdistill.methods.hello.condenser import HeLlO, HeLlOConfig

__all__ = ["HeLlO", "HeLlOConfig"]
