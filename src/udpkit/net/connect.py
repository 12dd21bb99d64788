"""Connected UDP sockets, as netcat makes them: resolve, bind the source if asked, ``connect``; and
netcat's UDP "accept": wait for the first datagram, then connect to whoever sent it."""

from __future__ import annotations

import socket
from typing import Any

from udpkit.errors import UdpkitError

__all__ = ["HostNotFound", "accept_first", "bind_passive", "connect_udp"]


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
