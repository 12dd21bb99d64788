"""Discovery: ask a link who is there, with the catalogue's own requests sent to each protocol's
group or to the link's broadcast address, and list every host that answered with what it said.

============  ======================================  ==========================================
service       IPv4                                    IPv6
============  ======================================  ==========================================
ssdp          M-SEARCH to 239.255.255.250:1900        [ff02::c]:1900
mdns          ``_services._dns-sd._udp.local`` PTR    [ff02::fb]:5353
              (legacy unicast) to 224.0.0.251:5353
wsd           WS-Discovery Probe to 239.255.255.250   [ff02::c]:3702
              :3702
netbios-ns    node status for ``*`` to the broadcast  —
              address :137
snmp          get sysDescr (``public``) to the        —
              broadcast address :161
ntp           a mode-3 client request to the          —
              broadcast address :123; and, where port
              123 can be had, the mode-5 packets a
              broadcast server sends unasked
============  ======================================  ==========================================

Each (interface, family, service) has a socket of its own, so an answer is read by the probe that
asked, whatever port it comes from (an SSDP device answers from any port). Answers are checked by
the probe's recogniser: where the protocol carries something of ours (a DNS id, an SNMP request id,
NTP's origin stamp, WS-Discovery's RelatesTo, NetBIOS's transaction id) only an answer to our own
request counts and the result says ``verified``; SSDP answers carry nothing of the request and are
reported as unverified. Everything is bounded: answers read per socket per wake-up, hosts kept
(:data:`MAX_FOUND`), bytes per answer, and the time (``timeout``).

``Discovery`` is the sans-I/O part (requests to send, answers in, results out); :func:`discover`
runs it on this host's interfaces.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from udpkit.errors import UdpkitError, UsageError
from udpkit.net import Interface, discovery_listener, discovery_socket, interface, interfaces
from udpkit.services.base import ServiceProbe
from udpkit.services.ntp import MODE_BROADCAST, decode_packet, refid_text
from udpkit.services.registry import probe_for

__all__ = ["DEFAULT_TIMEOUT", "Discovery", "Found", "MAX_FOUND", "Request", "SERVICES", "discover", "identity",
           "requests_for"]

#: The services asked, in the order they are listed.
SERVICES = ("ssdp", "mdns", "wsd", "netbios-ns", "snmp", "ntp")
DEFAULT_TIMEOUT = 2.0
#: Hosts (host, service pairs) kept; more are counted, not listed.
MAX_FOUND = 4096
_GROUPS: dict[str, tuple[int, str | None, str | None]] = {
    # service: (port, IPv4 group or None for the broadcast address, IPv6 group or None for none)
    "ssdp": (1900, "239.255.255.250", "ff02::c"),
    "mdns": (5353, "224.0.0.251", "ff02::fb"),
    "wsd": (3702, "239.255.255.250", "ff02::c"),
    "netbios-ns": (137, None, None),
    "snmp": (161, None, None),
    "ntp": (123, None, None),
}


class Request(NamedTuple):
    """One question for one link: ``service``'s request to ``address``:``port`` out of ``interface``."""

    interface: str
    family: int
    service: str
    address: str
    port: int


class Found(NamedTuple):
    """A host that answered: where, which service, what it said (``identity``: one line for people;
    ``detail``: the recogniser's reading), and whether the answer was to our own request."""

    host: str
    interface: str
    service: str
    port: int
    verified: bool
    identity: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "interface": self.interface, "service": self.service, "port": self.port,
                "verified": self.verified, "identity": self.identity, "detail": self.detail}


def requests_for(iface: Interface, services: Sequence[str] = SERVICES,
                 families: Sequence[int] = (socket.AF_INET, socket.AF_INET6)) -> list[Request]:
    """The questions for ``iface``: a group where the protocol has one, else its broadcast address
    (IPv4 only); nothing a link without multicast or broadcast could carry."""
    out = []
    for service in services:
        port, group4, group6 = _GROUPS[service]
        if socket.AF_INET in families and iface.address is not None:
            if group4 is not None and iface.multicast:
                out.append(Request(iface.name, socket.AF_INET, service, group4, port))
            elif group4 is None and iface.broadcast is not None:
                out.append(Request(iface.name, socket.AF_INET, service, iface.broadcast, port))
        if socket.AF_INET6 in families and group6 is not None and iface.multicast:
            out.append(Request(iface.name, socket.AF_INET6, service, group6, port))
    return out


def identity(service: str, detail: dict[str, Any]) -> str:
    """One line saying who answered: a server header, service types, names, a system description…"""
    if service == "ssdp":
        parts = [detail.get("server", ""), f"({detail['st']})" if "st" in detail else "", detail.get("location", "")]
        return " ".join(p for p in parts if p)
    if service == "mdns":
        found = sorted({answer.split()[-1].rstrip(".").removesuffix(".local") for answer in detail.get("answers", [])
                        if " PTR " in answer})
        return "services: " + ", ".join(found) if found else "answered"
    if service == "wsd":
        parts = [detail.get("types", ""), detail.get("endpoint", ""), detail.get("xaddrs", "")]
        return " ".join(p for p in parts if p)
    if service == "netbios-ns":
        names = ", ".join(detail.get("names", []))
        return f"{names} mac {detail['mac']}" if detail.get("mac") else names
    if service == "snmp":
        return str(detail.get("sysDescr", f"error-status {detail.get('error_status')}"))
    if service == "ntp":
        if "kiss" in detail:
            return f"kiss code {detail['kiss']}"
        return (f"stratum {detail.get('stratum')}, refid {detail.get('refid')}, offset {detail.get('offset_ms')} ms,"
                f" NTPv{detail.get('version')}")
    return ""


class Discovery:
    """The questions and what came back, without sockets: ``payload(request, now)`` for each send,
    ``answer(request, sender, data, now)`` for each datagram read on that request's socket."""

    def __init__(self, requests: Iterable[Request]) -> None:
        self.requests = list(requests)
        self._probes: dict[Request, ServiceProbe] = {}
        for request in self.requests:
            probe = probe_for(request.service, request.port)
            assert probe is not None, request.service
            self._probes[request] = probe
        self._found: dict[tuple[str, str], Found] = {}
        self.unrecognised = 0  # datagrams no recogniser took (a stray, another's answer, a forgery)
        self.dropped = 0  # hosts beyond MAX_FOUND

    def payload(self, request: Request, now: float) -> bytes:
        return self._probes[request].build(now)

    def answer(self, request: Request, sender: str, data: bytes, now: float) -> Found | None:
        """Read one datagram; the new host it revealed, or ``None`` (already known, or not an answer)."""
        probe = self._probes[request]
        try:
            evidence = probe.classify(data, now)
        except Exception:  # noqa: BLE001 - a recogniser must not end a discovery on hostile bytes
            evidence = None
        if evidence is None:
            self.unrecognised += 1
            return None
        key = (sender, request.service)
        if key in self._found:
            return None
        if len(self._found) >= MAX_FOUND:
            self.dropped += 1
            return None
        found = Found(sender, request.interface, request.service, request.port, probe.verifies,
                      identity(request.service, evidence.detail), evidence.detail)
        self._found[key] = found
        return found

    def heard(self, interface_name: str, sender: str, data: bytes, now: float) -> Found | None:
        """A datagram that came to port 123 unasked: an NTP broadcast server's announcement (mode 5)
        is a host that serves time; anything else is counted and dropped."""
        packet = decode_packet(data)
        if packet is None or packet.mode != MODE_BROADCAST or packet.stratum == 0:
            self.unrecognised += 1
            return None
        key = (sender, "ntp")
        if key in self._found:
            return None
        if len(self._found) >= MAX_FOUND:
            self.dropped += 1
            return None
        detail = {"mode": "broadcast", "stratum": packet.stratum, "refid": refid_text(packet.refid, packet.stratum),
                  "leap": packet.leap, "version": packet.version, "poll": packet.poll}
        found = Found(sender, interface_name, "ntp", 123, False,
                      f"broadcast server, stratum {packet.stratum}, refid {detail['refid']}, NTPv{packet.version}",
                      detail)
        self._found[key] = found
        return found

    def results(self) -> list[Found]:
        """Every host that answered, by address (IPv4 first), then by service in :data:`SERVICES` order."""
        def order(found: Found) -> tuple[int, int, int]:
            address = ipaddress.ip_address(found.host.partition("%")[0])
            return address.version, int(address), SERVICES.index(found.service)
        return sorted(self._found.values(), key=order)


def _chosen(names: Sequence[str] | None) -> list[Interface]:
    if names:
        chosen = []
        for name in names:
            found = interface(name)
            if found is None:
                raise UsageError(f"no interface named {name!r} here")
            chosen.append(found)
        return chosen
    return [i for i in interfaces() if i.up and not i.loopback and (i.multicast or i.broadcast)]


def discover(interface_names: Sequence[str] | None = None, *, services: Sequence[str] = SERVICES,
             families: Sequence[int] = (socket.AF_INET, socket.AF_INET6), timeout: float = DEFAULT_TIMEOUT,
             repeat: int = 2, on_found: Any = None) -> list[Found]:
    """Ask every chosen interface (default: each one up, not loopback, with multicast or broadcast)
    and return who answered within ``timeout`` seconds. Each request is sent ``repeat`` times, a
    quarter second apart (a datagram may be lost). ``on_found(found)`` is called as each host appears."""
    for service in services:
        if service not in _GROUPS:
            raise UsageError(f"unknown discovery service {service!r} (known: {', '.join(SERVICES)})")
    if not 0 < timeout <= 3600:
        raise UsageError("--timeout must be more than 0 and at most 3600 seconds")
    chosen = _chosen(interface_names)
    plan = [r for iface in chosen for r in requests_for(iface, services, families)]
    if not plan:
        raise UdpkitError("no interface to ask: none is up with multicast or broadcast (name one with -i)")
    discovery = Discovery(plan)
    by_name = {i.name: i for i in chosen}
    sockets: dict[int, tuple[socket.socket, Request]] = {}
    try:
        for request in plan:
            iface = by_name[request.interface]
            try:
                sock = discovery_socket(request.family, iface.ifindex, iface.address)
            except OSError as exc:
                raise UdpkitError(f"cannot ask {iface.name}: {exc.strerror or exc}") from None
            sockets[sock.fileno()] = (sock, request)
        passive = None
        if "ntp" in services and socket.AF_INET in families:
            try:
                passive = discovery_listener(123)
            except OSError:
                passive = None  # port 123 needs root (or a server has it): active requests only
        _run(discovery, sockets, timeout, repeat, on_found, passive, {i.ifindex: i.name for i in chosen})
    finally:
        for sock, _request in sockets.values():
            sock.close()
        if passive is not None:
            passive.close()
    return discovery.results()


def _run(discovery: Discovery, sockets: dict[int, tuple[socket.socket, Request]], timeout: float, repeat: int,
         on_found: Any, passive: socket.socket | None = None, names: dict[int, str] | None = None) -> None:
    start = time.monotonic()
    sends = [start + 0.25 * k for k in range(max(1, repeat))]
    with select.epoll() as poller:
        for fd in sockets:
            poller.register(fd, select.EPOLLIN)
        if passive is not None:
            poller.register(passive.fileno(), select.EPOLLIN)
        while True:
            now = time.monotonic()
            while sends and sends[0] <= now:
                sends.pop(0)
                for sock, request in sockets.values():
                    target: tuple[Any, ...] = (request.address, request.port)
                    if request.family == socket.AF_INET6:
                        target = (request.address, request.port, 0, socket.if_nametoindex(request.interface))
                    try:
                        sock.sendto(discovery.payload(request, time.time()), target)
                    except OSError:
                        continue  # a link that refuses (no route for the group): it has nothing to say
            end = start + timeout
            if now >= end:
                return
            wait = min(end, sends[0]) - now if sends else end - now
            for fd, _mask in poller.poll(max(0.0, wait)):
                if passive is not None and fd == passive.fileno():
                    _hear(discovery, passive, names or {}, on_found)
                    continue
                sock, request = sockets[fd]
                for _ in range(64):
                    try:
                        data, sender = sock.recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        continue
                    host = str(sender[0])
                    if request.family == socket.AF_INET6 and host.startswith("fe80") and "%" not in host:
                        host = f"{host}%{request.interface}"
                    found = discovery.answer(request, host, data, time.time())
                    if found is not None and on_found is not None:
                        on_found(found)


_PKTINFO = 8  # IP_PKTINFO


def _hear(discovery: Discovery, sock: socket.socket, names: dict[int, str], on_found: Any) -> None:
    """Announcements on the passive socket, from the chosen interfaces only."""
    for _ in range(64):
        try:
            data, control, _flags, sender = sock.recvmsg(2048, socket.CMSG_SPACE(12))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            continue
        index = next((int.from_bytes(value[:4], "little") for level, kind, value in control
                      if level == socket.IPPROTO_IP and kind == _PKTINFO and len(value) >= 12), 0)
        name = names.get(index)
        if name is None:
            continue
        found = discovery.heard(name, str(sender[0]), data, time.time())
        if found is not None and on_found is not None:
            on_found(found)
