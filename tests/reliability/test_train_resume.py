"""``train_classifier`` stopped after any epoch and resumed from its state ends bitwise where an
uninterrupted run ends (weights and buffers), through a ``torch.save``/``weights_only`` round trip."""

from __future__ import annotations

import io

import pytest
import torch

from dsdistill.augment import DSA
from dsdistill.models import build_model
from dsdistill.train import TrainSettings, train_classifier

EPOCHS = 5


class Stop(Exception):
    pass


def run(images, labels, settings, soft=None, stop_at=None, resume=None):
    model = build_model("convnet", 4, (1, 16, 16), seed=3)
    generator = torch.Generator().manual_seed(11)
    saved = {}

    def checkpoint(epochs_done, state):
        if epochs_done == stop_at:
            buf = io.BytesIO()
            torch.save(state(), buf)
            buf.seek(0)
            saved["state"] = torch.load(buf, weights_only=True)
            raise Stop

    try:
        train_classifier(model, images, labels, settings, augment=DSA("color_crop_cutout_flip_scale_rotate"),
                         soft_targets=soft, generator=generator, resume=resume, checkpoint=checkpoint)
    except Stop:
        return saved["state"]
    return model.state_dict()


@pytest.mark.parametrize("optimizer,soft", [("sgd", False), ("adamw", True)])
def test_resume_after_every_epoch_is_bitwise_identical(optimizer, soft):
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(24, 1, 16, 16, generator=g), torch.arange(4).repeat_interleave(6)
    targets = torch.softmax(torch.randn(24, 4, generator=g), 1) if soft else None
    settings = TrainSettings(epochs=EPOCHS, batch_size=10, optimizer=optimizer, decay_at=(0.4, 0.8))
    full = run(images, labels, settings, targets)
    for stop_at in range(1, EPOCHS):
        state = run(images, labels, settings, targets, stop_at=stop_at)
        assert state["epoch"] == stop_at
        resumed = run(images, labels, settings, targets, resume=state)
        assert full.keys() == resumed.keys()
        assert all(torch.equal(full[k], resumed[k]) for k in full), f"differs after resuming at epoch {stop_at}"
    other = run(images, labels, TrainSettings(epochs=EPOCHS, batch_size=10, optimizer=optimizer, lr=0.02), targets)
    assert not all(torch.equal(full[k], other[k]) for k in full)  # the comparison can fail
