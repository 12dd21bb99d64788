"""The classic small services: echo (RFC 862), discard (RFC 863), daytime (RFC 867), time (RFC 868).

Over UDP each is one datagram in, at most one out; daytime and time ignore what they receive and
answer with the receive time they are given.
"""

from __future__ import annotations

import struct
import time as _time

from udpkit.addr import Endpoint
from udpkit.services.base import Reply

__all__ = ["Daytime", "Discard", "Echo", "RFC868_EPOCH_OFFSET", "Time"]

#: Seconds from 1900-01-01 (RFC 868's epoch) to 1970-01-01.
RFC868_EPOCH_OFFSET = 2_208_988_800
_TIME = struct.Struct("!I")  # RFC 868: a 32-bit count of seconds since 1900, modulo 2**32


class Discard:
    """RFC 863: "Any received datagram is thrown away." — the tutorial's ``/dev/null``."""

    name = "discard"
    replies = False  # the listener may skip building a datagram object for it
    uses_time = False

    def handle(self, datagram: bytes, peer: Endpoint, now: float) -> Reply:
        return None


class Echo:
    """RFC 862: "When a datagram is received, the data from it is sent back in an answering datagram."

    Empty datagrams are echoed too (an empty reply), as the RFC's rule covers every datagram.
    """

    name = "echo"
    uses_time = False  # the listener need not ask the kernel for receive timestamps

    def handle(self, datagram: bytes, peer: Endpoint, now: float) -> Reply:
        return datagram


class Daytime:
    """RFC 867: the date and time as ASCII text; the RFC suggests ``Weekday, Month Day, Year HH:MM:SS-Zone``."""

    name = "daytime"

    def handle(self, datagram: bytes, peer: Endpoint, now: float) -> Reply:
        return _time.strftime("%A, %B %d, %Y %H:%M:%S-UTC\r\n", _time.gmtime(now)).encode("ascii")


class Time:
    """RFC 868: the time as a 32-bit big-endian count of seconds since 1900-01-01 00:00 UTC.

    The count wraps in 2036; we send it modulo 2**32, which is what RFC 868 clients decode.
    """

    name = "time"

    def handle(self, datagram: bytes, peer: Endpoint, now: float) -> Reply:
        return _TIME.pack((int(now) + RFC868_EPOCH_OFFSET) % 2**32)
