"""Socket addresses as udpkit spells them: ``123``, ``1.2.3.4:53``, ``[::1]:123``, ``udp6:123``, ``1-1024,5353``.

An :class:`Endpoint` is an (ip, port, family, interface) value. Parsing is pure and strict: anything
that is not exactly an address raises :class:`~udpkit.errors.UsageError` with a message naming the
bad part, because these strings come from people typing commands.
"""

from __future__ import annotations

import socket
from functools import cache
from udpkit.errors import UsageError

TYPE_CHECKING = False  # typing is not imported at run time: see udpkit._typing
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from udpkit._typing import NamedTuple

__all__ = [
    "Endpoint",
    "format_endpoint",
    "parse_address",
    "parse_ip",
    "parse_port",
    "parse_ports",
    "udp_service_port",
    "udp_services",
]

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6


class Endpoint(NamedTuple):
    """One end of a UDP socket.

    A NamedTuple rather than a dataclass: the socket inventory builds two per socket, tens of thousands
    at a time, and a tuple is built at C speed (see DESIGN.md §3 and ``bench/ss_bench.py``).
    """

    ip: str
    port: int
    family: socket.AddressFamily
    interface: str | None = None

    def __str__(self) -> str:
        return format_endpoint(self)


def format_endpoint(ep: Endpoint) -> str:
    """``Endpoint('::1', 123, AF_INET6)`` -> ``"[::1]:123"``; an interface is shown as ``%if``."""
    host = ep.ip
    if ep.interface:
        host = f"{host}%{ep.interface}"
    if ep.family == AF_INET6:
        host = f"[{host}]"
    return f"{host}:{ep.port}"


def parse_port(text: str, *, allow_zero: bool = True) -> int:
    """``"123"`` -> ``123``. Rejects signs, spaces, and anything outside 0..65535 (1..65535 if not ``allow_zero``)."""
    if not text.isdigit() or not text.isascii():
        raise UsageError(f"bad port {text!r}: expected a number from {0 if allow_zero else 1} to 65535")
    port = int(text)
    if port > 65535 or (port == 0 and not allow_zero):
        raise UsageError(f"port {text} out of range: expected {0 if allow_zero else 1} to 65535")
    return port


def parse_ports(text: str) -> list[int]:
    """``"53,123,1000-1002"`` -> ``[53, 123, 1000, 1001, 1002]`` (sorted, without duplicates; 1..65535).

    nmap's forms too: ``-`` (every port), open ranges (``-1024``, ``60000-``), and the protocol
    prefixes of ``-p U:53,161,T:80``: ``U:`` ports are ours, ``T:`` (TCP) and ``S:`` (SCTP) ones are
    refused with one line, as this is a UDP tool.
    """
    ports: set[int] = set()
    protocol = "U"
    for part in text.split(","):
        head, colon, rest = part.partition(":")
        if colon:
            if head.upper() not in ("U", "T", "S"):
                raise UsageError(f"bad port list {text!r}: unknown protocol prefix {head + ':'!r} (U: is UDP)")
            protocol, part = head.upper(), rest
        if protocol != "U":
            kind = "TCP" if protocol == "T" else "SCTP"
            raise UsageError(f"bad port list {text!r}: {protocol}: names {kind} ports; udpkit probes UDP (use U: or no prefix)")
        if not part:
            raise UsageError(f"bad port list {text!r}: empty element")
        low, sep, high = part.partition("-")
        first = parse_port(low, allow_zero=False) if low else 1
        last = (parse_port(high, allow_zero=False) if high else 65535) if sep else first
        if last < first:
            raise UsageError(f"bad port range {part!r}: {first} is greater than {last}")
        ports.update(range(first, last + 1))
    return sorted(ports)


def parse_ip(text: str) -> tuple[socket.AddressFamily, str, str | None]:
    """``"fe80::1%eth0"`` -> ``(AF_INET6, "fe80::1", "eth0")``; ``"127.0.0.1"`` -> ``(AF_INET, "127.0.0.1", None)``.

    Only numeric addresses: resolving names is I/O and belongs to the caller.
    """
    host, _, scope = text.partition("%")
    for family in (AF_INET, AF_INET6):
        try:
            packed = socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        if scope and family == AF_INET:
            break
        return family, socket.inet_ntop(family, packed), scope or None
    raise UsageError(f"bad IP address {text!r}")


_WILDCARD = {AF_INET: "0.0.0.0", AF_INET6: "::"}
_SCHEMES = {"udp": None, "udp4": AF_INET, "udp6": AF_INET6}


def parse_address(text: str) -> tuple[Endpoint, ...]:
    """Parse a listening or target address into one endpoint per family it names.

    ``"123"`` -> wildcard on both families (``0.0.0.0:123`` and ``[::]:123``), as the tutorial's two
    socat commands make; ``"udp4:123"`` / ``"udp6:123"`` -> one family; ``"127.0.0.1:53"``,
    ``"[::1]:123"`` and ``"[fe80::1%eth0]:123"`` -> exactly that address.
    """
    rest = text
    families: tuple[socket.AddressFamily, ...] = (AF_INET, AF_INET6)
    scheme, sep, after = text.partition(":")
    if sep and scheme.lower() in _SCHEMES:
        wanted = _SCHEMES[scheme.lower()]
        families = (wanted,) if wanted is not None else families
        rest = after
    if rest.isdigit():
        port = parse_port(rest)
        return tuple(Endpoint(_WILDCARD[f], port, f) for f in families)
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or not tail.startswith(":"):
            raise UsageError(f"bad address {text!r}: expected [IPV6]:PORT")
        port_text = tail[1:]
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon or ":" in host:
            raise UsageError(f"bad address {text!r}: expected PORT, HOST:PORT or [IPV6]:PORT")
    family, ip, interface = parse_ip(host)
    if family not in families:
        raise UsageError(f"bad address {text!r}: {ip} is not an {'IPv4' if families == (AF_INET,) else 'IPv6'} address")
    return (Endpoint(ip, parse_port(port_text), family, interface),)


def udp_service_port(name: str) -> int | None:
    """A UDP service name -> its port from the services database (``"ntp"`` -> 123); ``None`` if it
    names none (or cannot be a name: a NUL byte)."""
    try:
        return socket.getservbyname(name, "udp")
    except (OSError, ValueError):
        return None


@cache
def udp_services(path: str = "/etc/services") -> dict[int, str]:
    """Port -> the first UDP service name in the services database, read once (a scan names 65,535
    ports; ``getservbyport`` rereads the file for each)."""
    names: dict[int, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as db:
            for line in db:
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 2 and fields[1].endswith("/udp"):
                    port = fields[1][:-4]
                    if port.isdigit():
                        names.setdefault(int(port), fields[0])
    except OSError:
        pass
    return names
