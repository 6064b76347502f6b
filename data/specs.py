"""Static facts about the image datasets the catalogue knows: classes, shapes, and the
normalisation statistics the field uses (DatasetCondensation ``get_dataset``; MATCHING.md 1.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DIGITS = [str(i) for i in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is, independent of where its files live.

    Attributes:
        name: Catalogue key (``mnist``, ``cifar10``...).
        title: Display name.
        num_classes: K.
        shape: ``(C, H, W)`` of one image.
        mean: Per-channel normalisation mean in [0, 1] pixel units.
        std: Per-channel normalisation std.
        class_names: Length-K names (empty when read from the files).
        how_to_get: One sentence telling the user how to obtain the files.
    """

    name: str
    title: str
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] = field(default_factory=list)
    how_to_get: str = ""


SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("mnist", "MNIST", 10, (1, 28, 28), (0.1307,), (0.3081,), DIGITS,
                    "a copy ships with dsdistill; or put the official *-ubyte(.gz) files in DATA_ROOT/MNIST/raw, "
                    "or pass --download"),
        DatasetSpec("fashionmnist", "FashionMNIST", 10, (1, 28, 28), (0.2861,), (0.3530,), FASHION_CLASSES,
                    "put the official *-ubyte(.gz) files in DATA_ROOT/FashionMNIST/raw, or pass --download"),
        DatasetSpec("cifar10", "CIFAR-10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010),
                    CIFAR10_CLASSES,
                    "put torchvision's cifar-10-batches-py or the array layout CIFAR10-npy-xz/ in DATA_ROOT, "
                    "or pass --download"),
        DatasetSpec("cifar100", "CIFAR-100", 100, (3, 32, 32), (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762),
                    [], "put torchvision's cifar-100-python in DATA_ROOT, or pass --download"),
        DatasetSpec("svhn", "SVHN", 10, (3, 32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), DIGITS,
                    "put train_32x32.mat and test_32x32.mat in DATA_ROOT/SVHN (needs scipy), or pass --download"),
    ]
}

#: MTT, FTD, DATM and DD-Ranking normalise CIFAR-100 with these CIFAR-10 statistics (a quirk; see
#: MATCHING.md 1.2). Only used when explicitly requested.
CIFAR10_STATS = (SPECS["cifar10"].mean, SPECS["cifar10"].std)
