"""Many datagrams per system call: Linux's ``recvmmsg`` and ``sendmmsg`` through ``ctypes``.

Python's ``socket`` has neither, so a receive loop pays a system call and an interpreter round per
datagram. A :class:`Batch` owns preallocated ``mmsghdr``/``iovec``/address/control arrays, reused
call after call; the datagrams it received are memoryviews into its buffer (valid until the next
call), with their senders decoded once per distinct address. ``available()`` says whether the C
library has the calls (not on non-Linux systems, or a libc without them): callers keep their one-per-
call path for that case.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import socket
import struct
from typing import Any

__all__ = ["Batch", "available", "chosen"]

_MSG_DONTWAIT = int(socket.MSG_DONTWAIT)
_MSG_TRUNC = int(socket.MSG_TRUNC)
_ADDR_SPACE = 28  # sockaddr_in6, the larger of the two


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


def available() -> bool:
    """Whether ``recvmmsg``/``sendmmsg`` can be called here."""
    return _LIB is not None


def chosen() -> bool:
    """Whether the listener reads in batches: only when asked (``UDPKIT_MMSG=1``) and available.

    Measured (``bench/listen_bench.py``, ``bench/ntp_bench.py``, same runs, this 2-core machine):
    through ctypes, a batch saves system calls but each datagram's fields cost a ctypes access and
    a Python decode, which is as much as the call it saves — discard delivered the same (65.5–65.7 %
    batched, 66.4–69.5 % plain, other core busy) and NTP replies fell from 145–147k/s to
    114–115k/s. So the one-per-call paths stay the default; a C extension would be needed to win.
    """
    import os

    return available() and os.environ.get("UDPKIT_MMSG") == "1"


class Batch:
    """Room for ``count`` datagrams of up to ``size`` bytes each (and ``control`` bytes of ancillary
    data each), for :meth:`receive` and :meth:`send`."""

    def __init__(self, count: int = 64, size: int = 65536, control: int = 0) -> None:
        if _LIB is None:
            raise OSError(_errno.ENOSYS, "recvmmsg is not available here")
        self.count, self.size, self.control_size = count, size, control
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
            hdr.msg_iov = ctypes.pointer(self.iovecs[i])
            hdr.msg_iovlen = 1
            if control:
                hdr.msg_control = controls + i * control
        self.view = memoryview(self.buffer).cast("B")
        self.name_view = memoryview(self.names).cast("B")
        self._peers: dict[bytes, tuple[Any, ...]] = {}
        self._recv = _LIB.recvmmsg
        self._send = _LIB.sendmmsg

    def receive(self, sock: socket.socket, flags: int = _MSG_DONTWAIT) -> int:
        """Datagrams waiting on ``sock``, up to ``count``: how many (0 when none). An error the kernel
        reports in place of a datagram (an ICMP error, for one of ours) is raised as ``OSError``."""
        headers = self.headers
        for i in range(self.count):  # the kernel shortens these to what it wrote: give the room back
            hdr = headers[i].msg_hdr
            hdr.msg_namelen = _ADDR_SPACE
            hdr.msg_controllen = self.control_size
        n = self._recv(sock.fileno(), headers, self.count, flags, None)
        if n < 0:
            code = ctypes.get_errno()
            if code in (_errno.EAGAIN, _errno.EINTR):
                return 0
            raise OSError(code, _errno_text(code))
        return int(n)

    def length(self, i: int) -> int:
        return int(self.headers[i].msg_len)

    def data(self, i: int) -> memoryview:
        """Datagram ``i`` of the last receive, as a view into the buffer (copy it to keep it)."""
        start = i * self.size
        return self.view[start : start + min(self.headers[i].msg_len, self.size)]

    def truncated(self, i: int) -> bool:
        return bool(self.headers[i].msg_hdr.msg_flags & _MSG_TRUNC)

    def peer(self, i: int) -> tuple[Any, ...]:
        """Datagram ``i``'s sender as ``recvfrom`` gives it, decoded once per distinct address."""
        raw = bytes(self.name_view[i * _ADDR_SPACE : i * _ADDR_SPACE + self.headers[i].msg_hdr.msg_namelen])
        found = self._peers.get(raw)
        if found is None:
            found = _decode_name(raw)
            if len(self._peers) > 65536:
                self._peers.clear()
            self._peers[raw] = found
        return found

    def ancillary(self, i: int) -> list[tuple[int, int, bytes]]:
        """Datagram ``i``'s control messages, as ``recvmsg`` returns them."""
        length = self.headers[i].msg_hdr.msg_controllen
        raw = bytes(memoryview(self.controls).cast("B")[i * self.control_size : i * self.control_size + length])
        out, at = [], 0
        header = struct.Struct("=QiI") if ctypes.sizeof(ctypes.c_size_t) == 8 else struct.Struct("=IiI")
        align = ctypes.sizeof(ctypes.c_size_t)
        while at + header.size <= len(raw):
            cmsg_len, level, kind = header.unpack_from(raw, at)
            if cmsg_len < header.size or at + cmsg_len > len(raw):
                break
            out.append((level, kind, raw[at + header.size : at + cmsg_len]))
            at += (cmsg_len + align - 1) & ~(align - 1)
        return out

    def send(self, sock: socket.socket, messages: list[tuple[bytes, tuple[Any, ...]]]) -> int:
        """Send up to ``count`` (payload, peer) pairs in one call; how many the kernel took."""
        n = min(len(messages), self.count)
        headers, name_view = self.headers, self.name_view
        for i in range(n):
            payload, peer = messages[i]
            start = i * self.size
            self.view[start : start + len(payload)] = payload
            self.iovecs[i].iov_len = len(payload)
            name = _encode_name(sock.family, peer)
            name_view[i * _ADDR_SPACE : i * _ADDR_SPACE + len(name)] = name
            hdr = headers[i].msg_hdr
            hdr.msg_namelen = len(name)
            hdr.msg_controllen = 0
        sent = self._send(sock.fileno(), headers, n, 0)
        for i in range(n):
            self.iovecs[i].iov_len = self.size
        if sent < 0:
            code = ctypes.get_errno()
            if code in (_errno.EAGAIN, _errno.EINTR):
                return 0
            raise OSError(code, _errno_text(code))
        return int(sent)


def _errno_text(code: int) -> str:
    import os

    return os.strerror(code)


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
    if family == socket.AF_INET:
        return struct.pack("=H", socket.AF_INET) + struct.pack("!H", peer[1]) + socket.inet_pton(socket.AF_INET, peer[0]) \
            + b"\0" * 8
    flow = peer[2] if len(peer) > 2 else 0
    scope = peer[3] if len(peer) > 3 else 0
    return (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", peer[1], flow)
            + socket.inet_pton(socket.AF_INET6, peer[0].partition("%")[0]) + struct.pack("=I", scope))
