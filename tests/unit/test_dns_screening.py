"""The DNS responder turns expensive messages away before dnspython sees them, and limits answers
per client as BIND's RRL does: what a flood of crafted or spoofed queries can cost and gain."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import dns.message
import dns.rcode
from hypothesis import given
from hypothesis import strategies as st

from udpkit.addr import Endpoint
from udpkit.services.dns import MAX_OPTIONS, DnsResponder, load_zone, screen

DATA = Path(__file__).parent.parent / "data"
PEER = Endpoint("192.0.2.9", 40000, 2)
HEADER = struct.Struct("!HHHHHH")


def zone_server(**kwargs: object) -> DnsResponder:
    return DnsResponder([load_zone(DATA / "example.zone")], **kwargs)  # type: ignore[arg-type]


def heavy_questions() -> bytes:
    """65,535 questions, all but the first a compression pointer to it: 455 ms for dnspython."""
    first = b"\x03www\x07example\x04test\x00" + b"\x00\x01\x00\x01"
    rest = b"\xc0\x0c\x00\x01\x00\x01" * ((65507 - 12 - len(first)) // 6)
    return HEADER.pack(1, 0x0100, 65535, 0, 0, 0) + first + rest


def many_options(count: int) -> bytes:
    query = dns.message.make_query("www.example.test", "A", use_edns=0)
    wire = bytearray(query.to_wire())
    options = b"".join(struct.pack("!HH", 10, 8) + bytes(8) for _ in range(count))  # cookies
    wire[-2:] = struct.pack("!H", len(options))
    return bytes(wire) + options


def test_a_real_query_passes_the_screen() -> None:
    for query in (dns.message.make_query("www.example.test", "A"),
                  dns.message.make_query("www.example.test", "TXT", use_edns=0, payload=1232),
                  dns.message.make_query("www.example.test", "A", want_dnssec=True)):
        assert screen(query.to_wire()) is None
    assert screen(many_options(MAX_OPTIONS)) is None


def test_expensive_messages_get_a_cheap_formerr_without_parsing() -> None:
    server = zone_server()
    answered = dns.message.make_query("www.example.test", "A")
    answered.answer.append(dns.rrset.from_text("x.", 1, "IN", "A", "192.0.2.1"))
    for wire in (heavy_questions(), many_options(1000), many_options(MAX_OPTIONS + 1), answered.to_wire(),
                 HEADER.pack(1, 0, 0, 0, 0, 0), HEADER.pack(1, 0, 2, 0, 0, 0) + b"\x00\x00\x01\x00\x01" * 2):
        started = time.process_time()
        for _ in range(20):
            reply = server.handle(wire, PEER, 0.0)
        cost = (time.process_time() - started) / 20
        assert isinstance(reply, bytes) and len(reply) == 12 and reply[3] & 0xF == dns.rcode.FORMERR
        assert cost < 0.002, f"{cost * 1000:.2f} ms for a {len(wire)}-byte message"
    assert server.stats["formerr"] == 6 * 20


def test_other_opcodes_get_notimp_and_responses_silence() -> None:
    server = zone_server()
    notify = bytearray(dns.message.make_query("example.test", "SOA").to_wire())
    notify[2] = (notify[2] & 0x87) | (4 << 3)
    reply = server.handle(bytes(notify), PEER, 0.0)
    assert isinstance(reply, bytes) and reply[3] & 0xF == dns.rcode.NOTIMP and len(reply) == 12
    response = dns.message.make_response(dns.message.make_query("www.example.test", "A")).to_wire()
    assert server.handle(response, PEER, 0.0) is None


def big_answer_zone(tmp_path: Path) -> DnsResponder:
    path = tmp_path / "big.zone"
    strings = " ".join('"' + "x" * 200 + '"' for _ in range(5))
    path.write_text("$ORIGIN big.test.\n$TTL 60\n@ SOA ns hostmaster 1 60 60 60 60\n@ NS ns\nns A 192.0.2.1\n"
                    f"t TXT {strings}\n")
    return DnsResponder([load_zone(path)])


def test_rrl_keeps_a_flood_for_a_large_answer_below_three_times_its_bytes(tmp_path: Path) -> None:
    """One client asking 100 times a second for a ~1 KB answer, for five seconds, default limits."""
    server = big_answer_zone(tmp_path)
    query = dns.message.make_query("t.big.test", "TXT", use_edns=0, payload=1232).to_wire()
    unlimited = DnsResponder(server.zones, rate_limit=0).handle(query, PEER, 0.0)
    assert isinstance(unlimited, bytes) and len(unlimited) > 20 * len(query)  # what an attacker aims at
    sent = received = 0
    for i in range(500):
        reply = server.handle(query, PEER, i / 100)
        sent += len(query)
        received += len(reply) if isinstance(reply, bytes) else 0
    assert received / sent <= 3, received / sent
    assert server.stats["slipped"] > 0 and server.stats["rate_limited"] > 0


def test_rrl_never_limits_a_client_asking_ten_times_a_second(tmp_path: Path) -> None:
    server = big_answer_zone(tmp_path)
    query = dns.message.make_query("t.big.test", "TXT", use_edns=0, payload=1232).to_wire()
    jitter = [0.0, 0.04, -0.03, 0.02, -0.04, 0.01]
    replies = [server.handle(query, PEER, i / 10 + jitter[i % len(jitter)]) for i in range(600)]
    assert all(isinstance(r, bytes) and len(r) > 1000 for r in replies)
    assert server.stats["rate_limited"] == server.stats["slipped"] == 0


def test_a_slipped_answer_is_truncated_and_no_larger_than_the_query(tmp_path: Path) -> None:
    server = big_answer_zone(tmp_path)
    query = dns.message.make_query("t.big.test", "TXT", use_edns=0, payload=1232)
    wire = query.to_wire()
    slips = [r for r in (server.handle(wire, PEER, i / 1000) for i in range(40)) if isinstance(r, bytes)
             and len(r) <= len(wire)]
    assert slips
    message = dns.message.from_wire(slips[0])
    assert message.flags & dns.flags.TC and message.id == query.id and message.question == query.question
    assert not message.answer


@given(st.binary(max_size=1400))
def test_the_screen_and_the_responder_never_raise(data: bytes) -> None:
    screen(data)
    zone_server(rate_limit=0).handle(data, PEER, 0.0)


LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)


@given(st.lists(LABEL, min_size=1, max_size=5), st.sampled_from(["A", "AAAA", "TXT", "MX", "SOA", "ANY", "NS"]),
       st.booleans())
def test_real_queries_pass_the_screen_and_are_answered_within_the_limit(labels: list[str], kind: str,
                                                                        edns: bool) -> None:
    name = ".".join([*labels, "example", "test"])
    wire = dns.message.make_query(name, kind, use_edns=0 if edns else None).to_wire()
    assert screen(wire) is None
    reply = zone_server(rate_limit=0).handle(wire, PEER, 0.0)
    assert isinstance(reply, bytes) and len(reply) <= (1232 if edns else 512)
    assert dns.message.from_wire(reply).id == dns.message.from_wire(wire).id
