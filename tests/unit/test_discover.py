"""Discovery without sockets: which questions each link gets, how an answer becomes a host with an
identity, and what is refused — another prober's answers, forgeries, junk, and more hosts than kept."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpkit.net import Interface
from udpkit.probe import discover as d
from udpkit.probe.discover import Discovery, Request, identity, requests_for
from udpkit.services.ntp import NtpPacket, encode_packet
from udpkit.services.wsd import WsdProbe

ETH = Interface("eth0", 2, True, False, True, "10.0.0.2", "10.0.0.255")


def test_each_link_gets_groups_and_its_broadcast_address() -> None:
    asked = {(r.service, r.family, r.address, r.port) for r in requests_for(ETH)}
    assert ("ssdp", socket.AF_INET, "239.255.255.250", 1900) in asked
    assert ("ssdp", socket.AF_INET6, "ff02::c", 1900) in asked
    assert ("mdns", socket.AF_INET6, "ff02::fb", 5353) in asked
    assert ("wsd", socket.AF_INET, "239.255.255.250", 3702) in asked
    assert ("netbios-ns", socket.AF_INET, "10.0.0.255", 137) in asked
    assert ("snmp", socket.AF_INET, "10.0.0.255", 161) in asked
    assert ("ntp", socket.AF_INET, "10.0.0.255", 123) in asked
    assert not any(r.family == socket.AF_INET6 and r.service in ("snmp", "ntp", "netbios-ns") for r in requests_for(ETH))
    # a link without broadcast or multicast gets nothing it could not carry
    point = ETH._replace(broadcast=None, multicast=False)
    assert requests_for(point) == []
    assert {r.service for r in requests_for(ETH, services=["mdns"], families=[socket.AF_INET])} == {"mdns"}


def _wsd_match(relates_to: str) -> bytes:
    return (f"<s:Envelope><s:Header><a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</a:Action>"
            f"<a:RelatesTo>{relates_to}</a:RelatesTo></s:Header><s:Body><d:ProbeMatches><d:ProbeMatch>"
            "<a:EndpointReference><a:Address>urn:uuid:1234</a:Address></a:EndpointReference>"
            "<d:Types>wsdp:Device pub:Computer</d:Types><d:XAddrs>http://10.0.0.9:5357/x</d:XAddrs>"
            "</d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>").encode()


def test_a_ws_discovery_answer_counts_only_if_it_relates_to_our_probe() -> None:
    request = Request("eth0", socket.AF_INET, "wsd", "239.255.255.250", 3702)
    discovery = Discovery([request])
    probe = discovery.payload(request, 0.0)
    ours = probe.split(b"<wsa:MessageID>")[1].split(b"<")[0].decode()
    assert discovery.answer(request, "10.0.0.9", _wsd_match("urn:uuid:someone-elses"), 1.0) is None
    found = discovery.answer(request, "10.0.0.9", _wsd_match(ours), 1.0)
    assert found is not None and found.verified
    assert found.identity == "wsdp:Device pub:Computer urn:uuid:1234 http://10.0.0.9:5357/x"
    assert discovery.answer(request, "10.0.0.9", _wsd_match(ours), 1.1) is None  # one line per host and service
    assert discovery.unrecognised == 1


def test_a_document_type_declaration_is_never_parsed() -> None:
    probe = WsdProbe()
    message_id = probe.build(0.0).split(b"<wsa:MessageID>")[1].split(b"<")[0].decode()
    bomb = b'<!DOCTYPE x [<!ENTITY a "aaaa">]>' + _wsd_match(message_id)
    assert probe.classify(bomb, 1.0) is None
    assert probe.classify(_wsd_match(message_id) + b" " * (1 << 16), 1.0) is None  # too long to be a device's


def test_an_ntp_broadcast_server_is_heard_and_nothing_else() -> None:
    discovery = Discovery([])
    announce = encode_packet(NtpPacket(0, 4, 5, 3, 6, -20, 0.0, 0.001, b"\x7f\x7f\x01\x01", 0, 0, 0, 1 << 40))
    found = discovery.heard("eth0", "10.0.0.1", announce, 0.0)
    assert found is not None and not found.verified
    assert found.identity == "broadcast server, stratum 3, refid 127.127.1.1, NTPv4"
    client = encode_packet(NtpPacket(0, 4, 3, 0, 6, -20, 0.0, 0.0, b"\0" * 4, 0, 0, 0, 1 << 40))
    assert discovery.heard("eth0", "10.0.0.2", client, 0.0) is None
    assert discovery.heard("eth0", "10.0.0.3", b"junk", 0.0) is None
    assert discovery.unrecognised == 2


def test_identities_read_like_what_each_service_said() -> None:
    assert identity("ssdp", {"server": "Linux UPnP/1.0 x/1", "st": "upnp:rootdevice", "location": "http://h/d.xml"}) \
        == "Linux UPnP/1.0 x/1 (upnp:rootdevice) http://h/d.xml"
    assert identity("mdns", {"answers": ["_services._dns-sd._udp.local. 10 IN PTR _ipp._tcp.local.",
                                         "_services._dns-sd._udp.local. 10 IN PTR _ssh._tcp.local."]}) \
        == "services: _ipp._tcp, _ssh._tcp"
    assert identity("netbios-ns", {"names": ["HOST<00>"], "mac": "02:00:00:00:00:01"}) == "HOST<00> mac 02:00:00:00:00:01"
    assert identity("snmp", {"sysDescr": "Linux router"}) == "Linux router"
    assert identity("ntp", {"kiss": "RATE"}) == "kiss code RATE"


def test_hosts_beyond_the_bound_are_counted_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(d, "MAX_FOUND", 3)
    discovery = Discovery([])
    announce = encode_packet(NtpPacket(0, 4, 5, 2, 6, -20, 0.0, 0.0, b"GPS\0", 0, 0, 0, 1))
    for n in range(10):
        discovery.heard("eth0", f"10.0.0.{n}", announce, 0.0)
    assert len(discovery.results()) == 3 and discovery.dropped == 7


def test_results_are_ordered_by_address_then_service() -> None:
    discovery = Discovery([])
    announce = encode_packet(NtpPacket(0, 4, 5, 2, 6, -20, 0.0, 0.0, b"GPS\0", 0, 0, 0, 1))
    for host in ("10.0.0.20", "10.0.0.3", "fe80::1%eth0", "10.0.0.100"):
        discovery.heard("eth0", host, announce, 0.0)
    assert [f.host for f in discovery.results()] == ["10.0.0.3", "10.0.0.20", "10.0.0.100", "fe80::1%eth0"]


@given(st.binary(max_size=2048), st.sampled_from(d.SERVICES))
def test_any_bytes_as_an_answer_are_refused_or_read_never_a_crash(data: bytes, service: str) -> None:
    port = {"ssdp": 1900, "mdns": 5353, "wsd": 3702, "netbios-ns": 137, "snmp": 161, "ntp": 123}[service]
    request = Request("eth0", socket.AF_INET, service, "10.0.0.255", port)
    discovery = Discovery([request])
    discovery.payload(request, 0.0)
    discovery.answer(request, "10.0.0.9", data, 1.0)
    discovery.heard("eth0", "10.0.0.9", data, 1.0)
    assert len(discovery.results()) <= 2
