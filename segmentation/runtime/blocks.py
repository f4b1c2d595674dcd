"""Values computed once within a block and released at its end (``make run``'s steps share
persisted reads of inputs that do not change while they run)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

V = TypeVar("V")


class SharedWithin(Generic[V]):
    """A registry open only within :meth:`block`: :meth:`get` computes a key's value once
    there, and the block's end calls ``release`` on every value. Blocks nest: the outermost
    owns the values."""

    def __init__(self, release: Callable[[V], object]) -> None:
        self._release = release
        self._values: dict[Hashable, V] | None = None

    @property
    def open(self) -> bool:
        """Within a block."""
        return self._values is not None

    @contextlib.contextmanager
    def block(self) -> Iterator[None]:
        if self._values is not None:  # nested: the outer block owns the values
            yield
            return
        self._values = {}
        try:
            yield
        finally:
            values, self._values = self._values, None
            for value in values.values():
                self._release(value)

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """``key``'s value, made on first use within the block (outside one: ``make()``, the
        caller's to release)."""
        if self._values is None:
            return make()
        if key not in self._values:
            self._values[key] = make()
        return self._values[key]
