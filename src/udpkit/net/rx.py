"""Receiving datagrams with what the kernel knows about each one, and sending replies from the right address.

``recvmsg`` ancillary data gives the kernel receive timestamp (``SO_TIMESTAMPNS``), the socket's
receive-queue drop counter (``SO_RXQ_OVFL``) and the destination address the peer used
(``IP_PKTINFO`` / ``IPV6_PKTINFO``), so a wildcard-bound service answers from the address it was asked on.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import NamedTuple

from udpkit.net.bind import IP_PKTINFO, SO_RXQ_OVFL, SO_TIMESTAMPNS

__all__ = ["Datagram", "receive", "send_reply"]

IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_TIMESPEC = struct.Struct("=qq")  # struct timespec on 64-bit Linux
_U32 = struct.Struct("=I")
_IN_PKTINFO = struct.Struct("=i4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr
_IN6_PKTINFO = struct.Struct("=16si")  # ipi6_addr, ipi6_ifindex
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(4) + socket.CMSG_SPACE(_IN6_PKTINFO.size)
MAX_DATAGRAM = 65535


class Datagram(NamedTuple):
    """One received datagram: its bytes, the sender's socket address, the address it was sent to,
    the kernel's receive time (UNIX seconds, ``None`` if not reported), the socket's cumulative
    receive-queue drop count at that moment, and whether it was cut (``MSG_TRUNC``)."""

    data: bytes
    peer: tuple[str, int]
    local_ip: str | None
    timestamp: float | None
    drops: int | None
    truncated: bool = False


def receive(sock: socket.socket, limit: int = 64) -> list[Datagram]:
    """Up to ``limit`` datagrams waiting on the non-blocking ``sock`` (an empty list when none)."""
    out: list[Datagram] = []
    recvmsg = sock.recvmsg
    for _ in range(limit):
        try:
            data, ancillary, flags, peer = recvmsg(MAX_DATAGRAM, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            break
        except ConnectionRefusedError:
            continue  # an ICMP error for an earlier reply surfaced here: not a datagram
        timestamp = drops = local = None
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(value)
                timestamp = sec + nsec / 1e9
            elif level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
                drops = _U32.unpack_from(value)[0]
            elif level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= _IN_PKTINFO.size:
                local = socket.inet_ntop(socket.AF_INET, _IN_PKTINFO.unpack_from(value)[2])
            elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(value) >= _IN6_PKTINFO.size:
                local = socket.inet_ntop(socket.AF_INET6, _IN6_PKTINFO.unpack_from(value)[0])
        out.append(Datagram(data, (peer[0], peer[1]), local, timestamp, drops, bool(flags & socket.MSG_TRUNC)))
    return out


def send_reply(sock: socket.socket, payload: bytes, peer: tuple[str, int], source: str | None) -> bool:
    """Send ``payload`` to ``peer`` from ``source`` (the address the request came to); ``False`` if the
    kernel would not take it now (full buffer, or an ICMP error pending from an earlier reply)."""
    ancillary = []
    if source is not None:
        if sock.family == socket.AF_INET6:
            ancillary.append((socket.IPPROTO_IPV6, IPV6_PKTINFO, _IN6_PKTINFO.pack(socket.inet_pton(socket.AF_INET6, source), 0)))
        else:
            packed = socket.inet_pton(socket.AF_INET, source)
            ancillary.append((socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, packed, b"\0" * 4)))
    try:
        sock.sendmsg([payload], ancillary, 0, peer)
    except (BlockingIOError, InterruptedError, ConnectionRefusedError):
        return False
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EMSGSIZE, errno.EPERM):
            return False
        raise
    return True
