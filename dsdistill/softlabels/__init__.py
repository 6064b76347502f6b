"""Stored soft labels with replayable augmentation (FKD / SRe2L relabel, CV-DD BSSL).

Example:
    >>> import torch
    >>> from dsdistill.models import build_model
    >>> from dsdistill.softlabels import relabel
    >>> teacher = build_model("convnet", 4, (1, 16, 16), seed=0)
    >>> images = torch.randn(8, 1, 16, 16)
    >>> labels = relabel(images, [teacher], None, epochs=2, generator=torch.Generator().manual_seed(0))
    >>> labels.values.shape, labels.values.dtype
    (torch.Size([2, 8, 4]), torch.float16)
    >>> x = labels.inputs(images, 1, torch.tensor([3, 5]))  # what the teacher saw at epoch 1
"""

from dsdistill.softlabels.relabel import bn_train_copies, combine, label_batch, relabel, relabel_like, teacher_mode
from dsdistill.softlabels.params import AugParams, augment, cutmix_weights, draw_params, resized_crop, sample_crops, \
    sample_cutmix
from dsdistill.softlabels.replay import ReplayLabels, expand_topk

__all__ = ["ReplayLabels", "relabel", "relabel_like", "AugParams", "augment", "cutmix_weights", "draw_params",
           "expand_topk", "resized_crop", "sample_crops", "sample_cutmix", "combine", "label_batch", "teacher_mode",
           "bn_train_copies"]
