"""One probe for ``/probe``: a module's prober against one ``HOST:PORT``, with blackbox_exporter's
contract — the outcome as metrics and the log of what was done (``debug=true``).

Every prober sends its request through :func:`udpkit.probe.probe` (one port: the verdict rules,
the ICMP evidence and the retries of ``udpkit probe``) and reads the reply itself with the request's
own recogniser, so an answer counts only if it answers our request. Safety comes first: the target
must be in the config's ``allow`` networks, and a broadcast or multicast address is refused unless
the module says ``allow_groups``.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from udpkit.errors import UdpkitError, UsageError
from udpkit.exporter.config import Config, Module
from udpkit.probe import OPEN, OPEN_FILTERED, probe
from udpkit.services.ntp import NtpProbe
from udpkit.services.snmp import SnmpProbe
from udpkit.services.ssdp import SsdpProbe
from udpkit.services.registry import PORTS, probe_for

__all__ = ["Outcome", "check_target", "ip_addr_hash", "parse_target", "run_many", "run_probe"]

STATES = ("open", "closed", "filtered", "open_filtered", "conflict")


class Outcome(NamedTuple):
    """What a probe found: ``metrics`` maps a metric name to ``(help, value, labels)`` entries."""

    success: bool
    duration: float
    metrics: dict[str, tuple[str, list[tuple[float, dict[str, str]]]]]
    log: list[str]
    result: str  # success, failure, refused (a target the config forbids), error


def parse_target(target: str, module: Module) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or a bare host (the prober's well-known port) -> (host, port)."""
    host, port = target, None
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif target.count(":") == 1:
        host, _, port = target.partition(":")
    if not host:
        raise UsageError(f"bad target {target!r}: expected HOST:PORT")
    if port is None:
        default = PORTS.get(module.prober)
        if default is None:
            raise UsageError(f"bad target {target!r}: a {module.prober} module needs HOST:PORT")
        return host, default
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"bad target {target!r}: the port must be 1-65535")
    return host, int(port)


def _resolve(host: str, module: Module) -> tuple[str, int]:
    """blackbox's rule: an address of the preferred family, else (``ip_protocol_fallback``) the other."""
    preferred = socket.AF_INET6 if module.preferred_ip_protocol == "ip6" else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        raise UdpkitError(f"cannot resolve {host}: {exc}") from None
    found = {fam: str(sockaddr[0]) for fam, _t, _p, _c, sockaddr in reversed(infos)
             if fam in (socket.AF_INET, socket.AF_INET6)}
    if preferred in found:
        return found[preferred], preferred
    if module.ip_protocol_fallback and found:
        family = next(iter(found))
        return found[family], family
    raise UdpkitError(f"{host} has no {module.preferred_ip_protocol} address and ip_protocol_fallback is off")


def ip_addr_hash(address: str) -> int:
    """blackbox_exporter's ``probe_ip_addr_hash``: FNV-1a (32 bits) of the address's bytes (4 for IPv4)."""
    value = 0x811C9DC5
    for byte in ipaddress.ip_address(address.partition("%")[0]).packed:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def check_target(address: str, config: Config, module: Module) -> str | None:
    """Why the config forbids probing ``address`` (``None``: it may be probed)."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    if config.allow is not None and not any(ip in net for net in config.allow):
        return f"{address} is not in the allowed networks"
    if not module.allow_groups and (ip.is_multicast or str(ip) == "255.255.255.255" or
                                    (ip.version == 4 and _is_local_broadcast(str(ip)))):
        return f"{address} is a broadcast or multicast address (the module does not say allow_groups)"
    return None


def _is_local_broadcast(ip: str) -> bool:
    from udpkit.net import interfaces

    return any(i.broadcast == ip for i in interfaces())


class _Report:
    """One target's metrics and log, gathered as the probe goes (``labels``: added to every sample)."""

    def __init__(self, labels: dict[str, str] | None = None) -> None:
        self.labels = labels or {}
        self.metrics: dict[str, tuple[str, list[tuple[float, dict[str, str]]]]] = {}
        self.log: list[str] = []

    def gauge(self, name: str, text: str, value: float, labels: dict[str, str] | None = None) -> None:
        self.metrics.setdefault(name, (text, []))[1].append((float(value), {**self.labels, **(labels or {})}))


def _prepare(config: Config, module: Module, target: str, report: _Report) -> tuple[str, int, int, float] | None:
    """Resolve and check ``target``: (address, family, port, lookup seconds), or ``None`` (logged)."""
    started = time.monotonic()
    try:
        host, port = parse_target(target, module)
        address, family = _resolve(host, module)
    except (UsageError, UdpkitError) as exc:
        report.log.append(f"Error resolving target: {exc}")
        return None
    lookup = time.monotonic() - started
    report.gauge("probe_dns_lookup_time_seconds", "Returns the time taken for probe dns lookup in seconds", lookup)
    report.gauge("probe_ip_protocol", "Specifies whether probe ip protocol is IP4 or IP6",
                 4 if family == socket.AF_INET else 6)
    report.gauge("probe_ip_addr_hash",
                 "Specifies the hash of IP address. It's useful to detect if the IP address changes.",
                 ip_addr_hash(address))
    report.log.append(f"Resolved target address ip={address}")
    refusal = check_target(address, config, module)
    if refusal is not None:
        report.log.append(f"Refused: {refusal}")
        return None
    return address, family, port, lookup


def _send_options(module: Module, timeout: float) -> dict[str, Any]:
    tries = module.retries
    per_try = max(0.05, timeout / (tries + 1 + 2 ** tries - 1) if tries else timeout)
    sources = (module.source_ip_address,) if module.source_ip_address else ()
    return {"service": "none", "timeout": per_try, "retries": tries, "sources": sources}


def _evaluate(module: Module, result: Any, request_probe: Any, payload: bytes, lookup: float, report: _Report) -> bool:
    """A port's verdict and reply -> the metrics, and whether the module counts it a success."""
    gauge, log = report.gauge, report.log
    state = result.state.replace("|", "_")
    for name in STATES:
        gauge("probe_udp_state", "The port's state: open only on a reply, closed only on the target's ICMP error",
              1 if name == state else 0, {"state": name})
    log.append(f"Port state={result.state} reason={result.reason} tries={result.tries}")
    if result.rtt is not None:
        gauge("probe_udp_rtt_seconds", "Round trip of the answer (reply or ICMP error) in seconds", result.rtt)
    if result.icmp is not None:
        gauge("probe_icmp_type", "The ICMP type of the error the probe drew", result.icmp[0])
        gauge("probe_icmp_code", "The ICMP code of the error the probe drew", result.icmp[1])
        log.append(f"ICMP type={result.icmp[0]} code={result.icmp[1]} from={result.icmp[2]}")
    if result.reply is not None:
        gauge("probe_udp_reply_bytes", "Bytes in the reply", len(result.reply))
    if module.prober == "udp":
        return _udp_success(module, result, log)
    if result.state != OPEN or result.reply is None:
        return False
    if module.prober == "dns":
        for phase, seconds in (("resolve", lookup), ("request", result.rtt or 0.0)):
            gauge("probe_dns_duration_seconds", "Duration of DNS request by phase", seconds, {"phase": phase})
        return _dns(module, payload, result.reply, gauge, log)
    evidence = request_probe.classify(result.reply, time.time())
    if evidence is None:
        log.append("The reply is not an answer to our request")
        return False
    log.append(f"Answer protocol={evidence.protocol} {evidence.detail}")
    if module.prober == "ntp":
        return _ntp(module, evidence.detail, gauge, log)
    if module.prober == "snmp" and "sysDescr" in evidence.detail:
        gauge("probe_snmp_info", "The agent's sysDescr, as a label", 1, {"sysdescr": str(evidence.detail["sysDescr"])})
    return True


def _finish(report: _Report, started: float, success: bool) -> float:
    duration = time.monotonic() - started
    report.gauge("probe_success", "Displays whether or not the probe was a success", 1 if success else 0)
    report.gauge("probe_duration_seconds", "Returns how long the probe took to complete in seconds", duration)
    report.log.append(f"Probe {'succeeded' if success else 'failed'} duration_seconds={duration:.6f}")
    return duration


def run_probe(config: Config, module: Module, target: str, timeout: float,
              send: Callable[..., Any] = probe) -> Outcome:
    """Probe ``target`` with ``module`` within ``timeout`` seconds; never raises for what the network
    did (a failure is ``probe_success 0`` with the reason in the log)."""
    started = time.monotonic()
    report = _Report()
    report.log.append(f"Beginning probe prober={module.prober} module={module.name} target={target} timeout={timeout:g}s")
    prepared = _prepare(config, module, target, report)
    if prepared is None:
        refused = any(line.startswith("Refused") for line in report.log)
        return Outcome(False, _finish(report, started, False), report.metrics, report.log,
                       "refused" if refused else "error")
    address, family, port, lookup = prepared
    request_probe, payload = _request(module, port)
    try:
        (result,) = send([(address, family)], [port], payload=payload, **_send_options(module, timeout))
    except (UsageError, UdpkitError, OSError) as exc:
        report.log.append(f"Error probing: {exc}")
        return Outcome(False, _finish(report, started, False), report.metrics, report.log, "error")
    ok = _evaluate(module, result, request_probe, payload, lookup, report)
    return Outcome(ok, _finish(report, started, ok), report.metrics, report.log, "success" if ok else "failure")


def run_many(config: Config, module: Module, timeout: float, send: Callable[..., Any] = probe) -> Outcome:
    """A module's ``targets:`` in one scrape: every target probed at once (one scanner run per port,
    the ports in parallel), each series labelled ``target``; ``probe_success`` is each target's."""
    started = time.monotonic()
    reports = {target: _Report({"target": target}) for target in module.targets}
    ready: dict[int, list[tuple[str, tuple[str, int], float]]] = {}
    for target, report in reports.items():
        prepared = _prepare(config, module, target, report)
        if prepared is None:
            _finish(report, started, False)
            continue
        address, family, port, lookup = prepared
        ready.setdefault(port, []).append((target, (address, family), lookup))
    def by_port(port: int, group: list[tuple[str, tuple[str, int], float]]) -> None:
        request_probe, payload = _request(module, port)
        try:
            results = send([pair for _t, pair, _l in group], [port], payload=payload, **_send_options(module, timeout))
        except (UsageError, UdpkitError, OSError) as exc:
            for target, _pair, _lookup in group:
                reports[target].log.append(f"Error probing: {exc}")
                _finish(reports[target], started, False)
            return
        found = {(r.target.ip, r.target.family): r for r in results}
        for target, pair, lookup in group:
            result = found.get(pair)
            ok = result is not None and _evaluate(module, result, request_probe, payload, lookup, reports[target])
            _finish(reports[target], started, ok)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(ready)))) as pool:
        list(pool.map(lambda item: by_port(*item), ready.items()))
    metrics: dict[str, tuple[str, list[tuple[float, dict[str, str]]]]] = {}
    log: list[str] = []
    for target, report in reports.items():
        for name, (text, samples) in report.metrics.items():
            metrics.setdefault(name, (text, []))[1].extend(samples)
        log += [f"{target}: {line}" for line in report.log]
    duration = time.monotonic() - started
    successes = sum(1 for report in reports.values()
                    if any(value == 1 for value, _labels in report.metrics.get("probe_success", ("", []))[1]))
    all_ok = successes == len(reports)
    return Outcome(all_ok, duration, metrics, log, "success" if all_ok else "failure")


def _request(module: Module, port: int) -> tuple[Any, bytes]:
    """The recogniser that reads the answer, and the datagram to send."""
    now = time.time()
    if module.prober == "udp":
        return None, module.udp.payload
    if module.prober == "dns":
        import dns.message
        import dns.rdatatype

        query = dns.message.make_query(module.dns.query_name, dns.rdatatype.from_text(module.dns.query_type))
        return None, query.to_wire()
    options = module.catalogue
    if module.prober == "ntp":
        request_probe: Any = NtpProbe(module.ntp.version)
    elif module.prober == "snmp":
        request_probe = SnmpProbe(options.community.encode())
    elif module.prober == "ssdp":
        request_probe = SsdpProbe(options.st)
    else:
        request_probe = probe_for(module.prober, port, options.query)
    assert request_probe is not None
    return request_probe, request_probe.build(now)


def _udp_success(module: Module, result: Any, log: list[str]) -> bool:
    options = module.udp
    if result.state != OPEN:
        if not options.fail_if_not_open and result.state == OPEN_FILTERED:
            log.append("No answer, and fail_if_not_open is off")
            return True
        return False
    reply = result.reply or b""
    for pattern in options.expect:
        if pattern.search(reply) is None:
            log.append(f"Reply does not match expect {pattern.pattern!r}")
            return False
    for prefix in options.expect_hex:
        if not reply.startswith(prefix):
            log.append(f"Reply does not start with expect_hex {prefix.hex()}")
            return False
    return True


def _ntp(module: Module, detail: dict[str, Any], gauge: Callable[..., None], log: list[str]) -> bool:
    if "kiss" in detail:
        log.append(f"Kiss-o'-death {detail['kiss']}")
        return False
    offset = float(detail["offset_ms"]) / 1000
    gauge("probe_ntp_offset_seconds", "The server's clock minus ours (RFC 5905 offset)", offset)
    gauge("probe_ntp_stratum", "The server's stratum", detail["stratum"])
    gauge("probe_ntp_root_dispersion_seconds", "The server's root dispersion", float(detail["root_dispersion_ms"]) / 1000)
    gauge("probe_ntp_root_delay_seconds", "The server's root delay", float(detail["root_delay_ms"]) / 1000)
    gauge("probe_ntp_leap", "The leap indicator (3: unsynchronised)", detail["leap"])
    gauge("probe_ntp_version", "The version the server answered with", detail["version"])
    if detail["leap"] == 3:
        log.append("The server says it is not synchronised (leap 3)")
        return False
    if module.ntp.max_stratum is not None and detail["stratum"] > module.ntp.max_stratum:
        log.append(f"Stratum {detail['stratum']} above max_stratum {module.ntp.max_stratum}")
        return False
    if module.ntp.max_offset is not None and abs(offset) > module.ntp.max_offset:
        log.append(f"Offset {offset:.6f}s beyond max_offset {module.ntp.max_offset}s")
        return False
    return True


def _dns(module: Module, query_wire: bytes, reply: bytes, gauge: Callable[..., None], log: list[str]) -> bool:
    import dns.message
    import dns.rcode
    import dns.rdatatype

    try:
        query = dns.message.from_wire(query_wire)
        response = dns.message.from_wire(reply)
    except Exception as exc:  # noqa: BLE001 - a reply from the network may be anything
        log.append(f"Error parsing the DNS answer: {exc}")
        gauge("probe_dns_query_succeeded", "Displays whether or not the query was executed successfully", 0)
        return False
    if response.id != query.id or not query.is_response(response):
        log.append("The DNS answer does not answer our query (id or question differ)")
        gauge("probe_dns_query_succeeded", "Displays whether or not the query was executed successfully", 0)
        return False
    gauge("probe_dns_query_succeeded", "Displays whether or not the query was executed successfully", 1)
    answer = [line for rrset in response.answer for line in rrset.to_text().splitlines()]
    gauge("probe_dns_answer_rrs", "Returns number of entries in the answer resource record list", len(answer))
    gauge("probe_dns_authority_rrs", "Returns number of entries in the authority resource record list",
          sum(len(r) for r in response.authority))
    gauge("probe_dns_additional_rrs", "Returns number of entries in the additional resource record list",
          sum(len(r) for r in response.additional))
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            gauge("probe_dns_serial", "Returns the serial number of the zone", rrset[0].serial)
    rcode = dns.rcode.to_text(response.rcode())
    log.append(f"Got response rcode={rcode} answers={len(answer)}")
    if rcode not in module.dns.valid_rcodes:
        log.append(f"Rcode {rcode} is not one of {', '.join(module.dns.valid_rcodes)}")
        return False
    for pattern in module.dns.fail_if_matches_regexp:
        if any(pattern.search(line) for line in answer):
            log.append(f"An answer RR matches fail_if_matches_regexp {pattern.pattern!r}")
            return False
    for pattern in module.dns.fail_if_not_matches_regexp:
        if not any(pattern.search(line) for line in answer):
            log.append(f"No answer RR matches fail_if_not_matches_regexp {pattern.pattern!r}")
            return False
    return True
