"""Many datagrams per system call: Linux's ``recvmmsg`` and ``sendmmsg``.

Python's ``socket`` has neither, so a receive loop pays a system call and an interpreter round per
datagram. A batch owns preallocated ``mmsghdr``/``iovec``/address/control arrays, reused call after
call, and hands back each call's datagrams as :class:`~udpkit.net.rx.Datagram` records (bytes,
sender, destination, kernel receive time, drop count, truncation, unicast) — the same records the
one-per-call :func:`~udpkit.net.rx.receive` makes, so every path downstream is shared.

Two implementations of one protocol (:class:`Batch`):

- ``c``: the optional extension ``udpkit.net._mmsg`` (built by ``pip install`` when a C compiler
  is there): the call and each record's fields in C.
- ``ctypes``: the same through ``ctypes``, for where the extension was not built.

:func:`chosen` picks one (or neither: then callers keep their one-per-call paths); its docstring
holds the measurements behind the choice.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os
import socket
import struct
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["Batch", "CtypesBatch", "MSG_WAITFORONE", "NTP_TIME_TRAILER", "available", "chosen", "implementations", "new_batch"]

_MSG_DONTWAIT = int(socket.MSG_DONTWAIT)
_MSG_TRUNC = int(socket.MSG_TRUNC)
#: recvmmsg's flag to block for the first datagram only, then take what is queued.
MSG_WAITFORONE = 0x10000
_ADDR_SPACE = 28  # sockaddr_in6, the larger of the two
#: ``send``'s trailer that is the send time as an NTP timestamp (RFC 5905 §6), read by the call
#: itself right before the system call (the C extension reads it in C: nothing comes between)
NTP_TIME_TRAILER = 1
_CONTROL_SPACE = 256

try:
    from udpkit.net import _mmsg as _c  # type: ignore[attr-defined]
except ImportError:  # not built (no compiler at install time), or not Linux
    _c = None


class Batch(Protocol):
    """What both implementations offer; ``count`` datagrams of up to ``size`` bytes per call."""

    count: int
    size: int
    #: ``reflect``'s totals since the batch was made (datagrams and bytes echoed, replies and bytes
    #: the kernel took), up to date while a call runs: another thread reads them live
    reflected_in: int
    reflected_in_bytes: int
    reflected_out: int
    reflected_out_bytes: int

    def receive(self, fd: int, flags: int = ..., /) -> list[Any]:
        """The waiting datagrams (up to ``count``) as :class:`~udpkit.net.rx.Datagram` records."""

    def tally(self, fd: int, flags: int = ..., /) -> tuple[int, int, list[Any]]:
        """(datagrams, bytes, senders without consecutive repeats): a discard service's read."""

    def send(self, fd: int, family: int, messages: Sequence[tuple[Any, ...]], start: int = ...,
             trailer: bytes | int | None = ..., most: int = ..., /) -> int:
        """``messages[start:start+count]`` — (payload, peer) or (payload, peer, source address);
        peer ``None`` on a connected socket — in one ``sendmmsg``, each followed by ``trailer`` if
        given (written once for the batch, just before the call), at most ``most`` system-call
        messages (0: no limit): how many it took."""

    def reflect(self, fd: int, flags: int = ..., lowest_port: int = ..., rounds: int = ...,
                senders: list[Any] | None = ..., /) -> tuple[int, int, list[Any], int, int, list[int], list[Any], int]:
        """An echo's read and answer in one call: each waiting unicast datagram from a port of at
        least ``lowest_port`` sent back unchanged from where it came to; again, up to ``rounds``
        times, while nothing else happens (the C batch; ctypes does one round). (datagrams, bytes,
        senders) of those, as ``tally`` (senders: appended to the list given, as they come, and
        that list returned); (sent, sent bytes) of the replies; each refused reply's
        errno; the other datagrams' records (a low port, a group or broadcast address; in the
        ctypes batch, also those to be answered from their destination), for the caller; the
        errno reported in place of a datagram, or 0."""

    def forward(self, from_fd: int, to_fd: int, flags: int = ..., /) -> tuple[int, int, int, int, list[int], int]:
        """A relay's hop: the datagrams waiting on ``from_fd`` sent on, unchanged and in order, on
        the connected socket ``to_fd``. (datagrams, bytes) read; (sent, sent bytes); each refused
        send's errno (a full buffer skips one, any other error ends the call); the errno reported
        on ``from_fd`` in place of a datagram, or 0."""


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_IoVec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t), ("msg_flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


def _libc() -> Any:
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        recv, send = lib.recvmmsg, lib.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.POINTER(_MMsgHdr), ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recv.restype = ctypes.c_int
    send.argtypes = [ctypes.c_int, ctypes.POINTER(_MMsgHdr), ctypes.c_uint, ctypes.c_int]
    send.restype = ctypes.c_int
    return lib


_LIB = _libc()


def implementations() -> list[str]:
    """The batch implementations this interpreter can use, best first."""
    return (["c"] if _c is not None else []) + (["ctypes"] if _LIB is not None else [])


def available() -> bool:
    """Whether ``recvmmsg``/``sendmmsg`` can be called here at all."""
    return bool(implementations())


def chosen() -> str | None:
    """The implementation the listener reads with, or ``None`` for one datagram per call.

    ``UDPKIT_MMSG`` overrides: ``0`` (one per call), ``ctypes`` or ``c``. Unset: the C extension
    when it was built, else one per call — not ctypes, which measured slower than one per call.

    Measured (``bench/listen_bench.py``, ``bench/ntp_bench.py``, same runs, this 2-core machine,
    ranges in the README's "How fast"): in-process, reading 48-byte datagrams with their
    timestamps and destinations costs 1.0 µs each through the extension, 2.9 µs one per
    ``recvmsg`` and more through ctypes, whose per-field accesses cost as much as the calls saved.
    """
    wanted = os.environ.get("UDPKIT_MMSG", "").strip().lower()
    have = implementations()
    if wanted in ("0", "no", "off", "plain"):
        return None
    if wanted in ("c", "ctypes"):
        return wanted if wanted in have else None
    return "c" if "c" in have else None


def new_batch(count: int = 64, size: int = 65536, ancillary: bool = False, kind: str | None = None) -> Batch | None:
    """A batch of ``kind`` (default: :func:`chosen`), or ``None`` when there is none to make."""
    from udpkit.net.rx import Datagram  # the record type; rx imports nothing from here at run time

    kind = chosen() if kind is None else kind
    if kind == "c" and _c is not None:
        made: Batch = _c.Batch(count, size, ancillary, Datagram)
        return made
    if kind == "ctypes" and _LIB is not None:
        return CtypesBatch(count, size, ancillary)
    return None


class CtypesBatch:
    """:class:`Batch` through ``ctypes``: the fallback where the extension was not built."""

    def __init__(self, count: int = 64, size: int = 65536, ancillary: bool = False) -> None:
        if _LIB is None:
            raise OSError(_errno.ENOSYS, "recvmmsg is not available here")
        self.count, self.size = count, size
        self.reflected_in = self.reflected_in_bytes = self.reflected_out = self.reflected_out_bytes = 0
        control = _CONTROL_SPACE if ancillary else 0
        self.control_size = control
        self.buffer = (ctypes.c_char * (count * size))()
        self.names = (ctypes.c_char * (count * _ADDR_SPACE))()
        self.controls = (ctypes.c_char * max(1, count * control))()
        self.iovecs = (_IoVec * count)()
        self.headers = (_MMsgHdr * count)()
        base = ctypes.addressof(self.buffer)
        names = ctypes.addressof(self.names)
        controls = ctypes.addressof(self.controls)
        for i in range(count):
            self.iovecs[i].iov_base = base + i * size
            self.iovecs[i].iov_len = size
            hdr = self.headers[i].msg_hdr
            hdr.msg_name = names + i * _ADDR_SPACE
            hdr.msg_namelen = _ADDR_SPACE
            hdr.msg_iov = ctypes.pointer(self.iovecs[i])
            hdr.msg_iovlen = 1
            if control:
                hdr.msg_control = controls + i * control
                hdr.msg_controllen = control
        # The kernel shortens the name and control lengths to what it wrote: one memmove of this
        # pristine copy gives the room back, instead of a ctypes access per field.
        self._pristine = bytes(self.headers)
        self._iov_pristine = bytes(self.iovecs)
        self.view = memoryview(self.buffer).cast("B")
        self.name_view = memoryview(self.names).cast("B")
        self.control_view = memoryview(self.controls).cast("B")
        self._peers: dict[bytes, tuple[Any, ...]] = {}
        self._recv = _LIB.recvmmsg
        self._send = _LIB.sendmmsg

    def _call(self, fd: int, flags: int) -> int:
        ctypes.memmove(self.headers, self._pristine, len(self._pristine))
        n = self._recv(fd, self.headers, self.count, flags, None)
        if n < 0:
            code = ctypes.get_errno()
            if code in (_errno.EAGAIN, _errno.EINTR):
                return 0
            raise OSError(code, os.strerror(code))
        return int(n)

    def _peer(self, i: int, namelen: int) -> Any:
        if namelen == 0:
            return None
        raw = bytes(self.name_view[i * _ADDR_SPACE : i * _ADDR_SPACE + namelen])
        found = self._peers.get(raw)
        if found is None:
            found = _decode_name(raw)
            if len(self._peers) > 4096:  # bounded: a flood of senders only costs decodes
                self._peers.clear()
            self._peers[raw] = found
        return found

    def receive(self, fd: int, flags: int = _MSG_DONTWAIT) -> list[Any]:
        from udpkit.net.rx import datagram_of

        n = self._call(fd, flags)
        out = []
        for i in range(n):
            hdr = self.headers[i]
            hdr_msg = hdr.msg_hdr
            start = i * self.size
            data = bytes(self.view[start : start + min(hdr.msg_len, self.size)])
            out.append(datagram_of(data, self._ancillary(i, hdr_msg.msg_controllen), hdr_msg.msg_flags,
                                   self._peer(i, hdr_msg.msg_namelen)))
        return out

    def tally(self, fd: int, flags: int = _MSG_DONTWAIT) -> tuple[int, int, list[Any]]:
        n = self._call(fd, flags)
        total = 0
        senders: list[Any] = []
        for i in range(n):
            hdr = self.headers[i]
            total += hdr.msg_len
            peer = self._peer(i, hdr.msg_hdr.msg_namelen)
            if not senders or senders[-1] is not peer:
                senders.append(peer)
        return n, total, senders

    def _ancillary(self, i: int, length: int) -> list[tuple[int, int, bytes]]:
        """Datagram ``i``'s control messages, as ``recvmsg`` returns them."""
        if not length:
            return []
        raw = bytes(self.control_view[i * self.control_size : i * self.control_size + length])
        out, at = [], 0
        align = ctypes.sizeof(ctypes.c_size_t)
        while at + _CMSG_HEADER.size <= len(raw):
            cmsg_len, level, kind = _CMSG_HEADER.unpack_from(raw, at)
            if cmsg_len < _CMSG_HEADER.size or at + cmsg_len > len(raw):
                break
            out.append((level, kind, raw[at + _CMSG_HEADER.size : at + cmsg_len]))
            at += (cmsg_len + align - 1) & ~(align - 1)
        return out

    def send(self, fd: int, family: int, messages: Sequence[tuple[Any, ...]], start: int = 0,
             trailer: bytes | int | None = None, most: int = 0) -> int:
        if isinstance(trailer, int):
            trailer = _ntp_now()
        n = 0
        headers, name_view = self.headers, self.name_view
        for message in messages[start : start + (min(most, self.count) if most else self.count)]:
            payload, peer = message[0], message[1]
            if len(message) > 2 and message[2] is not None:
                break  # a source address (IP_PKTINFO): the caller's send_reply sets it
            if trailer:
                payload = payload + trailer
            if len(payload) > self.size:
                break
            try:
                name = b"" if peer is None else _encode_name(family, peer)  # None: a connected socket's
            except (OSError, ValueError, TypeError, IndexError):
                break  # not a numeric address: the caller's sendto resolves it
            at = n * self.size
            self.view[at : at + len(payload)] = payload
            self.iovecs[n].iov_len = len(payload)
            name_view[n * _ADDR_SPACE : n * _ADDR_SPACE + len(name)] = name
            hdr = headers[n].msg_hdr
            hdr.msg_namelen = len(name)
            hdr.msg_controllen = 0
            n += 1
        if not n:
            return 0
        sent = self._send(fd, headers, n, 0)
        ctypes.memmove(self.iovecs, self._iov_pristine, len(self._iov_pristine))
        if sent < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return int(sent)

    def reflect(self, fd: int, flags: int = _MSG_DONTWAIT, lowest_port: int = 1024, rounds: int = 1,
                senders: list[Any] | None = None) -> tuple[int, int, list[Any], int, int, list[int], list[Any], int]:
        # One round. A datagram to be answered from its destination (a wildcard-bound socket's) is
        # left to the caller with the rest: send() leaves source addresses to send_reply.
        echoed, rest = [], []
        try:
            got = self.receive(fd, flags)
        except OSError as exc:
            return 0, 0, [] if senders is None else senders, 0, 0, [], [], exc.errno or _errno.EIO
        for record in got:
            if record[1] is None:
                continue  # a wake-up by shutdown(SHUT_RD)
            if record[6] and record[2] is None and record[1][0] and record[1][1] >= lowest_port:
                echoed.append(record)
            else:
                rest.append(record)
        senders = [] if senders is None else senders
        previous = None
        for record in echoed:
            if record[1] is not previous:
                senders.append(record[1])
                previous = record[1]
        family = socket.AF_INET6 if echoed and len(echoed[0][1]) > 2 else socket.AF_INET
        start = sent = sent_bytes = 0
        failures: list[int] = []
        for _ in range(len(echoed)):  # each round sends at least one reply or skips one
            if start >= len(echoed):
                break
            try:
                took = self.send(fd, family, echoed, start)
            except OSError as exc:
                took, code = 0, exc.errno or _errno.EIO
            else:
                code = _errno.EINVAL  # (took nothing: a peer send() cannot encode)
            if not took:
                failures.append(code)
                start += 1
                continue
            sent += took
            sent_bytes += sum(len(record[0]) for record in echoed[start : start + took])
            start += took
        received_bytes = sum(len(record[0]) for record in echoed)
        self.reflected_in += len(echoed)
        self.reflected_in_bytes += received_bytes
        self.reflected_out += sent
        self.reflected_out_bytes += sent_bytes
        return len(echoed), received_bytes, senders, sent, sent_bytes, failures, rest, 0

    def forward(self, from_fd: int, to_fd: int, flags: int = _MSG_DONTWAIT) -> tuple[
            int, int, int, int, list[int], int]:
        try:
            got = self.receive(from_fd, flags)
        except OSError as exc:
            return 0, 0, 0, 0, [], exc.errno or _errno.EIO
        messages = [(record[0], None) for record in got]
        start = sent = sent_bytes = 0
        failures: list[int] = []
        for _ in range(len(messages)):  # each round sends at least one or skips one
            if start >= len(messages):
                break
            try:
                took = self.send(to_fd, socket.AF_INET, messages, start)  # (no address: the family is unused)
            except OSError as exc:
                failures.append(exc.errno or _errno.EIO)
                if exc.errno not in (_errno.EAGAIN, _errno.EWOULDBLOCK):
                    break
                start += 1
                continue
            if not took:
                break
            sent += took
            sent_bytes += sum(len(message[0]) for message in messages[start : start + took])
            start += took
        return len(got), sum(len(record[0]) for record in got), sent, sent_bytes, failures, 0


def _ntp_now() -> bytes:
    """The time now as an NTP timestamp: seconds since 1900 modulo 2**32, then a 32-bit fraction."""
    import time

    nanos = time.time_ns()
    seconds, rest = divmod(nanos, 1_000_000_000)
    return struct.pack("!II", (seconds + 2_208_988_800) & 0xFFFFFFFF, (rest << 32) // 1_000_000_000)


_CMSG_HEADER = struct.Struct("=QiI") if ctypes.sizeof(ctypes.c_size_t) == 8 else struct.Struct("=IiI")


def _decode_name(raw: bytes) -> tuple[Any, ...]:
    family = struct.unpack_from("=H", raw)[0]
    if family == socket.AF_INET:
        port, = struct.unpack_from("!H", raw, 2)
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    if family == socket.AF_INET6:
        port, flow = struct.unpack_from("!HI", raw, 2)
        scope, = struct.unpack_from("=I", raw, 24)
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flow, scope
    return ("", 0)


def _encode_name(family: int, peer: tuple[Any, ...]) -> bytes:
    if family == socket.AF_INET6 and "%" in peer[0]:
        raise ValueError("a scope by name is left to sendto")
    if family == socket.AF_INET:
        return struct.pack("=H", socket.AF_INET) + struct.pack("!H", peer[1]) + socket.inet_pton(socket.AF_INET, peer[0]) \
            + b"\0" * 8
    flow = peer[2] if len(peer) > 2 else 0
    scope = peer[3] if len(peer) > 3 else 0
    return (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", peer[1], flow)
            + socket.inet_pton(socket.AF_INET6, peer[0]) + struct.pack("=I", scope))
