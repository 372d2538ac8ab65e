"""Name -> implementation tables. A duplicate name is an error; an unknown one says 'did you mean'."""

from typing import Any, Dict, Generic, TypeVar

from harness.errors import HarnessError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str):
        self.what = what
        self._items: Dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.what} '{name}' is registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        if name not in self._items:
            raise HarnessError(
                f"unknown {self.what} '{name}'{did_you_mean(name, self._items)};"
                f" known: {', '.join(sorted(self._items))}"
            )
        return self._items[name]

    def names(self):
        return sorted(self._items)

    def __contains__(self, name: Any) -> bool:
        return name in self._items
