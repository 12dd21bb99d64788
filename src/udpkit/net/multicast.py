"""Group membership and the sending side of multicast and broadcast, as socket options.

A service receives a multicast group's datagrams only once a socket on the host has joined the group
on an interface (``--join 239.1.1.1%eth0``, socat's ``ip-add-membership=``). Joins use the
protocol-independent ``MCAST_JOIN_GROUP``/``MCAST_JOIN_SOURCE_GROUP`` (RFC 3678) with an interface
index, so IPv4 and IPv6, any-source and source-specific (``SOURCE@GROUP``) are one code path; only
socat's "group:interface-address" form needs the IPv4 ``ip_mreq`` options, which take an address.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import NamedTuple

from udpkit.errors import UdpkitError, UsageError

__all__ = ["Membership", "MulticastSend", "apply_send_options", "discovery_listener", "discovery_socket", "join",
           "parse_membership"]

MCAST_JOIN_GROUP = getattr(socket, "MCAST_JOIN_GROUP", 42)
MCAST_JOIN_SOURCE_GROUP = getattr(socket, "MCAST_JOIN_SOURCE_GROUP", 46)
IP_ADD_SOURCE_MEMBERSHIP = getattr(socket, "IP_ADD_SOURCE_MEMBERSHIP", 39)
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
IPV6_MULTICAST_ALL = 29
_SOCKADDR_STORAGE = 128
_GROUP_REQ = struct.Struct(f"=I4x{_SOCKADDR_STORAGE}s")
_GROUP_SOURCE_REQ = struct.Struct(f"=I4x{_SOCKADDR_STORAGE}s{_SOCKADDR_STORAGE}s")


class Membership(NamedTuple):
    """A group to join: ``group`` (an IPv4 or IPv6 multicast address), on ``interface`` (a name or
    index; ``None``: the one the routing table picks) or, socat's IPv4 form, on the interface that
    has ``local`` as its address; ``source``: only that sender's datagrams (source-specific)."""

    group: str
    interface: str | None = None
    source: str | None = None
    local: str | None = None

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.group else socket.AF_INET

    def __str__(self) -> str:
        text = f"{self.source}@{self.group}" if self.source else self.group
        if self.interface:
            text += f"%{self.interface}"
        elif self.local:
            text += f" on {self.local}"
        return text


def parse_membership(text: str) -> Membership:
    """``239.1.1.1``, ``239.1.1.1%eth0``, ``ff02::1:3%eth0``, ``10.0.0.2@232.1.1.1%eth0`` -> Membership.

    The group must be a multicast address and the source (if any) a unicast one of the same family.
    """
    source, at, rest = text.rpartition("@")
    group, _pct, interface = rest.strip("[]").partition("%")
    group = group.strip("[]")
    try:
        address = ipaddress.ip_address(group)
    except ValueError:
        raise UsageError(f"{text!r}: expected a multicast group such as 239.1.1.1%eth0 or ff02::1:3%eth0") from None
    if not address.is_multicast:
        raise UsageError(f"{group} is not a multicast address (224.0.0.0/4, ff00::/8)")
    if at:
        try:
            sender = ipaddress.ip_address(source.strip("[]"))
        except ValueError:
            raise UsageError(f"{text!r}: the source before @ must be an IP address") from None
        if sender.version != address.version or sender.is_multicast:
            raise UsageError(f"{text!r}: the source must be a unicast address of the group's family")
        source = str(sender)
    if interface and not interface.isdigit():
        try:
            socket.if_nametoindex(interface)
        except OSError:
            raise UsageError(f"{text!r}: no interface named {interface!r} here") from None
    return Membership(str(address), interface or None, source if at else None)


def _ifindex(interface: str | None) -> int:
    if not interface:
        return 0
    if interface.isdigit():
        return int(interface)
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        raise UsageError(f"no interface named {interface!r} here") from None


def _sockaddr(family: int, ip: str) -> bytes:
    if family == socket.AF_INET:
        raw = struct.pack("=H2x4s", socket.AF_INET, socket.inet_pton(socket.AF_INET, ip))
    else:
        raw = struct.pack("=H2xI16sI", socket.AF_INET6, 0, socket.inet_pton(socket.AF_INET6, ip), 0)
    return raw.ljust(_SOCKADDR_STORAGE, b"\0")


def join(sock: socket.socket, membership: Membership) -> None:
    """Join ``membership`` on ``sock`` (a socket of the group's family); one-line errors.

    The socket is also told to receive only the groups it joined itself (``IP_MULTICAST_ALL`` off):
    by default Linux hands a wildcard-bound socket the datagrams of every group any socket of the
    host joined on that port.
    """
    family = membership.family
    level = socket.IPPROTO_IP if family == socket.AF_INET else socket.IPPROTO_IPV6
    try:
        sock.setsockopt(level, IP_MULTICAST_ALL if family == socket.AF_INET else IPV6_MULTICAST_ALL, 0)
    except OSError:
        pass  # older kernels: the host-wide default stays
    try:
        if membership.local is not None:  # socat's GROUP:INTERFACE-ADDRESS (IPv4 only)
            group = socket.inet_pton(socket.AF_INET, membership.group)
            local = socket.inet_pton(socket.AF_INET, membership.local)
            if membership.source:
                source = socket.inet_pton(socket.AF_INET, membership.source)
                sock.setsockopt(socket.IPPROTO_IP, IP_ADD_SOURCE_MEMBERSHIP, group + local + source)
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group + local)
            return
        index = _ifindex(membership.interface)
        if membership.source:
            request = _GROUP_SOURCE_REQ.pack(index, _sockaddr(family, membership.group),
                                             _sockaddr(family, membership.source))
            sock.setsockopt(level, MCAST_JOIN_SOURCE_GROUP, request)
        else:
            sock.setsockopt(level, MCAST_JOIN_GROUP, _GROUP_REQ.pack(index, _sockaddr(family, membership.group)))
    except OSError as exc:
        hint = " (a link-local group needs an interface: GROUP%IFACE)" if exc.errno == 19 else ""
        raise UdpkitError(f"cannot join {membership}: {exc.strerror or exc}{hint}") from None


class MulticastSend(NamedTuple):
    """How datagrams to a group or broadcast address leave: socat's ``ip-multicast-if``,
    ``ip-multicast-loop``, ``ip-multicast-ttl``/``ipv6-multicast-hops`` and ``broadcast``."""

    interface: str | None = None
    loop: bool | None = None
    hops: int | None = None
    broadcast: bool = False


def apply_send_options(sock: socket.socket, options: MulticastSend) -> None:
    """Set ``options`` on ``sock``; an interface is a name, an index or (IPv4) one of its addresses."""
    v4 = sock.family == socket.AF_INET
    try:
        if options.broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if options.interface is not None:
            if v4:
                try:
                    local = socket.inet_pton(socket.AF_INET, options.interface)
                    request = struct.pack("=4s4si", b"\0" * 4, local, 0)
                except OSError:
                    request = struct.pack("=4s4si", b"\0" * 4, b"\0" * 4, _ifindex(options.interface))
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, request)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, _ifindex(options.interface))
        if options.loop is not None:
            sock.setsockopt(socket.IPPROTO_IP if v4 else socket.IPPROTO_IPV6,
                            socket.IP_MULTICAST_LOOP if v4 else socket.IPV6_MULTICAST_LOOP, int(options.loop))
        if options.hops is not None:
            sock.setsockopt(socket.IPPROTO_IP if v4 else socket.IPPROTO_IPV6,
                            socket.IP_MULTICAST_TTL if v4 else socket.IPV6_MULTICAST_HOPS, options.hops)
    except OSError as exc:
        raise UdpkitError(f"cannot set the multicast options: {exc.strerror or exc}") from None


def discovery_socket(family: int, interface_index: int, interface_address: str | None = None,
                     device: str | None = None) -> socket.socket:
    """A non-blocking UDP socket that asks one link: multicast leaves through the interface (by its
    IPv4 address, or its index for IPv6), broadcast is allowed, the hop limit is 1 (a question for
    the link, not beyond), and answers come back to its ephemeral port. ``device``: also bound to the
    interface (root), so 255.255.255.255 leaves through it."""
    sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, interface_index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
            sock.bind(("::", 0, 0, 0))
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            request = struct.pack("=4s4si", b"\0" * 4,
                                  socket.inet_pton(socket.AF_INET, interface_address or "0.0.0.0"), interface_index)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, request)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            if device is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
            sock.bind(("0.0.0.0", 0))
    except BaseException:
        sock.close()
        raise
    return sock


def discovery_listener(port: int) -> socket.socket:
    """A non-blocking IPv4 socket on ``0.0.0.0:port`` (shared with ``SO_REUSEADDR``) that reports each
    datagram's interface (``IP_PKTINFO``): for announcements a link broadcasts unasked (an NTP
    server's mode-5 packets). ``OSError`` when the port cannot be had (below 1024 without the right)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_PKTINFO", 8), 1)
        sock.bind(("0.0.0.0", port))
    except BaseException:
        sock.close()
        raise
    return sock
