"""The DNS responder and probe over dnspython, without sockets."""

from __future__ import annotations

from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from udpkit.addr import Endpoint
from udpkit.errors import UsageError
from udpkit.services.dns import ANSWER_CACHE, DnsProbe, DnsResponder, load_zone

DATA = Path(__file__).parent.parent / "data"
PEER = Endpoint("192.0.2.9", 40000, 2)


@pytest.fixture(scope="module")
def server() -> DnsResponder:
    return DnsResponder([load_zone(DATA / "example.zone")], rate_limit=0)  # the answers, not the limit


def ask(server: DnsResponder, name: str, kind: str, **kwargs: object) -> dns.message.Message:
    query = dns.message.make_query(name, kind, **kwargs)  # type: ignore[arg-type]
    wire = server.handle(query.to_wire(), PEER, 0.0)
    assert isinstance(wire, bytes)
    return dns.message.from_wire(wire)


def test_answers_are_authoritative_and_not_recursive(server: DnsResponder) -> None:
    reply = ask(server, "www.example.test", "A")
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA and not reply.flags & dns.flags.RA
    assert [rr.to_text() for rr in reply.answer[0]] == ["192.0.2.80"]


def test_cname_is_followed_inside_the_zone(server: DnsResponder) -> None:
    reply = ask(server, "alias.example.test", "AAAA")
    assert [rrset.rdtype for rrset in reply.answer] == [5, 28]


@pytest.mark.parametrize("name, kind, rcode, answers", [
    ("nope.example.test", "A", dns.rcode.NXDOMAIN, 0),
    ("www.example.test", "MX", dns.rcode.NOERROR, 0),
    ("example.org", "A", dns.rcode.REFUSED, 0),
    ("_ntp._udp.example.test", "SRV", dns.rcode.NOERROR, 1),
    ("80.2.0.192.in-addr.arpa", "PTR", dns.rcode.REFUSED, 0),  # outside the zone's origin
    ("txt.example.test", "TXT", dns.rcode.NOERROR, 1),
])
def test_rcodes(server: DnsResponder, name: str, kind: str, rcode: int, answers: int) -> None:
    reply = ask(server, name, kind)
    assert reply.rcode() == rcode and len(reply.answer) == answers
    if rcode == dns.rcode.NXDOMAIN or (rcode == dns.rcode.NOERROR and not answers):
        assert reply.authority[0].rdtype == 6  # the SOA


def rrsets(section: list[dns.rrset.RRset]) -> list[str]:
    return [line for rrset in section for line in rrset.to_text().splitlines()]


@pytest.mark.parametrize("name, kind, rcode, answer", [
    # empty non-terminals (RFC 8020: NXDOMAIN would deny every name below them to a resolver)
    ("_udp.example.test", "SRV", dns.rcode.NOERROR, []),
    ("wild.example.test", "A", dns.rcode.NOERROR, []),
    ("ent.wild.example.test", "A", dns.rcode.NOERROR, []),
    # wildcards (RFC 4592): the owner is the name asked, at any depth below the closest encloser
    ("x.wild.example.test", "A", dns.rcode.NOERROR, ["x.wild.example.test. 300 IN A 192.0.2.99"]),
    ("a.B.wild.example.test", "TXT", dns.rcode.NOERROR, ['a.B.wild.example.test. 300 IN TXT "from a wildcard"']),
    ("x.wild.example.test", "AAAA", dns.rcode.NOERROR, []),  # a synthesized name without that type: NODATA
    ("*.wild.example.test", "A", dns.rcode.NOERROR, ["*.wild.example.test. 300 IN A 192.0.2.99"]),
    ("x.cname.example.test", "A", dns.rcode.NOERROR, ["x.cname.example.test. 300 IN CNAME www.example.test.",
                                                      "www.example.test. 300 IN A 192.0.2.80"]),
    # a name that exists stops the wildcard: its own records only, and nothing below it is synthesized
    ("host.wild.example.test", "A", dns.rcode.NOERROR, ["host.wild.example.test. 300 IN A 192.0.2.98"]),
    ("host.wild.example.test", "TXT", dns.rcode.NOERROR, []),
    ("x.host.wild.example.test", "A", dns.rcode.NXDOMAIN, []),
    ("x.ent.wild.example.test", "A", dns.rcode.NXDOMAIN, []),  # the closest encloser is ent.: no *.ent.
    ("x._udp.example.test", "SRV", dns.rcode.NXDOMAIN, []),
])
def test_empty_non_terminals_exist_and_wildcards_synthesize(server: DnsResponder, name: str, kind: str,
                                                            rcode: int, answer: list[str]) -> None:
    for cache in (0, ANSWER_CACHE):  # dnspython's answer, then the templates' and the kept one
        responder = DnsResponder([load_zone(DATA / "example.zone")], rate_limit=0, cache=cache)
        for _ in range(2):
            reply = ask(responder, name, kind)
            assert (dns.rcode.to_text(reply.rcode()), rrsets(reply.answer)) == (dns.rcode.to_text(rcode), answer)
            assert reply.flags & dns.flags.AA
            if not answer:
                assert [rrset.rdtype for rrset in reply.authority] == [6]  # the SOA
    assert ask(server, name, kind).rcode() == rcode


def test_synthesized_answers_are_counted_and_kept_only_while_there_is_room() -> None:
    """A flood of random names under a wildcard is a flood of new positive answers: counted as
    ``wildcard``, and kept like the negative ones, without pushing out the zone's own names."""
    responder = DnsResponder([load_zone(DATA / "example.zone")], rate_limit=0, cache=64 * 1024)
    ask(responder, "www.example.test", "A")
    for n in range(600):
        ask(responder, f"r{n}.wild.example.test", "A")
    assert responder.stats["wildcard"] == 600 and responder.stats["answered"] == 601
    www = dns.message.make_query("www.example.test", "A").to_wire()
    assert www[2:] in responder._kept


def test_a_negative_answer_says_to_keep_the_denial_for_the_soas_minimum(server: DnsResponder) -> None:
    """RFC 2308: the SOA in a negative answer carries the lesser of its TTL (300) and its MINIMUM
    (60), how long a resolver may keep the denial; asked for itself, the SOA keeps its own TTL."""
    for name, kind in (("nope.example.test", "A"), ("www.example.test", "MX"), ("x.wild.example.test", "AAAA")):
        assert [(rrset.rdtype, rrset.ttl) for rrset in ask(server, name, kind).authority] == [(6, 60)]
    assert ask(server, "example.test", "SOA").answer[0].ttl == 300


@pytest.mark.parametrize("name, first", [
    ("example.test", "example.test. 300 IN SOA ns1.example.test. hostmaster.example.test. 2026112701 3600 600 "
                     "86400 60"),
    ("www.example.test", "www.example.test. 300 IN A 192.0.2.80"),
    ("x.wild.example.test", "x.wild.example.test. 300 IN A 192.0.2.99"),
])
def test_any_gets_the_names_first_rrset_not_all(server: DnsResponder, name: str, first: str) -> None:
    """RFC 8482: a small ANY question must not buy every record of a name (NSD answers the same)."""
    assert rrsets(ask(server, name, "ANY").answer) == [first]


def test_a_big_answer_is_truncated_to_what_the_client_allows(server: DnsResponder) -> None:
    plain = ask(server, "big.example.test", "TXT")
    assert plain.flags & dns.flags.TC and not plain.answer
    query = dns.message.make_query("big.example.test", "TXT", use_edns=0, payload=4096)
    wire = server.handle(query.to_wire(), PEER, 0.0)
    assert isinstance(wire, bytes) and len(wire) <= 1232  # at most 1232 even when 4096 is offered


def test_garbage_with_a_header_is_formerr_without_is_silence(server: DnsResponder) -> None:
    reply = server.handle(b"\xab\xcd\x01\x00" + b"\xff" * 20, PEER, 0.0)
    assert isinstance(reply, bytes) and reply[:2] == b"\xab\xcd" and reply[3] & 0xF == dns.rcode.FORMERR
    assert server.handle(b"\x01\x02\x03", PEER, 0.0) is None
    response = ask(server, "www.example.test", "A").to_wire()
    assert server.handle(response, PEER, 0.0) is None  # never answer an answer


def test_hosts_files_become_zones(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.1 a.lab.test\n2001:db8::1 a.lab.test b.lab.test\n")
    server = DnsResponder([load_zone(hosts)])
    assert ask(server, "b.lab.test", "AAAA").answer[0][0].to_text() == "2001:db8::1"
    with pytest.raises(UsageError):
        load_zone(_garbage(tmp_path))


def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "bad.zone"
    path.write_text("this is not a zone {\n")
    return path


def test_the_rate_limit_silences_a_flood_from_one_client() -> None:
    server = DnsResponder([load_zone(DATA / "example.zone")], rate_limit=2, slip=0)
    query = dns.message.make_query("www.example.test", "A").to_wire()
    replies = [server.handle(query, PEER, 0.01 * i) for i in range(10)]
    assert sum(r is not None for r in replies) == 2  # the burst, then silence while it keeps asking


def test_the_probe_accepts_only_its_own_question_and_id(server: DnsResponder) -> None:
    probe = DnsProbe("www.example.test/A")
    reply = server.handle(probe.build(0.0), PEER, 0.0)
    assert isinstance(reply, bytes)
    evidence = probe.classify(reply, 0.002)
    assert evidence is not None and evidence.detail["rcode"] == "NOERROR"
    assert any("192.0.2.80" in a for a in evidence.detail["answers"])
    other = server.handle(dns.message.make_query("www.example.test", "A").to_wire(), PEER, 0.0)
    assert isinstance(other, bytes) and probe.classify(other, 0.0) is None
