"""Reading a config from checkpoint shapes: a lookup that names what is missing."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import StateDictError


def shape_reader(shapes: dict[str, tuple[int, ...]], model: str, describe: str, fix: str) -> Callable[[str], tuple]:
    """shape(name) → the tensor's shape, or a StateDictError saying which tensor of `model` is missing."""
    def shape(name: str) -> tuple[int, ...]:
        if name not in shapes:
            raise StateDictError(f"tensor {name!r} of {model}", f"no such tensor in {describe}", fix)
        return shapes[name]
    return shape
