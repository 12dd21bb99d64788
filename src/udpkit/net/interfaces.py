"""This host's network interfaces as discovery needs them: name, index, flags, and the primary IPv4
address with its broadcast address (``SIOCGIF*`` ioctls: no netlink dump, no ``ip`` command)."""

from __future__ import annotations

import fcntl
import socket
import struct
from typing import NamedTuple

__all__ = ["Interface", "interface", "interfaces"]

_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_SIOCGIFBRDADDR = 0x8919
_IFF_UP, _IFF_BROADCAST, _IFF_LOOPBACK, _IFF_MULTICAST = 0x1, 0x2, 0x8, 0x1000


class Interface(NamedTuple):
    """An interface: ``address``/``broadcast`` are its primary IPv4 ones (``None`` if it has none)."""

    name: str
    ifindex: int
    up: bool
    loopback: bool
    multicast: bool
    address: str | None
    broadcast: str | None


def _ioctl(sock: socket.socket, request: int, name: str) -> bytes | None:
    try:
        return fcntl.ioctl(sock.fileno(), request, struct.pack("256s", name.encode()[:15]))
    except OSError:
        return None


def interface(name: str) -> Interface | None:
    """``name``'s flags and IPv4 addresses; ``None`` if there is no such interface."""
    try:
        index = socket.if_nametoindex(name)
    except OSError:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        raw = _ioctl(sock, _SIOCGIFFLAGS, name)
        flags = struct.unpack_from("H", raw, 16)[0] if raw else 0
        address = broadcast = None
        raw = _ioctl(sock, _SIOCGIFADDR, name)
        if raw:
            address = socket.inet_ntoa(raw[20:24])
            if flags & _IFF_BROADCAST:
                raw = _ioctl(sock, _SIOCGIFBRDADDR, name)
                broadcast = socket.inet_ntoa(raw[20:24]) if raw else None
    return Interface(name, index, bool(flags & _IFF_UP), bool(flags & _IFF_LOOPBACK), bool(flags & _IFF_MULTICAST),
                     address, broadcast if broadcast != "0.0.0.0" else None)


def interfaces() -> list[Interface]:
    """Every interface, in index order."""
    found = []
    for _index, name in socket.if_nameindex():
        info = interface(name)
        if info is not None:
            found.append(info)
    return found
