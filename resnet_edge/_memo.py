"""Keep the last result of an expensive step: a loaded model, a conversion, a model's reference outputs."""

from __future__ import annotations

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
