"""A single generic registry used for condensers, models, datasets and evaluation protocols.

Example:
    >>> from dsdistill.registry import Registry
    >>> THINGS = Registry("thing")
    >>> @THINGS.register("a")
    ... def make_a(): return 1
    >>> THINGS.get("a")()
    1
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from dsdistill.errors import UnknownNameError

T = TypeVar("T")


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _same_definition(a: object, b: object) -> bool:
    """True for two objects defined at the same place (a module reload), False across modules."""
    ident = (getattr(a, "__module__", None), getattr(a, "__qualname__", None))
    return ident[1] is not None and ident == (getattr(b, "__module__", None), getattr(b, "__qualname__", None))


class Registry(Generic[T]):
    """Maps names to objects (classes or factories).

    Names are case-insensitive and ``-``/``_`` are interchangeable (``k-center`` == ``k_center``).
    Registering a name twice for *different* objects raises, which also catches the double-import
    hazard (``methods.dm`` and ``dsdistill.methods.dm`` both registering "dm"); re-registering the
    same definition (a module reload) replaces the entry.

    Args:
        kind: What the registry holds, used in error messages ("method", "model", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._display: dict[str, str] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (default: its ``__name__``)."""

        def decorator(obj: T) -> T:
            display = name or getattr(obj, "__name__")
            key = _normalise(display)
            existing = self._items.get(key)
            if existing is not None and existing is not obj and not _same_definition(existing, obj):
                raise KeyError(f"{self.kind} '{display}' is already registered by {existing!r}")
            self._items[key] = obj
            self._display[key] = display
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the object registered as ``name``.

        Raises:
            UnknownNameError: listing the valid names.
        """
        key = _normalise(name)
        if key not in self._items:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}"
            )
        return self._items[key]

    def names(self) -> list[str]:
        """Sorted registered names, as they were registered."""
        return sorted(self._display.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _normalise(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


CONDENSERS: Registry = Registry("method")
MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("dataset")
EVALUATORS: Registry = Registry("evaluation protocol")
GRAPH_CONDENSERS: Registry = Registry("graph method")  # graph condensers (modality "graph"), see methods/mirage
GRAPH_DATASETS: Registry = Registry("graph dataset")  # loaders of dsdistill.data.graphs
