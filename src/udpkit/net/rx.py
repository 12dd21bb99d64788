"""Receiving datagrams with what the kernel knows about each one, and sending replies from the right address.

``recvmsg`` ancillary data gives the kernel receive timestamp (``SO_TIMESTAMPNS``), the socket's
receive-queue drop counter (``SO_RXQ_OVFL``) and the destination address the peer used
(``IP_PKTINFO`` / ``IPV6_PKTINFO``), so a wildcard-bound service answers from the address it was asked on.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from udpkit.net.bind import IP_PKTINFO, SO_RXQ_OVFL, SO_TIMESTAMPNS

__all__ = ["Datagram", "TIMESTAMP_SPACE", "count_and_forget", "kernel_time", "receive", "send_reply", "socket_drops"]

IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_TIMESPEC = struct.Struct("=qq")  # struct timespec on 64-bit Linux
#: The control buffer ``recvmsg`` needs for ``SO_TIMESTAMPNS`` alone.
TIMESTAMP_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
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


_MSG_TRUNC = int(socket.MSG_TRUNC)  # a plain int: IntFlag's & costs a Python call per datagram
_SOL_SOCKET, _IPPROTO_IP, _IPPROTO_IPV6 = int(socket.SOL_SOCKET), int(socket.IPPROTO_IP), int(socket.IPPROTO_IPV6)


def receive(sock: socket.socket, limit: int = 64, *, ancillary: bool = True) -> list[Datagram]:
    """Up to ``limit`` datagrams waiting on the non-blocking ``sock`` (an empty list when none).

    ``ancillary=False`` when the socket was bound without timestamps or destination addresses:
    then no control buffer is handed to the kernel at all.
    """
    out: list[Datagram] = []
    recvmsg = sock.recvmsg
    space = _ANCILLARY if ancillary else 0
    for _ in range(limit):
        try:
            data, control, flags, peer = recvmsg(MAX_DATAGRAM, space)
        except (BlockingIOError, InterruptedError):
            break
        except ConnectionRefusedError:
            continue  # an ICMP error for an earlier reply surfaced here: not a datagram
        timestamp = drops = local = None
        for level, kind, value in control:
            if level == _SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(value)
                timestamp = sec + nsec / 1e9
            elif level == _SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
                drops = _U32.unpack_from(value)[0]
            elif level == _IPPROTO_IP and kind == IP_PKTINFO and len(value) >= _IN_PKTINFO.size:
                local = socket.inet_ntop(socket.AF_INET, _IN_PKTINFO.unpack_from(value)[2])
            elif level == _IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(value) >= _IN6_PKTINFO.size:
                local = socket.inet_ntop(socket.AF_INET6, _IN6_PKTINFO.unpack_from(value)[0])
        out.append(Datagram(data, (peer[0], peer[1]), local, timestamp, drops, bool(flags & _MSG_TRUNC)))
    return out


SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)
_SK_MEMINFO_DROPS = 8


def socket_drops(sock: socket.socket) -> int | None:
    """The kernel's count of datagrams this socket dropped (``SO_MEMINFO``, Linux >= 4.12), or ``None``."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * (_SK_MEMINFO_DROPS + 1))
    except OSError:
        return None
    if len(raw) < 4 * (_SK_MEMINFO_DROPS + 1):
        return None
    return int(struct.unpack_from("=I", raw, 4 * _SK_MEMINFO_DROPS)[0])


def count_and_forget(sock: socket.socket, limit: int, buffer: bytearray, peers: set[Any],
                     write: Callable[[memoryview], object] | None = None,
                     expect: tuple[str, int] | None = None,
                     strays: list[tuple[bytes, tuple[str, int]]] | None = None) -> tuple[int, int]:
    """Read up to ``limit`` datagrams into one reused buffer and keep only their number, bytes and
    senders — ``(datagrams, bytes)`` — handing each payload to ``write`` if given (a buffered
    file's ``write``: the raw recording path). The drops are read with :func:`socket_drops`.

    ``expect``: the only sender this (connected) socket should deliver; anything else — a datagram
    the kernel queued here before ``connect()`` — goes to ``strays`` as (payload, sender) instead.

    Strategy: a discard service with nothing to record needs no per-datagram object and no
    ancillary data, so this is ``recvfrom_into`` in a tight loop (``bench/listen_bench.py``).
    """
    recv = sock.recvfrom_into
    add = peers.add
    view = memoryview(buffer)
    count = total = 0
    while count < limit:
        try:
            nbytes, peer = recv(buffer)
        except (BlockingIOError, InterruptedError):
            break
        except ConnectionRefusedError:
            continue
        if expect is not None and peer[:2] != expect:
            if strays is not None:
                strays.append((bytes(view[:nbytes]), (peer[0], peer[1])))
            continue
        count += 1
        total += nbytes
        add(peer[:2])
        if write is not None:
            write(view[:nbytes])
    return count, total


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


def kernel_time(control: list[tuple[int, int, bytes]]) -> float | None:
    """The ``SO_TIMESTAMPNS`` receive time (UNIX seconds) in ``recvmsg``'s ancillary data, if any."""
    for level, kind, value in control:
        if level == _SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(value)
            return float(sec + nsec / 1e9)
    return None
