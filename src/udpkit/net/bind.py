"""Binding UDP sockets: dual-stack or v6-only, address reuse, device binding, buffer size, and the
kernel facilities the listener reads (receive timestamps, drop counter, destination address)."""

from __future__ import annotations

import errno
import socket
from typing import Any, NamedTuple

from udpkit.addr import Endpoint
from udpkit.errors import PermissionDenied, UdpkitError, UsageError
from udpkit.net.multicast import Membership, MulticastSend, apply_send_options, join

__all__ = ["BindOptions", "bind_udp", "free_port_pair", "receive_buffer", "rmem_max", "set_receive_buffer",
           "unprivileged_port_start", "upstream_socket"]

# Constants Python's socket module lacks on some versions (linux/socket.h, linux/in.h, linux/in6.h).
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)


class BindOptions(NamedTuple):
    """How to bind. ``v6only``: for IPv6 sockets, ``True`` (the tutorial's ``ipv6only=1``) or
    ``False`` (dual-stack: IPv4 peers arrive as ``::ffff:a.b.c.d``)."""

    v6only: bool = True
    reuseaddr: bool = False
    reuseport: bool = False
    device: str | None = None
    rcvbuf: int | None = None
    #: report each datagram's kernel receive time (``SO_TIMESTAMPNS``) — a cost per datagram,
    #: asked for only when a recording or a time service uses it
    timestamps: bool = True
    #: report each datagram's destination address (``IP_PKTINFO``), so a wildcard-bound service
    #: answers from the address it was asked on
    pktinfo: bool = True
    #: groups to join once bound (those of the socket's family; see :mod:`udpkit.net.multicast`)
    memberships: tuple[Membership, ...] = ()
    #: how datagrams to groups and broadcast addresses leave (``SO_BROADCAST``, multicast interface…)
    send: MulticastSend | None = None


SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for a receive buffer of ``size`` bytes (``SO_RCVBUF``) and return what the socket got
    (:func:`receive_buffer`). The kernel caps ``SO_RCVBUF`` at ``net.core.rmem_max`` without a
    word (socat's ``rcvbuf=`` is cut the same way); when it did, ``SO_RCVBUFFORCE`` goes past the
    cap for a process with CAP_NET_ADMIN (root), as the size was asked for."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    if receive_buffer(sock) < size:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except OSError:
            pass  # (EPERM: not privileged; the capped size stands, and the caller says so)
    return receive_buffer(sock)


def receive_buffer(sock: socket.socket) -> int:
    """The receive buffer's size as it was asked for: the kernel keeps and reports twice that
    (the other half is its bookkeeping), which is what ``ss -m`` shows as ``rb``."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2


def rmem_max() -> int | None:
    """``net.core.rmem_max``: the largest receive buffer an unprivileged socket may ask for."""
    try:
        with open("/proc/sys/net/core/rmem_max", "rb") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return None


def _meminfo_works(sock: socket.socket) -> bool:
    """Does the kernel report this socket's drop count (``SO_MEMINFO``, Linux >= 4.12)?"""
    try:
        return len(sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36)) >= 36
    except OSError:
        return False


def unprivileged_port_start() -> int:
    """The lowest port an unprivileged process may bind (``net.ipv4.ip_unprivileged_port_start``)."""
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start", "rb") as fh:  # bytes: no codec import needed
            return int(fh.read())
    except (OSError, ValueError):
        return 1024


def bind_udp(endpoint: Endpoint, options: BindOptions = BindOptions()) -> socket.socket:
    """A non-blocking UDP socket bound to ``endpoint``; failures are one-line UdpkitErrors."""
    sock = socket.socket(endpoint.family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if endpoint.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(options.v6only))
        if options.pktinfo:
            if endpoint.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            if endpoint.family == socket.AF_INET or not options.v6only:
                # on a dual-stack socket too: IPv4 datagrams then also carry in_pktinfo, whose
                # ipi_spec_dst tells a broadcast destination from a unicast one
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        if options.timestamps:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if not _meminfo_works(sock):
            # a kernel before 4.12: drops are learnt per datagram. Otherwise SO_MEMINFO is read
            # when the count is wanted, and the kernel writes no drop count into every datagram's
            # control data (a cost paid exactly when a flood overflows the queue)
            sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        if options.reuseaddr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if options.reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        device = options.device or endpoint.interface
        if device:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
            except OSError as exc:
                if exc.errno == errno.EPERM:
                    raise PermissionDenied(f"binding to device {device} needs CAP_NET_RAW (run as root)") from None
                raise UsageError(f"cannot bind to device {device!r}: {exc.strerror}") from None
        if options.rcvbuf:
            set_receive_buffer(sock, options.rcvbuf)
        address: tuple[str, int] | tuple[str, int, int, int] = (endpoint.ip, endpoint.port)
        ip, _, scope = endpoint.ip.partition("%")  # fe80::1%3 (a session's link-local address): the scope
        if endpoint.family == socket.AF_INET6 and scope:  # must go in the tuple, Python ignores it in the text
            address = (ip, endpoint.port, 0, int(scope) if scope.isdigit() else socket.if_nametoindex(scope))
        elif endpoint.family == socket.AF_INET6 and endpoint.interface:
            address = (endpoint.ip, endpoint.port, 0, socket.if_nametoindex(endpoint.interface))
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise _bind_error(endpoint, exc) from None
    except BaseException:
        sock.close()
        raise
    try:
        for membership in options.memberships:
            if membership.family == endpoint.family:
                join(sock, membership)
        if options.send is not None:
            apply_send_options(sock, options.send)
    except BaseException:
        sock.close()
        raise
    return sock


def upstream_socket(family: int, address: tuple[Any, ...], source: tuple[str, int] | None = None,
                    reuseaddr: bool = False, *, connect: bool = True, send: MulticastSend | None = None,
                    memberships: tuple[Membership, ...] = (), rcvbuf: int | None = None) -> socket.socket:
    """A non-blocking UDP socket connected to ``address`` (a relay's way to its upstream, a client's to
    its peer), bound first to ``source`` when given; ``OSError`` (no route, no file descriptor left,
    the source taken) is the caller's. ``connect=False``: left unconnected, for a client that sends
    to a group or a broadcast address and hears answers from anyone (socat's UDP-DATAGRAM), with
    ``send`` options and ``memberships`` joined. ``rcvbuf``: ``SO_RCVBUF``, as the listening side
    has it (a relay's upstream answers in bursts as large as what it is sent)."""
    sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if rcvbuf:
            set_receive_buffer(sock, rcvbuf)
        if reuseaddr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if source is not None or memberships:
            host, port = source or ("", address[1] if memberships else 0)
            sock.bind((host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        for membership in memberships:
            join(sock, membership)
        if send is not None:
            apply_send_options(sock, send)
        if connect:
            sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def free_port_pair(tries: int = 50, lowest: int = 1024) -> int | None:
    """A port (at least ``lowest``) free on both 0.0.0.0 and [::] at this moment, or ``None``."""
    for _ in range(tries):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4:
            v4.bind(("0.0.0.0", 0))
            port = int(v4.getsockname()[1])
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as v6:
                    v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    v6.bind(("::", port))
            except OSError:
                continue
        if port >= lowest:
            return port
    return None


def _bind_error(endpoint: Endpoint, exc: OSError) -> UdpkitError:
    where = f"udp {endpoint}"
    if exc.errno == errno.EACCES:
        return PermissionDenied(
            f"cannot bind {where}: ports below {unprivileged_port_start()} need root or CAP_NET_BIND_SERVICE;"
            f" use a port >= 1024 (or run with sudo)"
        )
    if exc.errno == errno.EADDRINUSE:
        return UdpkitError(f"cannot bind {where}: address already in use (see: udpkit ss -ulnp 'sport = :{endpoint.port}')")
    if exc.errno == errno.EADDRNOTAVAIL:
        return UdpkitError(f"cannot bind {where}: no such local address on this host")
    return UdpkitError(f"cannot bind {where}: {exc.strerror or exc}")
