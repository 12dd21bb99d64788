"""NTP (RFC 5905) without sockets or clocks: a server responder and a client probe.

The responder answers client (mode 3) and symmetric-active (mode 1) requests with a server (mode 4)
reply: the client's version echoed, origin = the client's transmit timestamp, receive = the kernel's
receive time given as ``now``, and the transmit timestamp written by ``finish`` just before the
datagram leaves. It never answers control (6) or private (7) requests — the monlist amplifier — never
sends more than it received, and per client it can answer a flood with kiss-o'-death ``RATE``.

Timestamps are 32-bit seconds since 1900 plus a 32-bit fraction; the seconds wrap in 2036 (era 1).
Encoding takes the UNIX time modulo 2**32; decoding picks the era nearest a reference time, which is
what every client does and is right across the wrap.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from udpkit.addr import Endpoint
from udpkit.services.base import BaseResponder, Evidence, Reply
from udpkit.services.outstanding import Outstanding
from udpkit.services.ratelimit import ClientLimiter

__all__ = ["MODE_BROADCAST", "NTP_EPOCH_OFFSET", "NtpPacket", "NtpProbe", "NtpResponder", "decode_packet", "from_ntp",
           "refid_text", "to_ntp"]

#: Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
NTP_EPOCH_OFFSET = 2_208_988_800
_ERA = 2**32
# RFC 5905 §7.3: LI/VN/Mode, stratum, poll, precision, root delay, root dispersion, refid, 4 timestamps.
PACKET = struct.Struct("!BBbbII4sQQQQ")
MODE_SYMMETRIC_ACTIVE, MODE_CLIENT, MODE_SERVER, MODE_BROADCAST, MODE_CONTROL, MODE_PRIVATE = 1, 3, 4, 5, 6, 7
#: First bytes of a request a server answers: any leap bits, version 1..4, client or symmetric active mode.
_ANSWERABLE = frozenset(leap << 6 | version << 3 | mode for leap in range(4) for version in range(1, 5)
                        for mode in (MODE_SYMMETRIC_ACTIVE, MODE_CLIENT))
#: The same as a table of 256 bytes, nonzero where answered: what ``Batch.answer_ntp`` reads.
_ACCEPT = bytes(first in _ANSWERABLE for first in range(256))
LEAP_UNSYNCHRONIZED = 3
_STAMP = struct.Struct("!Q")
_BODY = struct.Struct("!24s8sII")  # a reply less its transmit time: header and reference, origin, receive


class NtpPacket(NamedTuple):
    leap: int
    version: int
    mode: int
    stratum: int
    poll: int
    precision: int
    root_delay: float  # seconds
    root_dispersion: float  # seconds
    refid: bytes
    reference: int  # raw 64-bit timestamps
    origin: int
    receive: int
    transmit: int


def to_ntp(unix: float) -> int:
    """UNIX seconds -> a 64-bit NTP timestamp (era wrapped): ``0.0`` -> ``0x83AA7E8000000000``."""
    seconds = int(unix) if unix >= 0 else math.floor(unix)
    fraction = int((unix - seconds) * 4294967296.0)
    if fraction > 0xFFFFFFFF:  # rounding just below the next second
        fraction = 0xFFFFFFFF
    return (((seconds + NTP_EPOCH_OFFSET) & 0xFFFFFFFF) << 32) | fraction


def from_ntp(stamp: int, near: float) -> float:
    """A 64-bit NTP timestamp -> UNIX seconds, in the era nearest ``near`` (UNIX seconds)."""
    seconds, fraction = stamp >> 32, stamp & (_ERA - 1)
    base = (math.floor(near) + NTP_EPOCH_OFFSET) % _ERA
    delta = (seconds - base + _ERA // 2) % _ERA - _ERA // 2
    return math.floor(near) + delta + fraction / _ERA


def _short(value: int) -> float:
    return value / 65536.0


def _to_short(seconds: float) -> int:
    return max(0, min(0xFFFFFFFF, int(seconds * 65536)))


def decode_packet(data: bytes) -> NtpPacket | None:
    """The 48-byte header of an NTP packet (extension fields and MACs ignored); ``None`` if shorter."""
    if len(data) < PACKET.size:
        return None
    first, stratum, poll, precision, delay, dispersion, refid, ref, org, rec, xmt = PACKET.unpack_from(data)
    return NtpPacket(first >> 6, (first >> 3) & 7, first & 7, stratum, poll, precision, _short(delay),
                     _short(dispersion), refid, ref, org, rec, xmt)


def encode_packet(p: NtpPacket) -> bytes:
    return PACKET.pack((p.leap << 6) | (p.version << 3) | p.mode, p.stratum, p.poll, p.precision,
                       _to_short(p.root_delay), _to_short(p.root_dispersion), p.refid, p.reference, p.origin,
                       p.receive, p.transmit)


class NtpResponder(BaseResponder):
    """An NTP server: ``--respond ntp``.

    ``stratum``/``refid`` default to chrony's ``local stratum 10`` (refid ``LOCL``); ``leap``,
    ``root_delay``, ``root_dispersion`` and ``precision`` (log2 seconds, measured by the caller) are
    what it reports; ``rate_limit``: requests a second allowed per client address (burst of twice
    that), beyond which it answers one kiss-o'-death ``RATE`` a second and drops the rest.
    ``stats`` counts what was answered and what was dropped, and why.
    """

    name = "ntp"

    def __init__(self, *, stratum: int = 10, refid: bytes = b"LOCL", leap: int = 0, root_delay: float = 0.0,
                 root_dispersion: float = 0.001, precision: int = -20, rate_limit: float | None = None) -> None:
        super().__init__()
        if not 1 <= stratum <= 15 and not (stratum == 16 and leap == LEAP_UNSYNCHRONIZED):
            raise ValueError("stratum must be 1..15 (16 only when unsynchronized)")
        if not 0 <= leap <= 3:
            raise ValueError("leap must be 0..3")
        for what, seconds in (("root delay", root_delay), ("root dispersion", root_dispersion)):
            if not 0 <= seconds < 65536:  # NTP short format, 16.16 bits (RFC 5905 §6); NaN fails too
                raise ValueError(f"{what} must be a number of seconds from 0 to 65535")
        if rate_limit is not None and not (rate_limit >= 0 and math.isfinite(rate_limit)):
            raise ValueError("rate limit must be a finite number >= 0")
        self.stratum, self.refid, self.leap = stratum, refid.ljust(4, b"\0")[:4], leap
        self.root_delay, self.root_dispersion, self.precision = root_delay, root_dispersion, precision
        self.rate_limit = rate_limit or None
        self._limiter = None if not rate_limit else ClientLimiter(rate_limit)
        self.stats = {"answered": 0, "kiss_rate": 0, "short": 0, "mode": 0, "version": 0, "rate_limited": 0}
        self._heads: dict[tuple[int, int], bytes] = {}  # (version, poll) -> the reply's first 16 bytes
        self._ref_second, self._ref = -1, b""
        self._finished_at, self._finished_stamp = -1.0, b""
        self._batch_starts: dict[int, bytes] = {}  # at most 8,192: (first byte << 8 | poll) -> first 24 bytes
        self._batch_second = -1

    def handle(self, datagram: bytes, peer: Endpoint, now: float) -> Reply:
        # Strategy: read the three fields that matter straight from the bytes and build the reply
        # from a cached header; a server spends its time here once per request.
        if len(datagram) < PACKET.size:
            self.stats["short"] += 1
            return None
        first = datagram[0]
        mode, version = first & 7, (first >> 3) & 7
        if mode != MODE_CLIENT and mode != MODE_SYMMETRIC_ACTIVE:
            self.stats["mode"] += 1  # servers, broadcasts, and above all control (6) and private (7)
            return None
        if not 1 <= version <= 4:
            self.stats["version"] += 1
            return None
        transmit = datagram[40:48]
        if self._limiter is not None and not self._limiter.admit(peer.ip, now):
            if not self._limiter.notice(peer.ip, now):
                self.stats["rate_limited"] += 1
                return None
            self.stats["kiss_rate"] += 1
            return encode_packet(NtpPacket(LEAP_UNSYNCHRONIZED, version, MODE_SERVER, 0, datagram[2],
                                           self.precision, 0.0, 0.0, b"RATE", 0, int.from_bytes(transmit, "big"),
                                           0, 0))
        self.stats["answered"] += 1
        poll = datagram[2]
        key = (version, poll)
        head = self._heads.get(key)
        if head is None:
            head = self._heads[key] = self._head(version, poll)
        second = math.floor(now)
        if second != self._ref_second:
            self._ref_second, self._ref = second, _STAMP.pack(to_ntp(second))
        stamp = _STAMP.pack(to_ntp(now))
        return head + self._ref + transmit + stamp + stamp

    def handle_batch(self, datagrams: list[Any], now: float) -> list[tuple[bytes, Any, str | None]] | None:
        """A batch of requests answered as ``handle`` would, less the transmit timestamp, which
        :meth:`trailer` writes once for the batch just before it is sent. ``None`` with a rate
        limit: that is decided client by client, in ``handle``.

        Strategy: one pass with every lookup bound to a local; the header cached by the request's
        first and third bytes (version, client's leap bits and mode, poll: at most 8,192 of them)."""
        if self._limiter is not None:
            return None
        answerable, stats, convert, offset = _ANSWERABLE, self.stats, to_ntp, NTP_EPOCH_OFFSET
        body, pack = _BODY.pack, _STAMP.pack
        out: list[tuple[bytes, Any, str | None]] = []
        append = out.append
        starts = self._batch_starts  # (first byte << 8 | poll) -> header and reference time, this second
        ref_second = self._batch_second
        for data, peer, local, stamp, _drops, _cut, _unicast in datagrams:
            if len(data) < 48 or data[0] not in answerable:
                self._refuse(data)
                continue
            when = now if stamp is None else stamp
            if when < 0:  # before 1970: to_ntp's floor, not int()'s truncation
                second = math.floor(when)
                seconds, fraction = divmod(to_ntp(when), 1 << 32)
            else:  # to_ntp inlined: this runs once per request
                second = int(when)
                seconds, fraction = (second + offset) & 0xFFFFFFFF, int((when - second) * 4294967296.0)
                if fraction > 0xFFFFFFFF:
                    fraction = 0xFFFFFFFF
            if second != ref_second:
                starts.clear()
                ref_second = second
            key = data[0] << 8 | data[2]
            start = starts.get(key)
            if start is None:
                start = starts[key] = self._head(data[0] >> 3 & 7, data[2]) + pack(convert(second))
            append((body(start, data[40:48], seconds, fraction), peer, local))
        self._batch_second = ref_second
        stats["answered"] += len(out)
        return out

    @property
    def ntp_template(self) -> tuple[bytes, Callable[[int, int, int], bytes], Callable[[int], None]] | None:
        """What a send layer needs to answer requests as :meth:`handle_batch` does with no Python
        call per request (``Batch.answer_ntp``, which writes origin, receive and transmit times):
        the first bytes answered (256 bytes, nonzero where answered), the reply's first 24 bytes
        for a request's first byte, poll and receive second (header and reference time: every rule
        of what a reply says stays here), and the counter of those answered. ``None`` with a rate
        limit: that is decided client by client, in ``handle``."""
        if self._limiter is not None:
            return None
        return _ACCEPT, self._start, self._count_answered

    def _start(self, first: int, poll: int, second: int) -> bytes:
        return self._head(first >> 3 & 7, poll) + _STAMP.pack(to_ntp(second))

    def _count_answered(self, answered: int) -> None:
        self.stats["answered"] += answered

    #: the trailer is the send time as an NTP timestamp: a send layer may read the clock itself
    trailer_clock = "ntp"

    def trailer(self, now: float) -> bytes:
        """The transmit timestamp every reply of a batch ends with (see :meth:`handle_batch`)."""
        return _STAMP.pack(to_ntp(now))

    def _refuse(self, data: bytes) -> None:
        """Count why a request is not answered, as ``handle`` does."""
        if len(data) < PACKET.size:
            self.stats["short"] += 1
        elif data[0] & 7 not in (MODE_CLIENT, MODE_SYMMETRIC_ACTIVE):
            self.stats["mode"] += 1
        else:
            self.stats["version"] += 1

    def _head(self, version: int, poll: int) -> bytes:
        """A reply's first 16 bytes for a request of this version and poll."""
        return struct.pack("!BBbbII4s", (self.leap << 6) | (version << 3) | MODE_SERVER, self.stratum,
                           max(4, min(17, poll if poll < 128 else 4)), self.precision, _to_short(self.root_delay),
                           _to_short(self.root_dispersion), self.refid)

    def finish(self, reply: bytes, now: float) -> bytes:
        """Write the transmit timestamp, read as late as possible: just before the datagram is sent."""
        if len(reply) != PACKET.size or reply[1] == 0:  # a kiss-o'-death keeps its zero timestamps
            return reply
        if now != self._finished_at:  # a batch of replies shares one send time: convert it once
            self._finished_at, self._finished_stamp = now, _STAMP.pack(to_ntp(now))
        return reply[:40] + self._finished_stamp


class NtpProbe:
    """An SNTP client request (RFC 4330, version 4) whose transmit timestamp is the send time with
    random low bits; only a server reply whose origin echoes one of ours is accepted. Offset and
    delay follow RFC 5905 §8 from the four timestamps."""

    name = "ntp"
    verifies = True  # only an answer to one of our own requests is accepted

    def __init__(self, version: int = 4) -> None:
        self.version = version  # the request's version (1-4); servers answer with the same
        self._sent: Outstanding[int, float] = Outstanding()  # transmit timestamp -> UNIX send time

    def build(self, now: float) -> bytes:
        stamp = (to_ntp(now) & ~0xFF) | os.urandom(1)[0]  # 256 ns of noise, no longer guessable
        self._sent.remember(stamp, now)
        return encode_packet(NtpPacket(0, self.version, MODE_CLIENT, 0, 0, 0, 0.0, 0.0, b"\0\0\0\0", 0, 0, 0, stamp))

    def classify(self, reply: bytes, now: float) -> Evidence | None:
        packet = decode_packet(reply)
        if packet is None or packet.mode != MODE_SERVER or packet.origin not in self._sent:
            return None
        t1 = self._sent.get(packet.origin)
        if t1 is None:
            return None
        if packet.stratum == 0:
            code = packet.refid.rstrip(b"\0").decode("ascii", "replace")
            return Evidence("ntp", {"kiss": code, "version": packet.version})
        t2, t3 = from_ntp(packet.receive, t1), from_ntp(packet.transmit, t1)
        offset = ((t2 - t1) + (t3 - now)) / 2
        delay = (now - t1) - (t3 - t2)
        return Evidence("ntp", {
            "offset_ms": round(offset * 1000, 3), "delay_ms": round(delay * 1000, 3), "stratum": packet.stratum,
            "refid": refid_text(packet.refid, packet.stratum), "leap": packet.leap, "version": packet.version,
            "root_delay_ms": round(packet.root_delay * 1000, 3),
            "root_dispersion_ms": round(packet.root_dispersion * 1000, 3), "precision": packet.precision,
        })


def refid_text(refid: bytes, stratum: int) -> str:
    """Stratum 1 (and kiss codes): four ASCII letters; higher strata: the upstream's IPv4 address
    (or an IPv6 hash), shown dotted like ntpq; printable ASCII is shown as text as chrony does."""
    text = refid.rstrip(b"\0")
    if stratum <= 1 or (text and all(65 <= b <= 90 or 48 <= b <= 57 for b in text)):
        return text.decode("ascii", "replace")
    return ".".join(str(b) for b in refid)
