"""A small name -> object registry shared by architectures, attacks, metrics, defenses and formats.

Modelled on timm's registry: a decorator registers under a name, ``list()`` filters with a glob,
and an unknown name gets an error that lists close matches and every available name.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Generic, Iterator, Sequence, TypeVar

from .errors import ConfigError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind  # e.g. "architecture", "attack": used in error messages
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            # a class or function: T is unbounded, so mypy cannot know it has a __name__
            key = name or getattr(obj, "name", None) or obj.__name__  # type: ignore[attr-defined]
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._items), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        return f"unknown {self.kind} {name!r}: {hint}available: {', '.join(sorted(self._items))}"

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]


def check_choice(value: object, choices: Sequence[str], where: str) -> str:
    """``value`` when it is one of a setting's fixed names (e.g. the budgets); else the error naming ``where``
    (the flag, or the config file and key), the names, and the closest one. Owners of a setting call this."""
    if not isinstance(value, str) or value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}; {hint}pick one of them")
    return value
