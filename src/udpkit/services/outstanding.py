"""What a probe asked and has not yet seen answered — transaction ids, nonces, transmit stamps — so
that only an answer to one of our own requests is recognised. Bounded: a long scan sends one
request per port, and a table that only grew would hold every one of them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["MAX_OUTSTANDING", "Outstanding"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Requests remembered per probe; the oldest is forgotten first (its answer is long overdue).
MAX_OUTSTANDING = 4096


class Outstanding(Generic[K, V]):
    """``remember(key, value)`` per request; ``key in outstanding`` and ``get(key)`` per answer."""

    def __init__(self, limit: int = MAX_OUTSTANDING) -> None:
        self._limit = limit
        self._items: OrderedDict[K, V | None] = OrderedDict()

    def remember(self, key: K, value: V | None = None) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self._limit:
            self._items.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def __len__(self) -> int:
        return len(self._items)
