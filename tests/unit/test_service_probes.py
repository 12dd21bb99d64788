"""The catalogue's probes: each request is well formed, each recogniser accepts a genuine answer
(constructed from the protocol's specification) and refuses one that does not answer us."""

from __future__ import annotations

import socket
import struct

import dns.message
import dns.rrset
import pytest

from udpkit.services.memcached import MemcachedProbe
from udpkit.services.netbios import NetbiosProbe
from udpkit.services.quic import QuicProbe
from udpkit.services.registry import LIKELY, PORTS, PROBES, probe_for
from udpkit.services.snmp import SnmpProbe, _tlv, ber_items
from udpkit.services.ssdp import SsdpProbe
from udpkit.services.stun import COOKIE, StunProbe


def test_snmp_get_sysdescr_and_its_response() -> None:
    probe = SnmpProbe()
    request = probe.build(0.0)
    (message,) = ber_items(request) or []
    version, community, pdu = ber_items(message[1]) or []
    assert (version[1], community[1], pdu[0]) == (b"\x01", b"public", 0xA0)
    request_id = (ber_items(pdu[1]) or [])[0][1]
    varbind = _tlv(0x30, _tlv(0x30, _tlv(0x06, bytes([0x2B, 6, 1, 2, 1, 1, 1, 0])) + _tlv(0x04, b"Linux box 6.18")))
    answer = _tlv(0x30, b"\x02\x01\x01" + _tlv(0x04, b"public") +
                  _tlv(0xA2, _tlv(0x02, request_id) + b"\x02\x01\x00\x02\x01\x00" + varbind))
    evidence = probe.classify(answer, 0.0)
    assert evidence is not None and evidence.detail["sysDescr"] == "Linux box 6.18"
    assert SnmpProbe().classify(answer, 0.0) is None  # another request ID


def test_netbios_node_status_names() -> None:
    probe = NetbiosProbe()
    request = probe.build(0.0)
    assert request.endswith(b"\x00\x21\x00\x01") and b"CKAAAA" in request
    ident = struct.unpack_from("!H", request)[0]
    names = b"WORKSTATION    \x00\x04\x00" + b"WORKGROUP      \x00\x84\x00"
    rdata = bytes([2]) + names + bytes.fromhex("525400123456") + b"\x00" * 40
    answer = (struct.pack("!HHHHHH", ident, 0x8400, 0, 1, 0, 0) + request[12:12 + 34]
              + struct.pack("!HHIH", 0x21, 1, 0, len(rdata)) + rdata)
    evidence = probe.classify(answer, 0.0)
    assert evidence is not None
    assert evidence.detail == {"names": ["WORKSTATION<00>", "WORKGROUP<00> group"], "mac": "52:54:00:12:34:56"}


def test_ssdp_search_and_answer() -> None:
    probe = SsdpProbe()
    assert probe.build(0.0).startswith(b"M-SEARCH * HTTP/1.1\r\n")
    answer = (b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nLOCATION: http://192.0.2.1:80/desc.xml\r\n"
              b"SERVER: Linux/6 UPnP/2.0 box/1\r\nST: upnp:rootdevice\r\nUSN: uuid:1::upnp:rootdevice\r\n\r\n")
    evidence = probe.classify(answer, 0.0)
    assert evidence is not None and evidence.detail["location"] == "http://192.0.2.1:80/desc.xml"
    assert probe.classify(b"HTTP/1.1 404 Not Found\r\n\r\n", 0.0) is None


def test_stun_binding_response_gives_the_mapped_address() -> None:
    probe = StunProbe()
    request = probe.build(0.0)
    assert struct.unpack_from("!HHI", request) == (1, 0, COOKIE) and len(request) == 20
    transaction = request[8:]
    port, address = 40000 ^ (COOKIE >> 16), bytes(a ^ b for a, b in zip(bytes([192, 0, 2, 7]), struct.pack("!I", COOKIE)))
    mapped = struct.pack("!BBH", 0, 1, port) + address
    software = b"udpkit-test"
    attrs = struct.pack("!HH", 0x20, len(mapped)) + mapped + struct.pack("!HH", 0x8022, len(software)) + software + b"\0"
    answer = struct.pack("!HHI", 0x0101, len(attrs), COOKIE) + transaction + attrs
    evidence = probe.classify(answer, 0.0)
    assert evidence is not None and evidence.detail == {"success": True, "mapped": "192.0.2.7:40000",
                                                        "software": "udpkit-test"}


def test_memcached_stats() -> None:
    probe = MemcachedProbe()
    request = probe.build(0.0)
    assert request[8:] == b"stats\r\n"
    answer = request[:2] + b"\x00\x00\x00\x01\x00\x00" + b"STAT pid 42\r\nSTAT uptime 9\r\nSTAT version 1.6.21\r\nEND\r\n"
    evidence = probe.classify(answer, 0.0)
    assert evidence is not None and evidence.detail == {"pid": "42", "uptime": "9", "version": "1.6.21"}


def test_quic_version_negotiation() -> None:
    probe = QuicProbe()
    request = probe.build(0.0)
    assert len(request) == 1200 and request[0] & 0xC0 == 0xC0
    dcid = request[6:14]
    answer = bytes([0x80]) + b"\0\0\0\0" + b"\x00" + bytes([8]) + dcid + struct.pack("!II", 1, 0x6B3343CF)
    evidence = probe.classify(answer, 0.0)
    assert evidence is not None and evidence.detail["versions"] == ["v1", "v2"]
    assert probe.classify(answer[:7] + b"\x00" * 8 + answer[15:], 0.0) is None  # not our connection ID


def test_mdns_asks_for_a_unicast_answer_and_reads_one() -> None:
    probe = probe_for("mdns", 5353)
    assert probe is not None
    query = dns.message.from_wire(probe.build(0.0))
    assert query.id == 0 and query.question[0].rdclass == 0x8001
    answer = dns.message.Message(id=0)
    answer.flags = 0x8400
    answer.answer.append(dns.rrset.from_text("_services._dns-sd._udp.local.", 10, "IN", "PTR", "_ssh._tcp.local."))
    evidence = probe.classify(answer.to_wire(), 0.0)
    assert evidence is not None and evidence.protocol == "mdns"


@pytest.mark.parametrize("name", sorted(PORTS))
def test_auto_picks_each_well_known_ports_probe(name: str) -> None:
    chosen = probe_for("auto", PORTS[name])
    assert (chosen is None) == (name == "discard")


def test_every_probe_is_in_the_likely_order() -> None:
    assert sorted(LIKELY) == sorted(PROBES)


def test_every_probe_remembers_a_bounded_number_of_requests() -> None:
    """A long scan sends a request per port: what each probe remembers stays capped."""
    from udpkit.services.outstanding import MAX_OUTSTANDING, Outstanding
    from udpkit.services.registry import PROBES

    for name, factory in PROBES.items():
        probe = factory()
        for i in range(MAX_OUTSTANDING + 500):
            probe.build(1_700_000_000.0 + i)
        tables = [v for v in vars(probe).values() if isinstance(v, Outstanding)]
        assert all(len(t) <= MAX_OUTSTANDING for t in tables), name


def test_every_probe_says_whether_its_answers_carry_our_request() -> None:
    """The prober trusts, under forgery, only answers that echo something we chose: each probe says
    whether its recogniser checks an id, nonce or stamp of ours (daytime, time, SSDP and mDNS
    cannot: their answers carry nothing of the request)."""
    verifying = {name for name, factory in PROBES.items() if factory().verifies}
    assert verifying == set(PROBES) - {"daytime", "time", "ssdp", "mdns"}


@pytest.mark.parametrize("name", ["echo", "ntp", "dns", "snmp", "stun", "memcached", "netbios-ns", "quic"])
def test_a_verifying_probe_refuses_an_answer_to_another_probers_request(name: str) -> None:
    """The answer is built from the *request* another instance sent (as a forger who guesses the
    protocol but not our id would): ours must refuse it."""
    from udpkit.services.registry import RESPONDERS

    theirs, ours = PROBES[name](), PROBES[name]()
    ours.build(0.0)
    request = theirs.build(1_700_000_000.0)
    if name in RESPONDERS:
        from udpkit.addr import Endpoint

        answer = RESPONDERS[name]().handle(request, Endpoint("192.0.2.9", 4000, socket.AF_INET), 1_700_000_000.0)
        assert isinstance(answer, bytes) and theirs.classify(answer, 1_700_000_000.0) is not None
        assert ours.classify(answer, 1_700_000_000.0) is None
    else:
        assert ours.classify(request, 0.0) is None  # at least: our recogniser is not fooled by a reflection
