"""The exporter's configuration: blackbox_exporter's shape, for UDP. A YAML file of ``modules`` (each
a ``prober`` and its options) and the exporter's own ``limits``; :func:`load_config` checks every key
and value and refuses the file with one line naming the place (``modules.ntp_pool.ntp.max_offset:
expected a number of seconds``). Reading the YAML file is the caller's; a ``payload_file`` is read
here, once, when the config is loaded (not per probe).

.. code-block:: yaml

    allow: [10.0.0.0/8, "fd00::/8"]     # targets must be in these networks (absent: any — see SSRF)
    limits: {concurrency: 64, per_target: 4}
    modules:
      ntp_ok:
        prober: ntp
        timeout: 2s
        ntp: {max_offset: 100ms, max_stratum: 4}
      dns_soa:
        prober: dns
        dns: {query_name: example.test, query_type: SOA, valid_rcodes: [NOERROR]}
      kerberos:
        prober: udp
        udp: {payload_hex: "6a81", expect: ["^~"], fail_if_not_open: true}
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, NamedTuple

from udpkit.errors import UsageError
from udpkit.services.registry import PROBES

__all__ = ["CatalogueOptions", "Config", "DnsOptions", "Limits", "Module", "NtpOptions", "PROBERS", "UdpOptions",
           "parse_config"]

#: ``prober:`` values: the three with options of their own, and one per catalogue protocol.
PROBERS = ("udp", "ntp", "dns", *sorted(name for name in PROBES if name not in ("ntp", "dns")))
DEFAULT_TIMEOUT = 5.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")
_RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET",
           "NOTAUTH", "NOTZONE")


class UdpOptions(NamedTuple):
    """``prober: udp``: what to send, and what a reply must look like to count."""

    payload: bytes = b""
    expect: tuple[re.Pattern[bytes], ...] = ()
    expect_hex: tuple[bytes, ...] = ()
    fail_if_not_open: bool = True


class NtpOptions(NamedTuple):
    version: int = 4
    max_offset: float | None = None
    max_stratum: int | None = None


class DnsOptions(NamedTuple):
    """blackbox's dns options: the question, the rcodes that pass, and regexes on the answer RRs."""

    query_name: str = "."
    query_type: str = "SOA"
    valid_rcodes: tuple[str, ...] = ("NOERROR",)
    fail_if_matches_regexp: tuple[re.Pattern[str], ...] = ()
    fail_if_not_matches_regexp: tuple[re.Pattern[str], ...] = ()


class CatalogueOptions(NamedTuple):
    """Options of the catalogue probers that have any: SNMP's community, mDNS's question, SSDP's
    search target."""

    community: str = "public"
    query: str | None = None
    st: str = "ssdp:all"


class Module(NamedTuple):
    name: str
    prober: str
    timeout: float = DEFAULT_TIMEOUT
    preferred_ip_protocol: str = "ip6"
    ip_protocol_fallback: bool = True
    source_ip_address: str | None = None
    retries: int = 2
    allow_groups: bool = False  # probe broadcast and multicast targets (off: refused)
    rate_limit: float | None = None  # probes per second for this module (None: no limit)
    targets: tuple[str, ...] = ()  # probed all at once by /probe?module=NAME (no target=)
    udp: UdpOptions = UdpOptions()
    ntp: NtpOptions = NtpOptions()
    dns: DnsOptions = DnsOptions()
    catalogue: CatalogueOptions = CatalogueOptions()


class Limits(NamedTuple):
    concurrency: int = 128  # probes running at once, all modules
    per_target: int = 4  # probes running at once against one target


class Config(NamedTuple):
    modules: dict[str, Module]
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = None
    limits: Limits = Limits()


def _fail(where: str, message: str) -> UsageError:
    return UsageError(f"{where}: {message}")


def _keys(where: str, value: object, allowed: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(where, "expected a mapping")
    for key in value:
        if key not in allowed:
            raise _fail(f"{where}.{key}", f"unknown key (known: {', '.join(sorted(allowed))})")
    return value


def _seconds(where: str, value: object) -> float:
    if isinstance(value, bool):
        raise _fail(where, "expected a duration such as 500ms, 2s or 1m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        found = _DURATION.match(str(value).strip())
        if found is None:
            raise _fail(where, "expected a duration such as 500ms, 2s or 1m")
        seconds = float(found.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[found.group(2)]
    if not 0 < seconds <= 3600:
        raise _fail(where, "expected a duration above 0 and at most 1h")
    return seconds


def _int(where: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(where, f"expected a whole number from {low} to {high}")
    return value


def _bool(where: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, "expected true or false")
    return value


def _list(where: str, value: object) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(where, "expected a list")
    return value


def _regexes(where: str, value: object, binary: bool) -> tuple[Any, ...]:
    out = []
    for n, item in enumerate(_list(where, value)):
        try:
            out.append(re.compile(str(item).encode() if binary else str(item)))
        except re.error as exc:
            raise _fail(f"{where}[{n}]", f"bad regular expression: {exc}") from None
    return tuple(out)


def _udp(where: str, value: object) -> UdpOptions:
    raw = _keys(where, value, {"payload", "payload_hex", "payload_file", "expect", "expect_hex", "fail_if_not_open"})
    if sum(key in raw for key in ("payload", "payload_hex", "payload_file")) > 1:
        raise _fail(where, "payload, payload_hex and payload_file: one of them")
    payload = str(raw.get("payload", "")).encode()
    if "payload_file" in raw:
        from udpkit.files import read_bytes

        try:
            payload = read_bytes(str(raw["payload_file"]), "payload_file", 65507)
        except UsageError as exc:
            raise _fail(f"{where}.payload_file", str(exc)) from None
    if "payload_hex" in raw:
        try:
            payload = bytes.fromhex(str(raw["payload_hex"]))
        except ValueError:
            raise _fail(f"{where}.payload_hex", "expected hex digits") from None
    if len(payload) > 65507:
        raise _fail(f"{where}.payload", "longer than a UDP datagram can be")
    prefixes = []
    for n, item in enumerate(_list(f"{where}.expect_hex", raw.get("expect_hex"))):
        try:
            prefixes.append(bytes.fromhex(str(item)))
        except ValueError:
            raise _fail(f"{where}.expect_hex[{n}]", "expected hex digits") from None
    return UdpOptions(payload, _regexes(f"{where}.expect", raw.get("expect"), True), tuple(prefixes),
                      _bool(f"{where}.fail_if_not_open", raw.get("fail_if_not_open", True)))


def _ntp(where: str, value: object) -> NtpOptions:
    raw = _keys(where, value, {"version", "max_offset", "max_stratum"})
    return NtpOptions(_int(f"{where}.version", raw.get("version", 4), 1, 4),
                      _seconds(f"{where}.max_offset", raw["max_offset"]) if "max_offset" in raw else None,
                      _int(f"{where}.max_stratum", raw["max_stratum"], 1, 15) if "max_stratum" in raw else None)


def _dns(where: str, value: object) -> DnsOptions:
    raw = _keys(where, value, {"query_name", "query_type", "valid_rcodes", "validate_answer_rrs"})
    import dns.name
    import dns.rdatatype

    name = str(raw.get("query_name", "."))
    kind = str(raw.get("query_type", "SOA")).upper()
    try:
        dns.name.from_text(name)
    except Exception as exc:  # noqa: BLE001 - dnspython's many name errors
        raise _fail(f"{where}.query_name", f"not a DNS name: {exc}") from None
    try:
        dns.rdatatype.from_text(kind)
    except Exception:  # noqa: BLE001
        raise _fail(f"{where}.query_type", f"unknown record type {kind!r}") from None
    rcodes = tuple(str(r).upper() for r in _list(f"{where}.valid_rcodes", raw.get("valid_rcodes", ["NOERROR"])))
    for n, rcode in enumerate(rcodes):
        if rcode not in _RCODES:
            raise _fail(f"{where}.valid_rcodes[{n}]", f"unknown rcode {rcode!r}")
    rrs = _keys(f"{where}.validate_answer_rrs", raw.get("validate_answer_rrs"),
                {"fail_if_matches_regexp", "fail_if_not_matches_regexp"})
    return DnsOptions(name, kind, rcodes,
                      _regexes(f"{where}.validate_answer_rrs.fail_if_matches_regexp",
                               rrs.get("fail_if_matches_regexp"), False),
                      _regexes(f"{where}.validate_answer_rrs.fail_if_not_matches_regexp",
                               rrs.get("fail_if_not_matches_regexp"), False))


def _targets(where: str, value: object) -> tuple[str, ...]:
    found = _list(where, value)
    if len(found) > 100_000:
        raise _fail(where, "at most 100000 targets")
    for n, item in enumerate(found):
        if not isinstance(item, str) or not item or len(item) > 300:
            raise _fail(f"{where}[{n}]", "expected HOST:PORT")
    return tuple(found)


# prober -> the keys of its section (``snmp: {community: private}``)
_CATALOGUE_KEYS = {"snmp": {"community"}, "mdns": {"query"}, "ssdp": {"st"}}


def _catalogue(where: str, prober: str, raw: dict[str, Any]) -> CatalogueOptions:
    keys = _CATALOGUE_KEYS.get(prober)
    if keys is None:
        return CatalogueOptions()
    section = _keys(f"{where}.{prober}", raw.get(prober), keys)
    options = CatalogueOptions()
    if "community" in section:
        community = section["community"]
        if not isinstance(community, str) or not 0 < len(community.encode()) <= 64:
            raise _fail(f"{where}.snmp.community", "expected a community string of 1-64 bytes")
        options = options._replace(community=community)
    if "query" in section:
        query = str(section["query"])
        try:
            from udpkit.services.registry import probe_for

            probe_for("mdns", 5353, query)
        except UsageError as exc:
            raise _fail(f"{where}.mdns.query", str(exc)) from None
        options = options._replace(query=query)
    if "st" in section:
        st = section["st"]
        if not isinstance(st, str) or not st or len(st) > 200 or "\r" in st or "\n" in st:
            raise _fail(f"{where}.ssdp.st", "expected a search target on one line (ssdp:all, upnp:rootdevice, a URN)")
        options = options._replace(st=st)
    return options


def _module(name: str, value: object) -> Module:
    where = f"modules.{name}"
    raw = _keys(where, value, {"prober", "timeout", "preferred_ip_protocol", "ip_protocol_fallback",
                               "source_ip_address", "retries", "allow_groups", "rate_limit", "targets", "udp", "ntp",
                               "dns", *_CATALOGUE_KEYS})
    prober = raw.get("prober")
    if prober not in PROBERS:
        raise _fail(f"{where}.prober", f"expected one of {', '.join(PROBERS)}")
    for section in ("udp", "ntp", "dns", *_CATALOGUE_KEYS):
        if section in raw and section != prober:
            raise _fail(f"{where}.{section}", f"options for the {section} prober in a {prober} module")
    protocol = str(raw.get("preferred_ip_protocol", "ip6"))
    if protocol not in ("ip4", "ip6"):
        raise _fail(f"{where}.preferred_ip_protocol", "expected ip4 or ip6")
    source = raw.get("source_ip_address")
    if source is not None:
        try:
            ipaddress.ip_address(str(source))
        except ValueError:
            raise _fail(f"{where}.source_ip_address", "expected an IP address") from None
    rate = raw.get("rate_limit")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1e6):
        raise _fail(f"{where}.rate_limit", "expected probes per second, above 0")
    return Module(
        name, str(prober),
        timeout=_seconds(f"{where}.timeout", raw["timeout"]) if "timeout" in raw else DEFAULT_TIMEOUT,
        preferred_ip_protocol=protocol,
        ip_protocol_fallback=_bool(f"{where}.ip_protocol_fallback", raw.get("ip_protocol_fallback", True)),
        source_ip_address=None if source is None else str(source),
        retries=_int(f"{where}.retries", raw.get("retries", 2), 0, 10),
        allow_groups=_bool(f"{where}.allow_groups", raw.get("allow_groups", False)),
        rate_limit=None if rate is None else float(rate),
        targets=_targets(f"{where}.targets", raw.get("targets")),
        udp=_udp(f"{where}.udp", raw.get("udp")),
        ntp=_ntp(f"{where}.ntp", raw.get("ntp")),
        dns=_dns(f"{where}.dns", raw.get("dns")),
        catalogue=_catalogue(where, str(prober), raw),
    )


def parse_config(document: object) -> Config:
    """The parsed YAML document -> Config; a UsageError names the first place that is wrong."""
    raw = _keys("config", document, {"modules", "allow", "limits"})
    modules_raw = raw.get("modules")
    if not isinstance(modules_raw, dict) or not modules_raw:
        raise _fail("modules", "expected a mapping of at least one module")
    modules = {}
    for name, value in modules_raw.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise _fail(f"modules.{name}", "a module name is letters, digits, _ . - (at most 64)")
        modules[name] = _module(name, value)
    allow = None
    if "allow" in raw:
        networks = []
        for n, item in enumerate(_list("allow", raw["allow"])):
            try:
                networks.append(ipaddress.ip_network(str(item), strict=False))
            except ValueError:
                raise _fail(f"allow[{n}]", f"not a network: {item!r}") from None
        allow = tuple(networks)
    limits_raw = _keys("limits", raw.get("limits"), {"concurrency", "per_target"})
    limits = Limits(_int("limits.concurrency", limits_raw.get("concurrency", 128), 1, 10000),
                    _int("limits.per_target", limits_raw.get("per_target", 4), 1, 10000))
    return Config(modules, allow, limits)
