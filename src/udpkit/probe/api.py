"""``probe()``: the prober as one call — names resolved, ports expanded, service probes chosen per
port, and the verdicts returned with their evidence."""

from __future__ import annotations

import ipaddress
import math
import os
import random
import socket
import time
from collections.abc import Callable, Iterable, Sequence

from udpkit.addr import parse_ports, udp_services
from udpkit.errors import UsageError
from udpkit.net import is_local
from udpkit.probe.machine import OPEN, OPEN_FILTERED, PortResult, Reading, Target
from udpkit.probe.scanner import scan
from udpkit.services.base import ServiceProbe
from udpkit.services.registry import LIKELY, PORTS, probe_for

__all__ = ["DEFAULT_PORTS", "MAX_PAYLOAD", "MAX_SOURCES", "TOP_PORTS", "check_options", "check_sources", "check_targets",
           "probe", "resolve", "source_addresses", "top_ports"]

#: Probed when no ports are given: the UDP services most often met (DNS, DHCP, TFTP, NTP, NetBIOS,
#: SNMP, IKE, syslog, RIP, SSDP, IPsec NAT-T, mDNS).
DEFAULT_PORTS = "53,67,68,69,123,137,138,161,162,500,514,520,1900,4500,5353"


#: udpkit's own ranking for ``--top-ports`` (nmap ranks by the frequencies in its nmap-services
#: file, which udpkit does not ship): the default ports (the UDP services most often met), then the
#: probe catalogue's well-known ports, then other UDP services common on real networks (RPC,
#: NetBIOS session, IPP, MS-SQL browser, L2TP, RADIUS, NFS, XDMCP, SLP, SIP, OpenVPN, WireGuard,
#: WS-Discovery, CoAP, LLMNR, syslog-TLS…). ``top_ports`` continues with every other UDP port that
#: /etc/services names, lowest first, then every remaining port.
TOP_PORTS = (53, 67, 68, 69, 123, 137, 138, 161, 162, 500, 514, 520, 1900, 4500, 5353,
             7, 9, 13, 37, 443, 3478, 11211,
             111, 135, 139, 445, 631, 1434, 1701, 1812, 1813, 1645, 1646, 2049, 177, 427, 5060, 1194, 51820,
             3702, 5683, 5355, 6514, 3283, 5351, 1604, 2302, 10000, 19, 17, 49152, 626, 996, 997, 998, 999,
             1022, 1023, 1025, 1026, 1027, 1028, 1029, 1030, 2048, 2222, 3456, 4444, 5000, 5632, 9200, 20031,
             31337, 32768, 33434, 34555)


def top_ports(count: int, services: dict[int, str] | None = None) -> list[int]:
    """The ``count`` most likely open UDP ports by :data:`TOP_PORTS` (then /etc/services, then the
    rest, ascending), as ``--top-ports`` scans them."""
    if not 1 <= count <= 65535:
        raise UsageError(f"--top-ports must be from 1 to 65535, got {count}")
    ranked = list(dict.fromkeys(TOP_PORTS))
    if count > len(ranked):
        named = sorted(udp_services() if services is None else services)
        ranked = list(dict.fromkeys([*ranked, *named, *range(1, 65536)]))
    return ranked[:count]


#: The largest UDP payload each family can carry in one datagram (65,535 less the IP and UDP headers).
MAX_PAYLOAD: dict[int, int] = {socket.AF_INET: 65507, socket.AF_INET6: 65527}


def check_options(*, timeout: float, retries: int, rate: float | None) -> None:
    """Finite, positive and in range, or one ``UsageError`` (``nan`` compares false with everything)."""
    if not (math.isfinite(timeout) and 0 < timeout <= 3600):
        raise UsageError(f"--timeout must be a number of seconds above 0 and at most 3600, got {timeout}")
    if not 0 <= retries <= 100:
        raise UsageError(f"--retries must be from 0 to 100, got {retries}")
    if rate is not None and not (math.isfinite(rate) and 0 < rate <= 10_000_000):
        raise UsageError(f"--rate must be a number of datagrams a second above 0, got {rate}")


def check_targets(addresses: Sequence[tuple[str, int]], payload: bytes) -> None:
    """A probe's verdict is about one host: a multicast or broadcast target is refused (finding the
    services of a link is another job), and so is a payload no datagram of the family can carry."""
    for ip, family in addresses:
        address = ipaddress.ip_address(ip.partition("%")[0])
        mapped = getattr(address, "ipv4_mapped", None)
        if address.is_multicast or (mapped is not None and mapped.is_multicast):
            raise UsageError(f"{ip} is a multicast address: a probe asks one host (try a unicast address)")
        if str(mapped or address) == "255.255.255.255":
            raise UsageError(f"{ip} is the broadcast address: a probe asks one host (try a unicast address)")
        if len(payload) > MAX_PAYLOAD[family]:
            raise UsageError(f"a {len(payload)}-byte payload does not fit in one {'IPv6' if family == socket.AF_INET6 else 'IPv4'}"
                             f" datagram (at most {MAX_PAYLOAD[family]} bytes)")


#: The most source addresses a scan spreads over (a prefix form names them all).
MAX_SOURCES = 256


def check_sources(sources: Sequence[str]) -> dict[int, list[str]]:
    """Source addresses by family, each a unicast literal (``UsageError`` otherwise): a scan sends
    from every one of them, so a name or a group would make no sense."""
    found: dict[int, list[str]] = {}
    if len(sources) > MAX_SOURCES:
        raise UsageError(f"at most {MAX_SOURCES} source addresses, got {len(sources)}")
    for text in sources:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise UsageError(f"bad --source {text!r}: expected an IPv4 or IPv6 address or prefix") from None
        if address.is_multicast or address.is_unspecified or str(address) == "255.255.255.255":
            raise UsageError(f"bad --source {text}: a scan sends from unicast addresses of this host")
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        found.setdefault(family, [])
        if str(address) not in found[family]:
            found[family].append(str(address))
    return found


def source_addresses(items: Sequence[str]) -> list[str]:
    """``--source`` values -> addresses: each item an address, several comma-separated, or a prefix
    that names at most ``MAX_SOURCES`` of them (``"2001:db8::/126"`` -> its four addresses)."""
    found: list[str] = []
    for item in items:
        for text in filter(None, (part.strip() for part in item.split(","))):
            if "/" not in text:
                found.append(text)
                continue
            try:
                network = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise UsageError(f"bad --source {text!r}: expected an address or a prefix") from None
            if network.num_addresses > MAX_SOURCES:
                raise UsageError(f"--source {text} names {network.num_addresses} addresses; at most {MAX_SOURCES}")
            hosts = list(network.hosts()) if network.version == 4 and network.prefixlen < 31 else list(network)
            found.extend(str(address) for address in hosts)
    return found


def resolve(names: Sequence[str | tuple[str, int]], family: int | None = None) -> list[tuple[str, int]]:
    """Host names and literals -> (address, family), each address once, in the order given; an
    ``(address, family)`` pair is already resolved and kept as it is."""
    found: dict[tuple[str, int], None] = {}
    for name in names:
        if isinstance(name, tuple):
            if family is None or name[1] == family:
                found[name] = None
            continue
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
    hosts: str | Sequence[str | tuple[str, int]],
    ports: str | Iterable[int] = DEFAULT_PORTS,
    *,
    family: int | None = None,
    service: str = "auto",
    payload: bytes = b"",
    query: str | None = None,
    timeout: float = 1.0,
    retries: int = 2,
    rate: float | None = None,
    on_result: Callable[[PortResult], None] | None = None,
    forged: dict[str, int] | None = None,
    sources: Sequence[str] = (),
    freebind: bool = False,
) -> list[PortResult]:
    """Probe ``ports`` (``"53,123,1000-2000"`` or numbers) on every address of ``hosts`` (names,
    literals, or ``(address, family)`` pairs that :func:`resolve` returned).

    ``service``: ``"all"`` is service identification (``nmap -sV``): after an ``auto`` pass, every
    catalogue probe is tried, most likely first, on the ports that stayed silent, and the verdicts
    are reported when that ends. ``"auto"`` (the default) sends each well-known port's application
    probe (and ``payload`` elsewhere); ``"none"`` sends ``payload`` everywhere; a name sends that
    probe everywhere. A reply the probe recognises carries its ``Evidence``; when a service probe
    went to a port, only a reply its recogniser accepts makes it ``open``. With ``auto`` and no
    ``payload``, the ports without a catalogue probe are sent an 8-byte random nonce rather than
    nothing: an ICMP error quoting it, or a reply echoing it, is then evidence nobody off the path
    could forge. ``forged``: filled with the count of datagrams and errors per target that we never
    asked for (see ``ProbeMachine.on_forgery``). ``sources``: local addresses to send from, the
    ports shared among them; a remote kernel keeps one ICMP budget per source address, so two
    sources scan a rate-limited host in half the time (``freebind``: they belong to a prefix routed
    to this host, see :func:`~udpkit.probe.scanner.scan`). ``udpkit.probe("127.0.0.1", "123")`` works
    as well as ``udpkit.probe.probe(...)``.
    """
    if service == "all":
        return _identify(hosts, ports, family=family, payload=payload, query=query, timeout=timeout,
                         retries=retries, rate=rate, on_result=on_result, forged=forged, sources=sources,
                         freebind=freebind)
    names = [hosts] if isinstance(hosts, str) else list(hosts)
    numbers = parse_ports(ports) if isinstance(ports, str) else sorted(set(ports))
    if any(not 1 <= p <= 65535 for p in numbers):
        raise UsageError("ports must be within 1..65535")
    check_options(timeout=timeout, retries=retries, rate=rate)
    addresses = resolve(names, family)
    check_targets(addresses, payload)
    probes: dict[int, ServiceProbe | None] = {}
    if service != "none":
        probes = {port: probe_for(service, port, query) for port in numbers}
    probed = {port: p for port, p in probes.items() if p is not None}

    def classify(target: Target, reply: bytes, now: float) -> Reading | None:
        return _recognise(probed.get(target.port), reply, now)

    targets = [Target(ip, port, fam) for ip, fam in addresses for port in numbers]
    nonce = random.Random(os.urandom(16)).getrandbits if service == "auto" and not payload else None

    def datagram(target: Target) -> bytes:
        chosen = probed.get(target.port)
        if chosen is not None:
            return chosen.build(time.time())  # each try its own query
        return payload if nonce is None else nonce(64).to_bytes(8, "little")

    return scan(targets, datagram, retries=retries, timeout=timeout, rate=rate, on_result=on_result,
                classify=classify if probed else None, forged=forged, sources=check_sources(sources),
                freebind=freebind)


def _recognise(chosen: ServiceProbe | None, reply: bytes, now: float) -> Reading | None:
    """What ``chosen`` reads in ``reply`` (``None``: no service probe went there); a recogniser's bug
    is no evidence, never a crash."""
    if chosen is None:
        return None
    try:
        evidence = chosen.classify(reply, now)
    except Exception:  # noqa: BLE001 - hostile bytes may hit any bug; the reply then proves nothing
        evidence = None
    return Reading(evidence, evidence is not None and bool(getattr(chosen, "verifies", False)))


def _identify(hosts: str | Sequence[str | tuple[str, int]], ports: str | Iterable[int], *, family: int | None,
              payload: bytes, query: str | None, timeout: float, retries: int, rate: float | None,
              on_result: Callable[[PortResult], None] | None, forged: dict[str, int] | None,
              sources: Sequence[str], freebind: bool) -> list[PortResult]:
    """``service="all"``: ask the silent ports again with each catalogue probe in ``LIKELY`` order."""
    results = probe(hosts, ports, family=family, service="auto", payload=payload, query=query, timeout=timeout,
                    retries=retries, rate=rate, forged=forged, sources=sources, freebind=freebind)
    rtts = [r.rtt for r in results if r.rtt is not None]
    # Strategy: the first pass measured the round trip; each later round waits four medians (at
    # least 50 ms) instead of the first pass's guess, so a dozen rounds cost about a second on a LAN.
    wait = max(0.05, min(timeout, 4 * sorted(rtts)[len(rtts) // 2])) if rtts else timeout
    mine = {ip: is_local(ip) for ip in {r.target.ip for r in results}}  # once, for every round
    local = all(mine.values())
    if local:  # loopback loses nothing and answers in microseconds: one try, a tenth of a second at most
        wait = min(max(wait, 0.1), 0.25)
    verdicts = {r.target: r for r in results}
    for name in LIKELY:
        silent = [t for t, r in verdicts.items() if r.state == OPEN_FILTERED
                  and not (probe_for("auto", t.port) is not None and PORTS.get(name) == t.port)]
        if not silent:
            break
        chosen = probe_for(name, 0, query)
        assert chosen is not None

        def classify(target: Target, reply: bytes, now: float, chosen: ServiceProbe = chosen) -> Reading | None:
            return _recognise(chosen, reply, now)

        found = scan(silent, lambda target, chosen=chosen: chosen.build(time.time()),  # type: ignore[misc]
                     retries=0 if local else 1, timeout=wait, min_timeout=wait, rate=rate, classify=classify,
                     local=mine, forged=forged, sources=check_sources(sources), freebind=freebind)
        for result in found:
            if result.state == OPEN:
                verdicts[result.target] = result
    final = [verdicts[r.target] for r in results]
    if on_result is not None:
        for result in final:
            on_result(result)
    return final
