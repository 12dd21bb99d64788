"""Service names and well-known ports -> responders (``--respond NAME``)."""

from __future__ import annotations

from collections.abc import Callable

from udpkit.errors import UsageError
from udpkit.services.base import Responder
from udpkit.services.classic import Daytime, Discard, Echo, Time

__all__ = ["PORTS", "RESPONDERS", "responder"]

RESPONDERS: dict[str, Callable[[], Responder]] = {
    "discard": Discard,
    "echo": Echo,
    "daytime": Daytime,
    "time": Time,
}

#: The well-known port of each service (``/etc/services``).
PORTS = {"echo": 7, "discard": 9, "daytime": 13, "time": 37}


def responder(name: str) -> Responder:
    """A fresh responder for ``name``; an unknown name is a UsageError listing the known ones."""
    factory = RESPONDERS.get(name)
    if factory is None:
        raise UsageError(f"unknown service {name!r} (known: {', '.join(sorted(RESPONDERS))})")
    return factory()
