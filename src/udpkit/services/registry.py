"""Service names and well-known ports -> responders (``--respond NAME``)."""

from __future__ import annotations

from collections.abc import Callable

from udpkit.errors import UsageError
from udpkit.services.base import Responder, ServiceProbe
from udpkit.services.classic import Daytime, DaytimeProbe, Discard, Echo, EchoProbe, Time, TimeProbe
from udpkit.services.memcached import MemcachedProbe
from udpkit.services.netbios import NetbiosProbe
from udpkit.services.ntp import NtpProbe, NtpResponder
from udpkit.services.quic import QuicProbe
from udpkit.services.snmp import SnmpProbe
from udpkit.services.ssdp import SsdpProbe
from udpkit.services.stun import StunProbe
from udpkit.services.wsd import WsdProbe

__all__ = ["LIKELY", "PORTS", "PROBES", "RESPONDERS", "probe_for", "responder"]

RESPONDERS: dict[str, Callable[[], Responder]] = {
    "discard": Discard,
    "echo": Echo,
    "daytime": Daytime,
    "time": Time,
    "ntp": NtpResponder,
}

#: The well-known port of each service (``/etc/services``).
PORTS = {"echo": 7, "discard": 9, "daytime": 13, "time": 37, "dns": 53, "ntp": 123, "netbios-ns": 137,
         "snmp": 161, "quic": 443, "ssdp": 1900, "wsd": 3702, "stun": 3478, "mdns": 5353, "memcached": 11211}


def responder(name: str) -> Responder:
    """A fresh responder for ``name``; an unknown name is a UsageError listing the known ones."""
    factory = RESPONDERS.get(name)
    if factory is None:
        raise UsageError(f"unknown service {name!r} (known: {', '.join(sorted(RESPONDERS))})")
    return factory()


def _dns_probe(query: str | None = None) -> ServiceProbe:
    from udpkit.services.dns import DnsProbe  # dnspython is imported only when DNS is asked for

    return DnsProbe(query or "./SOA")


def _mdns_probe(query: str | None = None) -> ServiceProbe:
    from udpkit.services.dns import DnsProbe

    return DnsProbe(query or "_services._dns-sd._udp.local./PTR", protocol="mdns", unicast=True)


#: Application probes by name (``udpkit probe --service NAME``); discard has none, as it never answers.
PROBES: dict[str, Callable[[], ServiceProbe]] = {
    "echo": EchoProbe,
    "daytime": DaytimeProbe,
    "time": TimeProbe,
    "ntp": NtpProbe,
    "dns": _dns_probe,
    "snmp": SnmpProbe,
    "netbios-ns": NetbiosProbe,
    "ssdp": SsdpProbe,
    "mdns": _mdns_probe,
    "stun": StunProbe,
    "memcached": MemcachedProbe,
    "quic": QuicProbe,
    "wsd": WsdProbe,
}

_BY_PORT = {number: name for name, number in PORTS.items() if name in PROBES}

#: ``--service all``: the order in which silent ports are asked, most often met first.
LIKELY = ["dns", "ntp", "snmp", "ssdp", "stun", "memcached", "netbios-ns", "mdns", "quic", "wsd", "echo", "daytime",
          "time"]


def probe_for(service: str, port: int, query: str | None = None) -> ServiceProbe | None:
    """The probe ``--service`` asks for at ``port``: ``none`` -> ``None``; ``auto`` -> the probe of the
    service whose well-known port this is (``None`` if there is none); a name -> that probe.
    ``query``: the DNS probe's question (``NAME/TYPE``)."""
    if service == "none":
        return None
    name = service
    if service == "auto":
        name = _BY_PORT.get(port, "")
        if not name:
            return None
    if name not in PROBES:
        raise UsageError(f"unknown service {service!r} (known: auto, none, {', '.join(sorted(PROBES))})")
    if name in ("dns", "mdns"):
        return _dns_probe(query) if name == "dns" else _mdns_probe(query)
    return PROBES[name]()
