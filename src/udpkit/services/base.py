"""The responder interface every service implements."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from udpkit.addr import Endpoint

__all__ = ["Evidence", "Reply", "Responder", "ServiceProbe"]

#: What a responder answers: one datagram, several, or ``None`` (stay silent).
Reply = bytes | list[bytes] | None


class Responder(Protocol):
    """Turns one received datagram into replies; ``now`` is the receive time (UNIX seconds)."""

    name: str

    def handle(self, datagram: bytes, peer: Endpoint, now: float) -> Reply: ...


class Evidence(NamedTuple):
    """What a reply proves: the ``protocol`` that answered and what it said (``detail``, plain JSON
    values: a probe's reading of the reply, such as an NTP server's stratum and offset)."""

    protocol: str
    detail: dict[str, Any]


class ServiceProbe(Protocol):
    """An application probe: the datagram to send and the recogniser of a genuine answer.

    ``classify`` must never raise on hostile bytes: a reply that is not the protocol's is ``None``
    (the port still answered, so it is open, but nothing more is claimed). ``now``: the send time
    for ``build`` and the receive time for ``classify`` (UNIX seconds), for probes that measure
    clocks or remember what they asked.
    """

    name: str

    def build(self, now: float) -> bytes: ...

    def classify(self, reply: bytes, now: float) -> Evidence | None: ...
