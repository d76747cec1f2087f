"""Keep the last result of an expensive step: a loaded model, a conversion, a model's reference outputs."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class KeepLast:
    """The result for the most recent key only, since what is kept can be hundreds of MB.

    Exporting several formats of one model in one process asks for the same result once per format.
    """

    def __init__(self) -> None:
        self._entry: tuple[Hashable, Any] | None = None

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        if self._entry is None or self._entry[0] != key:
            self._entry = None  # let the old result go before the new one is built
            self._entry = (key, compute())
        return self._entry[1]

    @property
    def last(self) -> Any:
        return None if self._entry is None else self._entry[1]

    def clear(self) -> None:
        self._entry = None


class BoundedCache:
    """Results by key, the most recent first, up to ``max_bytes`` in all: the Keras reference outputs of each
    verification batch, shared by the several formats checked on the same images. A result larger than the
    bound is returned and not kept (the feature maps of a big backbone)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: Hashable, compute: Callable[[], T], size: Callable[[T], int]) -> T:
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key][0]
        value = compute()
        nbytes = size(value)
        if nbytes <= self.max_bytes:
            self._entries[key] = (value, nbytes)
            self._bytes += nbytes
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
        return value

    def values(self) -> list[Any]:
        return [value for value, _ in self._entries.values()]

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0


class PerModel:
    """Results derived from one object (a Keras model), kept only while that object lives.

    Keyed by the object itself (weakly), never by ``id()``, which a later object may reuse; ``key`` adds what else
    the result depends on (the weights' digest: a model trained further in place is another model). Each object
    keeps its last result, or a ``BoundedCache`` of results when ``max_bytes`` is given.
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self._table: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def get(self, owner: Any, key: Hashable, compute: Callable[[], T], size: Callable[[T], int] | None = None) -> T:
        if self.max_bytes is None:
            kept = self._table.get(owner)
            if kept is None or kept[0] != key:
                self._table.pop(owner, None)  # let the old result go before the new one is built
                kept = self._table[owner] = (key, compute())
            return kept[1]
        cache = self._table.setdefault(owner, BoundedCache(self.max_bytes))
        return cache.get(key, compute, size or (lambda value: 0))

    def entries(self, owner: Any) -> list[Any]:
        """What is kept for ``owner`` (for tests)."""
        kept = self._table.get(owner)
        if kept is None:
            return []
        return kept.values() if isinstance(kept, BoundedCache) else [kept[1]]

    def clear(self) -> None:
        self._table.clear()
