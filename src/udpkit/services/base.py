"""The responder interface every service implements."""

from __future__ import annotations

from typing import Protocol

from udpkit.addr import Endpoint

__all__ = ["Reply", "Responder"]

#: What a responder answers: one datagram, several, or ``None`` (stay silent).
Reply = bytes | list[bytes] | None


class Responder(Protocol):
    """Turns one received datagram into replies; ``now`` is the receive time (UNIX seconds)."""

    name: str

    def handle(self, datagram: bytes, peer: Endpoint, now: float) -> Reply: ...
