"""Networks used to distil and to evaluate: the DC ConvNet family, MLP, LeNet, AlexNet, VGG-11,
ResNet-18, and the committee networks MobileNetV2, ShuffleNetV2, DenseNet-121 and ResNet-50, all
built through :func:`build_model` and registered in :data:`MODELS`.

Importing this package registers every model.
"""

from dsdistill.registry import MODELS
from dsdistill.models.convnet import ConvNet
from dsdistill.models.classic import MLP, VGG11, AlexNet, LeNet
from dsdistill.models.resnet import ResNet18
from dsdistill.models.torchvision_zoo import DenseNet121, MobileNetV2, ResNet50, ShuffleNetV2
from dsdistill.models.zoo import build_model

__all__ = ["MODELS", "ConvNet", "MLP", "LeNet", "AlexNet", "VGG11", "ResNet18", "MobileNetV2",
           "ShuffleNetV2", "DenseNet121", "ResNet50", "build_model"]
