"""Receiving datagrams with what the kernel knows about each one, and sending replies from the right address.

``recvmsg`` ancillary data gives the kernel receive timestamp (``SO_TIMESTAMPNS``), the socket's
receive-queue drop counter (``SO_RXQ_OVFL``) and the destination address the peer used
(``IP_PKTINFO`` / ``IPV6_PKTINFO``), so a wildcard-bound service answers from the address it was
asked on — and knows when it was not asked at all, because the datagram went to a multicast or
broadcast address. The peer's address is kept whole (an IPv6 peer's flow information and scope id
too), so a link-local peer ``fe80::1%eth0`` can be answered and connected to.

Nothing a peer sends or provokes raises here: an ICMP error that surfaces on a receive is handed
to ``on_error`` (a counter, or a session's end) and reading goes on; a reply the kernel refuses is
reported by :func:`send_reply`'s return value.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from udpkit.net.bind import IP_PKTINFO, SO_MEMINFO, SO_RXQ_OVFL, SO_TIMESTAMPNS

if TYPE_CHECKING:
    from udpkit.net.mmsg import Batch

__all__ = ["Datagram", "MAX_DATAGRAM", "OnError", "TIMESTAMP_SPACE", "count_and_forget", "datagram_of", "error_name",
           "kernel_time", "receive", "send_reply", "socket_drops"]

IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_TIMESPEC = struct.Struct("=qq")  # struct timespec on 64-bit Linux
#: The control buffer ``recvmsg`` needs for ``SO_TIMESTAMPNS`` alone.
TIMESTAMP_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
_U32 = struct.Struct("=I")
_IN_PKTINFO = struct.Struct("=i4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr (linux/in.h)
_IN6_PKTINFO = struct.Struct("=16si")  # ipi6_addr, ipi6_ifindex (linux/ipv6.h)
_ANCILLARY = (socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(4) + socket.CMSG_SPACE(_IN6_PKTINFO.size)
              + socket.CMSG_SPACE(_IN_PKTINFO.size))
MAX_DATAGRAM = 65535
_LIMITED_BROADCAST = b"\xff\xff\xff\xff"

#: What a receive loop calls with an error the kernel reported instead of a datagram (an ICMP error
#: for an earlier datagram of ours, on a connected socket or one with ``IP_RECVERR``).
OnError = Callable[[OSError], None]


class Datagram(NamedTuple):
    """One received datagram: its bytes, the sender's socket address as the kernel gave it (IPv6:
    ``(ip, port, flowinfo, scope_id)``), the address it was sent to, the kernel's receive time (UNIX
    seconds, ``None`` if not reported), the socket's cumulative receive-queue drop count when it was
    queued (``SO_RXQ_OVFL``: reported only on kernels without ``SO_MEMINFO``, where
    :func:`socket_drops` cannot say it; else ``None``), whether it was cut (``MSG_TRUNC``), and whether it was sent to one of our unicast
    addresses (``False``: to a multicast or broadcast address, which a service does not answer)."""

    data: bytes
    peer: tuple[Any, ...]
    local_ip: str | None
    timestamp: float | None
    drops: int | None
    truncated: bool = False
    unicast: bool = True


_MSG_TRUNC = int(socket.MSG_TRUNC)  # a plain int: IntFlag's & costs a Python call per datagram
_SOL_SOCKET, _IPPROTO_IP, _IPPROTO_IPV6 = int(socket.SOL_SOCKET), int(socket.IPPROTO_IP), int(socket.IPPROTO_IPV6)


def error_name(exc: OSError) -> str:
    """``ConnectionRefusedError`` -> ``"ECONNREFUSED"``: the name a counter is kept under."""
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def receive(sock: socket.socket, limit: int = 64, *, ancillary: bool = True,
            on_error: OnError | None = None, batch: Batch | None = None) -> list[Datagram]:
    """Up to ``limit`` datagrams waiting on the non-blocking ``sock`` (an empty list when none).

    ``ancillary=False`` when the socket was bound without timestamps or destination addresses:
    then no control buffer is handed to the kernel at all. An error in place of a datagram goes to
    ``on_error`` and reading goes on (each such error is reported once by the kernel).

    Strategy for the destination: ``IP_PKTINFO`` carries both the header's destination
    (``ipi_addr``) and the address the kernel would answer from (``ipi_spec_dst``); they differ
    exactly when the datagram was not sent to one of our unicast addresses (a broadcast or a group).

    ``batch`` (:func:`udpkit.net.mmsg.new_batch`, made with ``ancillary`` to match): read with
    ``recvmmsg`` instead, a batch per system call, with the same records.
    """
    if batch is not None:
        return _receive_batched(sock, limit, batch, on_error)
    out: list[Datagram] = []
    recvmsg = sock.recvmsg
    space = _ANCILLARY if ancillary else 0
    for _ in range(limit):
        try:
            data, control, flags, peer = recvmsg(MAX_DATAGRAM, space)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            if on_error is not None:
                on_error(exc)
            continue
        out.append(datagram_of(data, control, flags, peer))
    return out


def _receive_batched(sock: socket.socket, limit: int, batch: Batch, on_error: OnError | None) -> list[Datagram]:
    out: list[Datagram] = []
    fd, receive_batch = sock.fileno(), batch.receive
    for _ in range(max(1, -(-limit // batch.count))):
        try:
            got = receive_batch(fd)
        except OSError as exc:  # in place of a datagram, reported once: read on
            if on_error is not None:
                on_error(exc)
            continue
        out += got
        if len(got) < batch.count:
            break  # the queue is empty: no second call to learn it
    return out


def datagram_of(data: bytes, control: list[tuple[int, int, bytes]], flags: int, peer: Any) -> Datagram:
    """One ``recvmsg`` result as a :class:`Datagram`: its control messages decoded."""
    timestamp = drops = local = None
    unicast = True
    for level, kind, value in control:
        if level == _SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(value)
            timestamp = sec + nsec / 1e9
        elif level == _SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
            drops = _U32.unpack_from(value)[0]
        elif level == _IPPROTO_IP and kind == IP_PKTINFO and len(value) >= _IN_PKTINFO.size:
            _index, spec_dst, header_dst = _IN_PKTINFO.unpack_from(value)
            if spec_dst != header_dst or header_dst == _LIMITED_BROADCAST or 224 <= header_dst[0] < 240:
                unicast = False
            if local is None:
                local = socket.inet_ntop(socket.AF_INET, header_dst)
        elif level == _IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(value) >= _IN6_PKTINFO.size:
            address, index = _IN6_PKTINFO.unpack_from(value)
            if address[0] == 0xFF or (address[:12] == _MAPPED and 224 <= address[12] < 240):
                unicast = False
            local = socket.inet_ntop(socket.AF_INET6, address)
            if address[0] == 0xFE and address[1] & 0xC0 == 0x80:  # link-local: only with its scope
                local = f"{local}%{index}"
    return Datagram(data, peer, local, timestamp, drops, bool(flags & _MSG_TRUNC), unicast)


_MAPPED = b"\0" * 10 + b"\xff\xff"
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


def count_and_forget(sock: socket.socket, limit: int, buffer: bytearray | Batch, add: Callable[[Any], object],
                     write: Callable[[memoryview], object] | None = None,
                     expect: tuple[Any, ...] | None = None,
                     strays: list[tuple[bytes, tuple[Any, ...]]] | None = None,
                     on_error: OnError | None = None, max_bytes: int = 1 << 20) -> tuple[int, int]:
    """Read up to ``limit`` datagrams (and about ``max_bytes``) into one reused buffer and keep only
    their number, bytes and senders — ``(datagrams, bytes)`` — handing each sender to ``add`` and
    each payload to ``write`` if given (the raw recording path). The drops are read with
    :func:`socket_drops`.

    ``expect``: the only sender this (connected) socket should deliver; anything else — a datagram
    the kernel queued here before ``connect()`` — goes to ``strays`` as (payload, sender) instead.

    Strategy: a discard service with nothing to record needs no per-datagram object and no
    ancillary data, so this is ``recvfrom_into`` in a tight loop (``bench/listen_bench.py``) — or,
    given a :class:`~udpkit.net.mmsg.Batch` instead of a buffer, ``recvmmsg``: one system call and
    one interpreter round per batch, senders decoded once per distinct address.
    """
    if not isinstance(buffer, bytearray):
        return _count_batched(sock, limit, buffer, add, write, expect, strays, on_error, max_bytes)
    recv = sock.recvfrom_into
    view = memoryview(buffer)
    count = total = 0
    while count < limit and total < max_bytes:
        try:
            nbytes, peer = recv(buffer)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            if on_error is not None:
                on_error(exc)
            continue
        if expect is not None and peer != expect:
            if strays is not None:
                strays.append((bytes(view[:nbytes]), peer))
            continue
        count += 1
        total += nbytes
        add(peer)
        if write is not None:
            write(view[:nbytes])
    return count, total


def _count_batched(sock: socket.socket, limit: int, batch: Batch, add: Callable[[Any], object],
                   write: Callable[[memoryview], object] | None, expect: tuple[Any, ...] | None,
                   strays: list[tuple[bytes, tuple[Any, ...]]] | None, on_error: OnError | None,
                   max_bytes: int) -> tuple[int, int]:
    """``count_and_forget`` a batch per call: ``tally`` (counts and senders only, no datagram
    object) when nothing is written or checked, else the batch's records."""
    count = total = errors = 0
    fd, full = sock.fileno(), batch.count
    while count < limit and total < max_bytes and errors < limit:
        try:
            if write is None and expect is None:
                n, nbytes, senders = batch.tally(fd)
                count += n
                total += nbytes
                for peer in senders:
                    add(peer)
            else:
                got = batch.receive(fd)
                n = len(got)
                for dgram in got:
                    if expect is not None and dgram.peer != expect:
                        if strays is not None:
                            strays.append((dgram.data, dgram.peer))
                        continue
                    count += 1
                    total += len(dgram.data)
                    add(dgram.peer)
                    if write is not None:
                        write(memoryview(dgram.data))
        except OSError as exc:
            errors += 1
            if on_error is not None:
                on_error(exc)
            continue
        if n < full:
            break  # the queue is empty: no second call to learn it
    return count, total


def send_reply(sock: socket.socket, payload: bytes, peer: tuple[Any, ...], source: str | None) -> str | None:
    """Send ``payload`` to ``peer`` from ``source`` (the address the request came to); ``None`` when
    the kernel took it, else the name of the error it gave (a full buffer, an ICMP error pending
    from an earlier reply, a source address that is gone, a peer no route reaches). Never raises
    for what a peer did: a server counts the refusal and goes on."""
    ancillary = []
    if source is not None:
        try:
            if sock.family == socket.AF_INET6:
                ip, _, scope = source.partition("%")  # fe80::1%3: a link-local source names its interface
                index = int(scope) if scope.isdigit() else socket.if_nametoindex(scope) if scope else 0
                ancillary.append((socket.IPPROTO_IPV6, IPV6_PKTINFO,
                                  _IN6_PKTINFO.pack(socket.inet_pton(socket.AF_INET6, ip), index)))
            else:
                packed = socket.inet_pton(socket.AF_INET, source)
                ancillary.append((socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, packed, b"\0" * 4)))
        except OSError:
            return "EINVAL"
    try:
        sock.sendmsg([payload], ancillary, 0, peer)
    except OSError as exc:
        return error_name(exc)
    return None


def kernel_time(control: list[tuple[int, int, bytes]]) -> float | None:
    """The ``SO_TIMESTAMPNS`` receive time (UNIX seconds) in ``recvmsg``'s ancillary data, if any."""
    for level, kind, value in control:
        if level == _SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(value)
            return float(sec + nsec / 1e9)
    return None
