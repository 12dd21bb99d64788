"""ICMP errors for our own datagrams, without raw sockets or root: ``IP_RECVERR`` / ``IPV6_RECVERR``
and ``recvmsg(MSG_ERRQUEUE)``.

With the option set, the kernel queues every ICMP error that answers a datagram this socket sent:
``struct sock_extended_err`` (``linux/errqueue.h``) — errno, origin, ICMP type and code — followed
by the address of the host that sent the ICMP message (``SO_EE_OFFENDER``), while ``msg_name`` holds
the original destination. This is the evidence the prober shows; parsing is pure, reading is I/O.
"""

from __future__ import annotations

import errno as _errno
import socket
import struct
from enum import Enum
from typing import NamedTuple

from udpkit.errors import ParseError

__all__ = ["IcmpError", "enable_errors", "icmp_reason", "parse_extended_err", "read_error", "read_errors", "sockaddr_ip"]

# Python < 3.14 lacks these (linux/in.h, linux/in6.h, linux/socket.h).
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
SO_EE_ORIGIN_LOCAL = 1
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
# struct sock_extended_err: ee_errno u32, ee_origin u8, ee_type u8, ee_code u8, ee_pad u8, ee_info u32, ee_data u32
EXTENDED_ERR = struct.Struct("=IBBBBII")
_ANCILLARY = socket.CMSG_SPACE(EXTENDED_ERR.size + 28)


class IcmpError(NamedTuple):
    """One queued error: the ICMP ``type``/``code`` (``origin`` says ICMP or ICMPv6, or a local error),
    the errno the kernel maps it to, who sent it (``offender``), the datagram's destination, and the
    start of our payload as the error quotes it (``quote``: as many bytes as the reader asked for,
    no more than the message carried) — what proves the error answers a datagram we sent."""

    errno: int
    origin: int
    type: int
    code: int
    info: int
    offender: str | None
    destination: tuple[str, int] | None
    quote: bytes = b""


def parse_extended_err(data: bytes, senders: dict[bytes, str | None] | None = None
                       ) -> tuple[int, int, int, int, int, str | None]:
    """``sock_extended_err`` plus the offender -> (errno, origin, type, code, info, offender address).

    ``bytes.fromhex("6f000000 02 03 03 00 00000000 00000000 0200 0000 7f000001 0000000000000000")``
    -> ``(111, 2, 3, 3, 0, "127.0.0.1")``: ECONNREFUSED from an ICMP port unreachable sent by 127.0.0.1.
    ``senders``: a cache of offender addresses already turned into text (a scan reads thousands of
    errors from one host).
    """
    if len(data) < EXTENDED_ERR.size:
        raise ParseError(f"sock_extended_err needs {EXTENDED_ERR.size} bytes, got {len(data)}")
    err, origin, icmp_type, code, _pad, info, _data = EXTENDED_ERR.unpack_from(data)
    raw = data[EXTENDED_ERR.size :]
    if senders is None:
        return err, origin, icmp_type, code, info, sockaddr_ip(raw)
    offender = senders.get(raw, "")
    if offender == "":
        offender = senders[raw] = sockaddr_ip(raw)
    return err, origin, icmp_type, code, info, offender


def sockaddr_ip(raw: bytes) -> str | None:
    """The address in a ``sockaddr_in``/``sockaddr_in6``; ``None`` if absent (AF_UNSPEC) or cut short."""
    if len(raw) < 2:
        return None
    family = struct.unpack_from("=H", raw)[0]
    if family == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return None


_REASONS: dict[tuple[int, int, int], str] = {
    (socket.AF_INET, 3, 0): "net-unreachable",
    (socket.AF_INET, 3, 1): "host-unreachable",
    (socket.AF_INET, 3, 2): "protocol-unreachable",
    (socket.AF_INET, 3, 3): "port-unreachable",
    (socket.AF_INET, 3, 9): "net-prohibited",
    (socket.AF_INET, 3, 10): "host-prohibited",
    (socket.AF_INET, 3, 13): "admin-prohibited",
    (socket.AF_INET6, 1, 0): "no-route",
    (socket.AF_INET6, 1, 1): "admin-prohibited",
    (socket.AF_INET6, 1, 3): "address-unreachable",
    (socket.AF_INET6, 1, 4): "port-unreachable",
    (socket.AF_INET6, 1, 5): "source-policy-failed",
    (socket.AF_INET6, 1, 6): "reject-route",
}


def icmp_reason(family: int, icmp_type: int, code: int) -> str:
    """A name for an ICMP error: ``(AF_INET, 3, 13)`` -> ``"admin-prohibited"``; unknown -> ``"icmp-3/99"``."""
    return _REASONS.get((family, icmp_type, code), f"icmp{'6' if family == socket.AF_INET6 else ''}-{icmp_type}/{code}")


def enable_errors(sock: socket.socket) -> None:
    """Ask the kernel to queue the ICMP errors answering this socket's datagrams."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)


def read_errors(sock: socket.socket, limit: int = 64,
                senders: dict[bytes, str | None] | None = None, quote: int = 0) -> list[IcmpError]:
    """Up to ``limit`` queued errors (none: an empty list); never blocks. With :func:`read_error`,
    the one reader of the error queue. ``senders``: a cache of offender addresses already turned
    into text, for a scan that reads thousands of errors from one host. ``quote``: how many bytes of
    the quoted payload to read (Linux quotes the whole datagram, within 576 bytes for IPv4 and
    1280 for IPv6)."""
    found: list[IcmpError] = []
    for _ in range(limit):
        entry = _read(sock, senders, quote)
        if entry is _Queue.EMPTY:
            break
        if entry is not None:
            found.append(entry)
    return found


def read_error(sock: socket.socket, senders: dict[bytes, str | None] | None = None,
               quote: int = 0) -> IcmpError | None:
    """One queued error, or ``None`` (none queued, or the entry was not an ICMP error): the prober's
    read after each datagram to a local address, whose error is queued before ``sendto`` returns."""
    entry = _read(sock, senders, quote)
    return None if entry is _Queue.EMPTY else entry


class _Queue(Enum):
    EMPTY = 0


def _read(sock: socket.socket, senders: dict[bytes, str | None] | None,
          quote: int = 0) -> IcmpError | None | _Queue:
    """One entry of the error queue: an ``IcmpError``, ``None`` (not one), ``_Queue.EMPTY``."""
    try:
        data, ancillary, _flags, name = sock.recvmsg(quote, _ANCILLARY, _DONTWAIT_ERRQUEUE)
    except (BlockingIOError, InterruptedError):
        return _Queue.EMPTY
    for level, kind, value in ancillary:
        if kind not in _RECVERR or level not in _LEVELS or len(value) < EXTENDED_ERR.size:
            continue
        err, origin, icmp_type, code, info, offender = parse_extended_err(value, senders)
        # tuple.__new__: a NamedTuple's own __new__ is Python code, a cost per closed port of a scan
        return _new(IcmpError, (err or _errno.EIO, origin, icmp_type, code, info, offender,
                                name[:2] if name else None, data))
    return None


_DONTWAIT_ERRQUEUE = MSG_ERRQUEUE | socket.MSG_DONTWAIT
_RECVERR = (IP_RECVERR, IPV6_RECVERR)
_LEVELS = (socket.IPPROTO_IP, socket.IPPROTO_IPV6)
_new = tuple.__new__
