"""The exporter without a network: its YAML modules checked to the key (one line naming the place),
the kernel counter files read as node_exporter reads them, targets parsed and refused by the rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpkit.errors import UsageError
from udpkit.exporter import parse_config
from udpkit.exporter.host import parse_snmp, parse_snmp6
from udpkit.exporter.probers import check_target, ip_addr_hash, parse_target

GOOD = {
    "allow": ["127.0.0.0/8", "::1/128"],
    "limits": {"concurrency": 8, "per_target": 2},
    "modules": {
        "ntp_ok": {"prober": "ntp", "timeout": "2s", "ntp": {"max_offset": "100ms", "max_stratum": 4}},
        "dns_www": {"prober": "dns", "dns": {"query_name": "www.example.test", "query_type": "A",
                                             "valid_rcodes": ["NOERROR", "NXDOMAIN"],
                                             "validate_answer_rrs": {"fail_if_not_matches_regexp": ["IN\tA"]}}},
        "kerberos": {"prober": "udp", "udp": {"payload_hex": "6a81", "expect": ["^~"], "fail_if_not_open": False}},
        "snmp": {"prober": "snmp", "allow_groups": True, "rate_limit": 5, "snmp": {"community": "secret"}},
        "printers": {"prober": "mdns", "mdns": {"query": "_ipp._tcp.local./PTR"}},
        "routers": {"prober": "ssdp", "ssdp": {"st": "urn:schemas-upnp-org:device:InternetGatewayDevice:1"}},
    },
}


def test_a_good_config_reads_as_written() -> None:
    config = parse_config(GOOD)
    assert config.limits.concurrency == 8 and len(config.allow or ()) == 2
    ntp = config.modules["ntp_ok"]
    assert (ntp.timeout, ntp.ntp.max_offset, ntp.ntp.max_stratum) == (2.0, 0.1, 4)
    dns = config.modules["dns_www"].dns
    assert dns.valid_rcodes == ("NOERROR", "NXDOMAIN") and dns.fail_if_not_matches_regexp[0].pattern == "IN\tA"
    udp = config.modules["kerberos"].udp
    assert udp.payload == b"\x6a\x81" and not udp.fail_if_not_open
    assert config.modules["snmp"].allow_groups and config.modules["snmp"].rate_limit == 5.0
    assert config.modules["snmp"].catalogue.community == "secret"
    assert config.modules["printers"].catalogue.query == "_ipp._tcp.local./PTR"
    assert config.modules["routers"].catalogue.st.endswith("InternetGatewayDevice:1")


@pytest.mark.parametrize("change, where", [
    ({"modules": {}}, "modules: expected a mapping of at least one module"),
    ({"modules": {"x": {"prober": "tcp"}}}, "modules.x.prober: expected one of udp, ntp, dns"),
    ({"modules": {"x": {"prober": "ntp", "ntp": {"max_offset": "soon"}}}}, "modules.x.ntp.max_offset: expected a duration"),
    ({"modules": {"x": {"prober": "ntp", "ntp": {"max_stratum": 99}}}}, "modules.x.ntp.max_stratum: expected a whole number"),
    ({"modules": {"x": {"prober": "ntp", "dns": {}}}}, "modules.x.dns: options for the dns prober in a ntp module"),
    ({"modules": {"x": {"prober": "dns", "dns": {"valid_rcodes": ["NOPE"]}}}}, "modules.x.dns.valid_rcodes[0]: unknown rcode"),
    ({"modules": {"x": {"prober": "dns", "dns": {"query_type": "BOGUS"}}}}, "modules.x.dns.query_type: unknown record type"),
    ({"modules": {"x": {"prober": "udp", "udp": {"expect": ["("]}}}}, "modules.x.udp.expect[0]: bad regular expression"),
    ({"modules": {"x": {"prober": "udp", "udp": {"payload_hex": "zz"}}}}, "modules.x.udp.payload_hex: expected hex"),
    ({"modules": {"x": {"prober": "udp", "typo": 1}}}, "modules.x.typo: unknown key"),
    ({"modules": {"x": {"prober": "udp", "preferred_ip_protocol": "ip5"}}}, "preferred_ip_protocol: expected ip4 or ip6"),
    ({"modules": {"x": {"prober": "udp"}}, "allow": ["nonsense"]}, "allow[0]: not a network"),
    ({"modules": {"x": {"prober": "udp"}}, "limits": {"concurrency": 0}}, "limits.concurrency: expected a whole number"),
    ({"modules": {"x": {"prober": "snmp", "snmp": {"community": ""}}}}, "modules.x.snmp.community: expected"),
    ({"modules": {"x": {"prober": "snmp", "snmp": {"oid": "1.3"}}}}, "modules.x.snmp.oid: unknown key"),
    ({"modules": {"x": {"prober": "ssdp", "ssdp": {"st": "a\r\nb"}}}}, "modules.x.ssdp.st: expected a search target"),
    ({"modules": {"x": {"prober": "mdns", "mdns": {"query": "x/NOTATYPE"}}}}, "modules.x.mdns.query"),
    ({"modules": {"x": {"prober": "ntp", "snmp": {"community": "a"}}}}, "modules.x.snmp: options for the snmp prober"),
])
def test_a_bad_config_is_refused_naming_the_place(change: dict[str, object], where: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_config(change)
    assert where in str(caught.value) and "\n" not in str(caught.value)


SNMP = """\
Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 100
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 120 7 2 130 1 0 0 5 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
"""


def test_the_kernels_counters_read_as_node_exporter_reads_them() -> None:
    v4 = parse_snmp(SNMP.splitlines())
    assert v4[("udp", "InDatagrams")] == 120 and v4[("udp", "NoPorts")] == 7 and v4[("udp", "IgnoredMulti")] == 5
    assert v4[("udplite", "InDatagrams")] == 0 and ("udp", "Forwarding") not in v4
    v6 = parse_snmp6(["Udp6InDatagrams                 	42", "Udp6NoPorts 3", "UdpLite6InErrors 0", "Ip6InReceives 9"])
    assert v6 == {("udp", "InDatagrams"): 42, ("udp", "NoPorts"): 3, ("udplite", "InErrors"): 0}


@given(st.lists(st.text(max_size=80), max_size=20))
def test_any_counter_file_text_is_read_without_a_crash(lines: list[str]) -> None:
    assert all(isinstance(v, int) for v in parse_snmp(lines).values())
    assert all(isinstance(v, int) for v in parse_snmp6(lines).values())


def test_targets_and_the_rules_that_refuse_them() -> None:
    config = parse_config(GOOD)
    ntp = config.modules["ntp_ok"]
    assert parse_target("127.0.0.1:1123", ntp) == ("127.0.0.1", 1123)
    assert parse_target("[::1]:53", ntp) == ("::1", 53)
    assert parse_target("pool.example", ntp) == ("pool.example", 123)  # the prober's well-known port
    for bad in ("127.0.0.1:0", "127.0.0.1:99999", ":53", "[::1]:x"):
        with pytest.raises(UsageError):
            parse_target(bad, ntp)
    assert check_target("127.0.0.1", config, ntp) is None
    assert "not in the allowed networks" in str(check_target("10.0.0.1", config, ntp))
    assert "broadcast or multicast" in str(check_target("224.0.0.1", config._replace(allow=None), ntp))
    assert check_target("224.0.0.1", config._replace(allow=None), config.modules["snmp"]) is None  # allow_groups


def test_the_address_hash_is_blackbox_exporters() -> None:
    """blackbox_exporter 0.23 reports 3668918509 for 127.0.0.1 (FNV-1a over the address's 4 bytes)."""
    assert ip_addr_hash("127.0.0.1") == 3668918509
    assert ip_addr_hash("::1") != ip_addr_hash("127.0.0.1")  # IPv6: its 16 bytes
