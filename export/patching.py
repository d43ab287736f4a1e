"""How :mod:`export.graph_fixes` swaps a function while tracing and restores it afterwards.

Each helper is a context manager: inside it the export-friendly function is in place, on exit
(also on an exception) the original is back, so a patch never outlives the export.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["per_instance", "swapped", "swapped_on_instances", "together"]


@contextlib.contextmanager
def swapped(namespace: Any, name: str, replacement: Callable[..., Any]) -> Iterator[None]:
    """``namespace.name`` is ``replacement`` inside the context."""
    original = getattr(namespace, name)
    setattr(namespace, name, replacement)
    try:
        yield
    finally:
        setattr(namespace, name, original)


@contextlib.contextmanager
def swapped_on_instances(model: Any, name: str, replacement: Callable[..., Any]) -> Iterator[None]:
    """Every submodule's ``name`` attribute is ``replacement`` inside the context."""
    originals = [(m, getattr(m, name)) for m in model.modules() if hasattr(m, name)]
    for module, _ in originals:
        setattr(module, name, replacement)
    try:
        yield
    finally:
        for module, original in originals:
            setattr(module, name, original)


@contextlib.contextmanager
def per_instance(
    modules: list[Any], name: str, make: Callable[[Any], Callable[..., Any]]
) -> Iterator[None]:
    """Set ``module.<name> = make(module)`` on each instance while tracing; deleting the
    instance attribute afterwards makes the class's own method visible again."""
    for module in modules:
        setattr(module, name, make(module))
    try:
        yield
    finally:
        for module in modules:
            delattr(module, name)


def together(
    *factories: Callable[[Any], contextlib.AbstractContextManager[None]],
) -> Callable[[Any], contextlib.AbstractContextManager[None]]:
    """One patch factory entering each of ``factories`` (each decides whether it applies)."""

    @contextlib.contextmanager
    def combined(model: Any) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for factory in factories:
                stack.enter_context(factory(model))
            yield

    return combined
