"""Connected UDP sockets, as netcat makes them: resolve, bind the source if asked, ``connect``; and
netcat's UDP "accept": wait for the first datagram, then connect to whoever sent it."""

from __future__ import annotations

import os
import socket
from typing import Any

from udpkit.errors import UdpkitError

__all__ = ["HostNotFound", "accept_first", "bind_passive", "connect_udp", "tcp_upstream"]


class HostNotFound(UdpkitError):
    """``getaddrinfo`` failed; the message is netcat's."""


def _resolve(host: str | None, port: str, family: int, *, numeric: bool,
             passive: bool = False) -> list[tuple[Any, ...]]:
    flags = (socket.AI_NUMERICHOST if numeric else 0) | (socket.AI_PASSIVE if passive else 0)
    try:
        return socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, socket.IPPROTO_UDP, flags)
    except socket.gaierror as exc:
        raise HostNotFound(f'getaddrinfo for host "{host}" port {port}: {exc.strerror}') from None
    except UnicodeError:
        raise HostNotFound(f'getaddrinfo for host "{host}" port {port}: Name or service not known') from None


def connect_udp(host: str, port: str, family: int = socket.AF_UNSPEC, *, numeric: bool = False,
                source: str | None = None, source_port: int | None = None) -> tuple[socket.socket, str]:
    """A UDP socket connected to the first address of ``host`` that takes it, and that address as text.

    ``OSError`` from the last ``connect`` (no route, say) is raised as it is: netcat reports it and
    goes on to the next port."""
    error: OSError | None = None
    for fam, kind, proto, _canon, address in _resolve(host, port, family, numeric=numeric):
        sock = socket.socket(fam, kind | socket.SOCK_CLOEXEC, proto)
        try:
            if source is not None or source_port is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                (_f, _k, _p, _c, local), *_ = _resolve(source, str(source_port or 0), fam, numeric=numeric,
                                                      passive=source is None)
                sock.bind(local)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock, str(address[0])
    raise error or OSError("no address")


def bind_passive(host: str | None, port: str, family: int = socket.AF_UNSPEC, *,
                 numeric: bool = False) -> socket.socket:
    """netcat's ``-l``: a UDP socket bound to ``host`` (default: the first wildcard address) and ``port``."""
    error: OSError | None = None
    for fam, kind, proto, _canon, address in _resolve(host, port, family, numeric=numeric, passive=True):
        sock = socket.socket(fam, kind | socket.SOCK_CLOEXEC, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error or OSError("no address")


def accept_first(sock: socket.socket, timeout: float | None = None) -> tuple[str, int] | None:
    """Wait for a datagram (left queued for the reader), connect ``sock`` to its sender and return the
    sender; ``None`` if ``timeout`` seconds pass first."""
    sock.settimeout(timeout)
    try:
        _data, peer = sock.recvfrom(1, socket.MSG_PEEK)
    except TimeoutError:
        return None
    finally:
        sock.settimeout(None)
    sock.connect(peer)
    return str(peer[0]), int(peer[1])


def tcp_upstream(family: int, address: tuple[Any, ...]) -> socket.socket:
    """A non-blocking TCP socket whose connection to ``address`` has been started, not awaited (the
    UDP-to-TCP bridge opens one per session from its event loop: a slow upstream must not stall it).
    Sending before it is up raises ``BlockingIOError``; a refusal shows as ``ConnectionRefusedError``
    on the next send or receive. ``OSError`` (no route, no descriptor) is the caller's."""
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a datagram is a message: send it now
        code = sock.connect_ex(address)
        if code not in (0, 115):  # EINPROGRESS
            raise OSError(code, os.strerror(code))
    except BaseException:
        sock.close()
        raise
    return sock
