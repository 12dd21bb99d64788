"""``probe()``: the prober as one call — names resolved, ports expanded, service probes chosen per
port, and the verdicts returned with their evidence."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Sequence

from udpkit.addr import parse_ports
from udpkit.errors import UsageError
from udpkit.probe.machine import PortResult, Target
from udpkit.probe.scanner import scan
from udpkit.services.base import Evidence, ServiceProbe
from udpkit.services.registry import probe_for

__all__ = ["DEFAULT_PORTS", "probe", "resolve"]

#: Probed when no ports are given: the UDP services most often met (DNS, DHCP, TFTP, NTP, NetBIOS,
#: SNMP, IKE, syslog, RIP, SSDP, IPsec NAT-T, mDNS).
DEFAULT_PORTS = "53,67,68,69,123,137,138,161,162,500,514,520,1900,4500,5353"


def resolve(names: Sequence[str], family: int | None = None) -> list[tuple[str, int]]:
    """Host names and literals -> (address, family), each address once, in the order given."""
    found: dict[tuple[str, int], None] = {}
    for name in names:
        host = name[1:-1] if name.startswith("[") and name.endswith("]") else name
        try:
            infos = socket.getaddrinfo(host, None, family or 0, socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:
            raise UsageError(f"cannot resolve {name!r}: {exc}") from None
        for fam, _type, _proto, _canon, sockaddr in infos:
            if fam in (socket.AF_INET, socket.AF_INET6):
                found[(str(sockaddr[0]), int(fam))] = None
    if not found:
        raise UsageError("no target address of the requested family")
    return list(found)


def probe(
    hosts: str | Sequence[str],
    ports: str | Iterable[int] = DEFAULT_PORTS,
    *,
    family: int | None = None,
    service: str = "none",
    payload: bytes = b"",
    query: str | None = None,
    timeout: float = 1.0,
    retries: int = 2,
    rate: float | None = None,
    on_result: Callable[[PortResult], None] | None = None,
) -> list[PortResult]:
    """Probe ``ports`` (``"53,123,1000-2000"`` or numbers) on every address of ``hosts``.

    ``service``: ``"none"`` sends ``payload``; ``"auto"`` sends each well-known port's application
    probe (and ``payload`` elsewhere); a name sends that probe everywhere. A reply the probe
    recognises carries its ``Evidence``. ``udpkit.probe("127.0.0.1", "123")`` works as well as
    ``udpkit.probe.probe(...)``.
    """
    names = [hosts] if isinstance(hosts, str) else list(hosts)
    numbers = parse_ports(ports) if isinstance(ports, str) else sorted(set(ports))
    if any(not 1 <= p <= 65535 for p in numbers):
        raise UsageError("ports must be within 1..65535")
    addresses = resolve(names, family)
    probes: dict[int, ServiceProbe | None] = {}
    if service != "none":
        probes = {port: probe_for(service, port, query) for port in numbers}
    probed = {port: p for port, p in probes.items() if p is not None}

    def classify(target: Target, reply: bytes, now: float) -> Evidence | None:
        chosen = probes.get(target.port)
        if chosen is None:
            return None
        try:
            return chosen.classify(reply, now)
        except Exception:  # noqa: BLE001 - a recogniser's bug must not turn a reply into a crash
            return None

    targets = [Target(ip, port, fam) for ip, fam in addresses for port in numbers]

    def datagram(target: Target) -> bytes:
        chosen = probed.get(target.port)
        return payload if chosen is None else chosen.build(time.time())  # each try its own query

    return scan(targets, datagram, retries=retries, timeout=timeout, rate=rate,
                on_result=on_result, classify=classify if any(probes.values()) else None)
