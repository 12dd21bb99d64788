"""The classic small services: echo (RFC 862), discard (RFC 863), daytime (RFC 867), time (RFC 868).

Over UDP each is one datagram in, at most one out; daytime and time ignore what they receive and
answer with the receive time they are given.

Strategy against reflection: two such services answer each other forever once one forged datagram
sets them off (A:7 -> B:7 -> A:7 ...). As inetd's internal services do, a peer whose source port is
below 1024 (echo 7, discard 9, daytime 13, chargen 19, time 37, dns 53, ntp 123 among them) is not
answered unless ``low_ports`` is set; and since two services on ordinary high ports loop just as
well, every answer spends one token of the peer's reply budget (``rate_limit`` answers a second, a
burst of twice that, :data:`DEFAULT_RATE_LIMIT` unless told; ``0`` or ``None`` turns it off): a
ping-pong empties it within milliseconds and dies at the first unanswered datagram. None of them
amplifies by much: on the wire, echo answers 1:1, time 32 bytes for 28, daytime at most 68 for 28.
"""

from __future__ import annotations

import os
import struct
import time as _time
from typing import Any

from udpkit.addr import Endpoint
from udpkit.services.base import BaseResponder, Evidence, Reply
from udpkit.services.outstanding import Outstanding
from udpkit.services.ratelimit import ClientLimiter

__all__ = ["DEFAULT_RATE_LIMIT", "Daytime", "DaytimeProbe", "Discard", "Echo", "EchoProbe", "RFC868_EPOCH_OFFSET",
           "Time", "TimeProbe"]

#: Seconds from 1900-01-01 (RFC 868's epoch) to 1970-01-01.
RFC868_EPOCH_OFFSET = 2_208_988_800
_TIME = struct.Struct("!I")  # RFC 868: a 32-bit count of seconds since 1900, modulo 2**32
#: Answers a second per peer address by default (a burst of twice that).
DEFAULT_RATE_LIMIT = 100.0
#: Source ports below this are other services' ports: not answered unless ``low_ports``.
FIRST_CLIENT_PORT = 1024


class Discard(BaseResponder):
    """RFC 863: "Any received datagram is thrown away." — the tutorial's ``/dev/null``."""

    name = "discard"
    replies = False  # the listener may skip building a datagram object for it
    uses_time = False

    def handle(self, datagram: bytes, peer: Endpoint, now: float) -> Reply:
        return None


class _Guarded(BaseResponder):
    """A classic service behind the two reflection guards of the module docstring."""

    def handle(self, datagram: bytes, peer: Endpoint, now: float) -> Reply:
        raise NotImplementedError

    def __init__(self, *, rate_limit: float | None = DEFAULT_RATE_LIMIT, low_ports: bool = False) -> None:
        super().__init__()
        self.rate_limit = rate_limit or None
        self.low_ports = low_ports
        self._limiter = None if not rate_limit else ClientLimiter(rate_limit)
        self.stats = {"service_port": 0, "rate_limited": 0}

    def admit(self, peer: Endpoint, now: float) -> bool:
        """May ``peer`` be answered now? Each refusal is counted by its reason (the answers are the
        listener's ``datagrams_out``). Strategy: with no budget and an ordinary port this is two
        comparisons — the common case of a benchmark run with ``--rate-limit 0``."""
        if peer[1] >= FIRST_CLIENT_PORT or self.low_ports:
            limiter = self._limiter
            if limiter is None or limiter.admit(peer[0], now):
                return True
            self.stats["rate_limited"] += 1
            return False
        self.stats["service_port"] += 1
        return False


class Echo(_Guarded):
    """RFC 862: "When a datagram is received, the data from it is sent back in an answering datagram."

    Empty datagrams are echoed too (an empty reply), as the RFC's rule covers every datagram.
    """

    name = "echo"
    uses_time = False  # the listener need not ask the kernel for receive timestamps

    def handle(self, datagram: bytes, peer: Endpoint, now: float) -> Reply:
        if self._limiter is None and peer[1] >= FIRST_CLIENT_PORT:
            return datagram  # no budget, an ordinary port: the benchmark's path, without a call
        return datagram if self.admit(peer, now) else None

    def handle_batch(self, datagrams: list[Any], now: float) -> list[Any] | None:
        """A batch echoed as ``handle`` would: the received records themselves, whose first three
        fields — data, sender, destination — are each reply's payload, peer and source. ``None``
        (one by one, through the budget) with a budget per peer or a peer on a low port."""
        if self._limiter is not None:
            return None
        for record in datagrams:
            if record[1][1] < FIRST_CLIENT_PORT:
                return None
        return datagrams

    @property
    def reflect_from(self) -> int | None:
        """Without a budget per peer, ``handle`` echoes every datagram from a port of at least
        this: the listener may then echo those without calling it (``Batch.reflect``)."""
        if self._limiter is not None:
            return None
        return 0 if self.low_ports else FIRST_CLIENT_PORT


class Daytime(_Guarded):
    """RFC 867: the date and time as ASCII text; the RFC suggests ``Weekday, Month Day, Year HH:MM:SS-Zone``."""

    name = "daytime"

    def handle(self, datagram: bytes, peer: Endpoint, now: float) -> Reply:
        if not self.admit(peer, now):
            return None
        return _time.strftime("%A, %B %d, %Y %H:%M:%S-UTC\r\n", _time.gmtime(now)).encode("ascii")


class Time(_Guarded):
    """RFC 868: the time as a 32-bit big-endian count of seconds since 1900-01-01 00:00 UTC.

    The count wraps in 2036; we send it modulo 2**32, which is what RFC 868 clients decode.
    """

    name = "time"

    def handle(self, datagram: bytes, peer: Endpoint, now: float) -> Reply:
        if not self.admit(peer, now):
            return None
        return _TIME.pack((int(now) + RFC868_EPOCH_OFFSET) % 2**32)


class EchoProbe:
    """RFC 862: send a recognisable line with a random nonce; only one of our lines back is an echo."""

    name = "echo"
    verifies = True
    prefix = b"udpkit echo probe "

    def __init__(self) -> None:
        self._sent: Outstanding[bytes, None] = Outstanding()

    def build(self, now: float) -> bytes:
        line = self.prefix + os.urandom(8).hex().encode() + b"\n"
        self._sent.remember(line)
        return line

    def classify(self, reply: bytes, now: float) -> Evidence | None:
        return Evidence("echo", {"bytes": len(reply)}) if reply in self._sent else None


class DaytimeProbe:
    """RFC 867: any datagram asks; the answer is one line of printable ASCII."""

    name = "daytime"
    verifies = False  # the answer carries nothing of the request

    def build(self, now: float) -> bytes:
        return b"\n"

    def classify(self, reply: bytes, now: float) -> Evidence | None:
        text = reply.rstrip(b"\r\n")
        if not 0 < len(text) <= 512 or not all(32 <= byte < 127 for byte in text):
            return None
        return Evidence("daytime", {"text": text.decode("ascii")})


class TimeProbe:
    """RFC 868: any datagram asks; the answer is exactly four bytes, seconds since 1900 (mod 2**32).
    The detail is the server's clock minus ours, in whole seconds, unwrapped around ``now``."""

    name = "time"
    verifies = False  # the answer carries nothing of the request

    def build(self, now: float) -> bytes:
        return b""

    def classify(self, reply: bytes, now: float) -> Evidence | None:
        if len(reply) != _TIME.size:
            return None
        (count,) = _TIME.unpack(reply)
        ours = (int(now) + RFC868_EPOCH_OFFSET) % 2**32
        offset = (count - ours + 2**31) % 2**32 - 2**31  # nearest era: right across the 2036 wrap
        return Evidence("time", {"server_time": int(now) + offset, "offset_s": offset})
