import pytest

from dsdistill.errors import UnknownNameError
from dsdistill.registry import Registry


def test_register_get_and_normalised_names():
    reg = Registry("thing")

    @reg.register("k-center")
    def kc():
        return 1

    assert reg.get("k_center") is kc and reg.get("K-Center") is kc
    assert "k-center" in reg and reg.names() == ["k-center"] and len(reg) == 1


def test_conflicting_duplicate_raises_but_same_object_is_fine():
    reg = Registry("thing")
    obj = object()
    reg.register("a")(obj)
    reg.register("a")(obj)
    with pytest.raises(KeyError, match="already registered"):
        reg.register("a")(object())


def test_unknown_name_lists_choices():
    reg = Registry("method")
    reg.register("dm")(object())
    reg.register("random")(object())
    with pytest.raises(UnknownNameError) as err:
        reg.get("nope")
    assert str(err.value) == "unknown method 'nope'; choose one of: dm, random"


def test_all_builtin_registries_populated():
    from dsdistill.api import catalogue

    cat = catalogue()
    assert {"dm", "random", "herding", "k-center"} <= set(cat["methods"])
    assert {"mnist", "cifar10", "cifar100", "fashionmnist", "svhn"} <= set(cat["datasets"])
    assert {"convnet", "resnet18", "vgg11", "alexnet", "lenet", "mlp"} <= set(cat["models"])
    assert {"dc", "tm"} <= set(cat["protocols"])


def test_same_name_from_another_module_raises_double_import_hazard():
    reg = Registry("method")

    class A:
        pass

    class B:
        pass

    B.__qualname__ = A.__qualname__
    B.__module__ = "methods.dm"  # what `import methods.dm` from the repo root would define
    reg.register("dm")(A)
    with pytest.raises(KeyError, match="already registered"):
        reg.register("dm")(B)
