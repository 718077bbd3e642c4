"""One small generic registry for strategies, benchmarks, instruction sources and metrics.

Adding a method is registering a name; there is no enum to edit. A duplicate name is an
error at import time, an unknown name is a UserError that lists what exists.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import UserError, listing, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered by {self._items[name]!r}")
            self._items[name] = obj
            return obj

        return add

    def unregister(self, name: str) -> T | None:
        """Remove ``name`` (a test's temporary entry) and return what it held; None if absent."""
        return self._items.pop(name, None)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UserError(
                f"unknown {self.kind} '{name}'.{suggest(name, self._items)} Valid: {listing(self._items)}"
            )
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
