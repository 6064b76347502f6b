import torch

from dsdistill.models import build_model
from dsdistill.train import TrainSettings, accuracy, soft_cross_entropy, train_classifier


def test_soft_cross_entropy_equals_hard_ce_on_one_hot():
    logits = torch.randn(6, 4)
    labels = torch.randint(0, 4, (6,))
    onehot = torch.nn.functional.one_hot(labels, 4).float()
    torch.testing.assert_close(soft_cross_entropy(logits, onehot), torch.nn.functional.cross_entropy(logits, labels))


def test_training_learns_the_tiny_task(tiny_real):
    model = build_model("convnet", 4, tiny_real.image_shape, seed=0)
    train_classifier(model, tiny_real.train_images, tiny_real.train_labels,
                     TrainSettings(epochs=8, batch_size=32), generator=torch.Generator().manual_seed(0))
    assert accuracy(model, tiny_real.test_images, tiny_real.test_labels) > 0.9


def test_lr_schedule_decays_at_half():
    model = torch.nn.Linear(2, 2)
    seen = []
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    settings = TrainSettings(epochs=4, batch_size=4, lr=1.0)
    opt_holder = {}
    orig = torch.optim.SGD.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return orig(self, *a, **k)

    torch.optim.SGD.step = spy
    try:
        train_classifier(model, x, y, settings)
    finally:
        torch.optim.SGD.step = orig
    assert [round(v, 6) for v in seen] == [1.0, 1.0, 0.1, 0.1]
    del opt_holder
