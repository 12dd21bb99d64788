"""The DNS responder keeps the answers it gave and gives them again to the same query under another
ID, without dnspython: byte for byte what dnspython would write, the same counts, within its bytes."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpkit.addr import Endpoint
from udpkit.services.dns import ANSWER_CACHE, DnsResponder, load_zone, screen

ZONE = load_zone(Path(__file__).parent.parent / "data" / "example.zone")
PEER = Endpoint("192.0.2.9", 40000, 2)


def keeping(**kwargs: object) -> DnsResponder:
    return DnsResponder([ZONE], rate_limit=0, **kwargs)  # type: ignore[arg-type]


def with_id(wire: bytes, ident: int) -> bytes:
    return ident.to_bytes(2, "big") + wire[2:]


def queries() -> list[bytes]:
    """What clients send: case randomised (DNS 0x20), RD on and off, EDNS sizes below, at and above
    the limits, the DO bit, a cookie, padding, every answer kind the zone gives, and truncation."""
    made = []
    for name, kind in [("www.example.test", "A"), ("WwW.ExAmPlE.tEsT", "A"), ("alias.example.test", "AAAA"),
                       ("nope.example.test", "A"), ("example.org", "A"), ("www.example.test", "MX"),
                       ("example.test", "ANY"), ("big.example.test", "TXT"), ("_ntp._udp.example.test", "SRV")]:
        made.append(dns.message.make_query(name, kind))
        made.append(dns.message.make_query(name, kind, use_edns=0, payload=600))
        made.append(dns.message.make_query(name, kind, use_edns=0, payload=4096, want_dnssec=True))
        made.append(dns.message.make_query(name, kind, use_edns=0, payload=300,
                                           options=[dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"c" * 8)]))
        made.append(dns.message.make_query(name, kind, use_edns=0, payload=1232,
                                           options=[dns.edns.GenericOption(dns.edns.OptionType.PADDING, bytes(20))]))
        no_rd = dns.message.make_query(name, kind)
        no_rd.flags &= ~dns.flags.RD
        made.append(no_rd)
    return [query.to_wire() for query in made]


@pytest.mark.parametrize("query", queries())
def test_a_kept_answer_is_what_dnspython_writes_under_the_new_id(query: bytes) -> None:
    kept, fresh = keeping(), keeping(cache=0)
    first = kept.handle(with_id(query, 1), PEER, 0.0)
    again = kept.handle(with_id(query, 0xBEEF), PEER, 0.0)
    assert isinstance(first, bytes) and first[:2] == b"\x00\x01" and len(kept._kept) == 1
    assert first == fresh.handle(with_id(query, 1), PEER, 0.0)
    assert again == fresh.handle(with_id(query, 0xBEEF), PEER, 0.0)
    assert kept.stats == fresh.stats


def test_an_answer_is_kept_once_and_given_from_the_table_after() -> None:
    server = keeping()
    query = dns.message.make_query("www.example.test", "A").to_wire()
    server.handle(query, PEER, 0.0)
    size = server._kept_bytes
    for ident in range(100):
        server.handle(with_id(query, ident), PEER, 0.0)
    assert server._kept_bytes == size and len(server._kept) == 1 and server.stats["answered"] == 101


def test_a_query_dnspython_refuses_to_read_gets_formerr_each_time_and_is_not_kept() -> None:
    query = bytearray(dns.message.make_query("www.example.test", "A", use_edns=0,
                                             options=[dns.edns.GenericOption(8, b"\x00\x01\xff\x00")]).to_wire())
    server = keeping()  # an ECS option whose source prefix (255) is longer than an address
    assert screen(bytes(query)) is None  # dnspython's reading refuses it, not the screen
    for ident in range(3):
        reply = server.handle(with_id(bytes(query), ident), PEER, 0.0)
        assert isinstance(reply, bytes) and reply[3] & 0xF == 1 and reply[:2] == ident.to_bytes(2, "big")
    assert server.stats["formerr"] == 3 and not server._kept


def test_kept_answers_still_pass_the_rate_limit() -> None:
    server = DnsResponder([ZONE], rate_limit=5)
    query = dns.message.make_query("www.example.test", "A").to_wire()
    full = [r for r in (server.handle(with_id(query, i), PEER, 1000.0) for i in range(100))
            if isinstance(r, bytes) and len(r) > len(query)]
    assert 1 <= len(full) <= 10 and server.stats["rate_limited"] + server.stats["slipped"] >= 90


def test_a_flood_of_distinct_questions_keeps_the_table_within_its_bytes() -> None:
    """25,000 names nobody asks twice (a random-subdomain flood): their answers are kept only while
    there is room, so the table and its memory stay within the bound and the answer kept for a
    real name is not pushed out; a real name asked afterwards makes room for itself."""
    server, fresh = keeping(cache=1 << 20), keeping(cache=0)
    first = dns.message.make_query("www.example.test", "A").to_wire()
    server.handle(first, PEER, 0.0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(25_000):
            server.handle(dns.message.make_query(f"n{i}.example.test", "A").to_wire(), PEER, 0.0)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert server._kept_bytes <= 1 << 20 and grown <= 1.2 * (1 << 20), grown
    assert first[2:] in server._kept and server.handle(first, PEER, 0.0) == fresh.handle(first, PEER, 0.0)
    later = dns.message.make_query("alias.example.test", "AAAA").to_wire()
    assert server.handle(later, PEER, 0.0) == fresh.handle(later, PEER, 0.0) and later[2:] in server._kept
    assert server._kept_bytes <= 1 << 20 and server.stats["nxdomain"] == 25_000


def test_the_default_table_is_a_few_mebibytes() -> None:
    assert keeping().cache_size == ANSWER_CACHE <= 8 << 20


@settings(max_examples=1500, deadline=None)
@given(st.binary(min_size=2, max_size=700), st.integers(0, 0xFFFF))
def test_any_datagram_gets_the_same_answer_and_counts_kept_or_not(data: bytes, ident: int) -> None:
    kept, fresh = keeping(), keeping(cache=0)
    for wire in (data, with_id(data, ident), with_id(data, ident)):
        assert kept.handle(wire, PEER, 0.0) == fresh.handle(wire, PEER, 0.0)
    assert kept.stats == fresh.stats


def given_as_the_send_layer_gives(server: DnsResponder, wire: bytes) -> bytes | None:
    """What ``Batch.answer_kept`` does with a request: the table, then the responder's ``fresh``,
    then ``handle`` for what neither answers."""
    table, count, new = server.kept_answers  # type: ignore[misc]
    found = table.get(wire[2:]) if len(wire) >= 12 else None
    if found is None and len(wire) >= 12:
        found = new(wire)
    if found is None:
        return server.handle(wire, PEER, 0.0)
    count([found[1]])
    return wire[:2] + found[0]


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.binary(min_size=2, max_size=700), st.builds(
    lambda labels, origin, kind: dns.message.make_query(".".join([*labels, origin]), kind).to_wire(),
    st.lists(st.sampled_from(["x", "ab", "wild", "host", "ent", "*", "www", "_udp"]), max_size=3),
    st.sampled_from(["example.test", "wild.example.test", "cname.example.test", "example.org"]),
    st.sampled_from(["A", "AAAA", "TXT", "MX", "ANY"]))), st.integers(0, 0xFFFF))
def test_the_send_layers_way_gives_what_handle_gives(data: bytes, ident: int) -> None:
    """Table, ``fresh``, then ``handle``: the same answers and counts as ``handle`` alone."""
    ours, theirs = keeping(), keeping(cache=0)
    for wire in (data, with_id(data, ident), with_id(data, ident)):
        assert given_as_the_send_layer_gives(ours, wire) == theirs.handle(wire, PEER, 0.0)
    assert ours.stats == theirs.stats


def test_a_random_subdomain_flood_is_answered_from_a_template_at_a_fraction_of_the_cost() -> None:
    """Names the zone does not hold (NXDOMAIN) and names outside it (REFUSED): after the first of
    each shape, the answer is the template around the question — dnspython's bytes, ten times
    cheaper than dnspython (measured: ~80 µs against ~8-12 µs)."""
    import time

    server, fresh = keeping(), keeping(cache=0)
    names = [f"r{i:x}.example.test" for i in range(3000)]
    for name in names[:10]:
        query = dns.message.make_query(name, "A").to_wire()
        assert server.handle(query, PEER, 0.0) == fresh.handle(query, PEER, 0.0)
    queries = [dns.message.make_query(name, "A").to_wire() for name in names[10:]]
    started = time.perf_counter()
    for query in queries:
        server.handle(query, PEER, 0.0)
    templated = time.perf_counter() - started
    started = time.perf_counter()
    for query in queries[:300]:
        fresh.handle(query, PEER, 0.0)
    plain = (time.perf_counter() - started) * 10
    assert templated < plain / 3, (templated, plain)
    assert len(server._negatives) <= 8 and server.stats["nxdomain"] == 3000


@pytest.mark.parametrize("suffix, kind", [
    ("wild.example.test", "A"), ("wild.example.test", "TXT"), ("wild.example.test", "AAAA"),  # NODATA
    ("wild.example.test", "ANY"), ("cname.example.test", "A"), ("cname.example.test", "MX"),
    ("q.host.wild.example.test", "A"),  # NXDOMAIN below a name that exists under the wildcard's parent
])
def test_a_random_subdomain_flood_under_a_wildcard_is_answered_from_a_template(suffix: str, kind: str) -> None:
    """What the wildcard stands for, for names nobody asked before: dnspython's bytes around each
    question, byte for byte, from a handful of templates, at a fraction of dnspython's cost."""
    import time

    server, fresh = keeping(), keeping(cache=0)
    names = [f"r{i:x}.{suffix}" for i in range(1500)] + [f"a.r{i:x}.{suffix}" for i in range(1500)]
    queries = [dns.message.make_query(name, kind).to_wire() for name in names]
    started = time.perf_counter()
    answers = [server.handle(query, PEER, 0.0) for query in queries]
    templated = time.perf_counter() - started
    started = time.perf_counter()
    assert [fresh.handle(query, PEER, 0.0) for query in queries[:300]] == answers[:300]
    plain = (time.perf_counter() - started) * 10
    assert [fresh.handle(query, PEER, 0.0) for query in queries[300:]] == answers[300:]
    assert server.stats == fresh.stats
    assert templated < plain / 3, (templated, plain)
    assert len(server._negatives) <= 16


def test_a_zone_with_more_wildcards_than_are_templated_answers_their_names_right(tmp_path: Path) -> None:
    """Past the wildcards templated for, names a zone does not hold go to dnspython: a template
    made for a name no wildcard stands for would fit one that a wildcard does."""
    from udpkit.services import dns as module

    path = tmp_path / "many.zone"
    wildcards = "".join(f"*.w{n} A 192.0.2.{n % 250}\n" for n in range(module._TEMPLATED_WILDCARDS + 1))
    path.write_text("$ORIGIN many.test.\n$TTL 60\n@ SOA ns hostmaster 1 60 60 60 60\n@ NS ns\nns A 192.0.2.1\n"
                    + wildcards)
    zone = load_zone(path)
    kept, fresh = DnsResponder([zone], rate_limit=0), DnsResponder([zone], rate_limit=0, cache=0)
    for name in ("aa.x1.many.test", "ab.w1.many.test", "ac.x1.many.test", "ad.w2.many.test"):  # one length
        query = dns.message.make_query(name, "A").to_wire()
        assert kept.handle(query, PEER, 0.0) == fresh.handle(query, PEER, 0.0), name
    assert kept.stats == fresh.stats and kept.stats["wildcard"] == 2 and kept.stats["nxdomain"] == 2


@pytest.mark.parametrize("first, then", [("ab.w.z.test", "xx.w.z.test"), ("xx.w.z.test", "ab.w.z.test")])
def test_a_wildcard_answer_naming_a_name_below_its_parent_is_keyed_by_it(tmp_path: Path, first: str,
                                                                        then: str) -> None:
    """``*.w MX 10 mx.xx.w.z.test.``: for ``xx.w.z.test`` the exchange is compressed to a pointer at
    the question's name, for ``ab.w.z.test`` (the same length) at ``w.z.test`` — other bytes, so
    the suffix a question shares with such a name is part of the template's key."""
    path = tmp_path / "z.zone"
    path.write_text("$ORIGIN z.test.\n$TTL 60\n@ SOA ns hostmaster 1 60 60 60 60\n@ NS ns\nns A 192.0.2.1\n"
                    "*.w MX 10 mx.xx.w.z.test.\n")
    zone = load_zone(path)
    kept, fresh = DnsResponder([zone], rate_limit=0), DnsResponder([zone], rate_limit=0, cache=0)
    for name in (first, then, "cd.w.z.test"):  # the third: from the template of the first's kind
        query = dns.message.make_query(name, "MX").to_wire()
        assert kept.handle(query, PEER, 0.0) == fresh.handle(query, PEER, 0.0), name
    assert kept.stats == fresh.stats and kept.stats["wildcard"] == 3


LABELS = st.sampled_from(["hostmaster", "HostMaster", "ns1", "NS1", "www", "example", "test", "x", "a-b", "org",
                          "wild", "WILD", "ent", "leaf", "host", "*", "cname", "_udp"])
ORIGINS = st.sampled_from(["example.test", "EXAMPLE.test", "test", "org", "example.org", "ns1.example.test",
                           "hostmaster.example.test", "wild.example.test", "ent.wild.example.test",
                           "cname.example.test"])


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(st.lists(LABELS, max_size=4), ORIGINS,
                          st.sampled_from(["A", "AAAA", "TXT", "SOA", "ANY", "MX", "TYPE65000"]),
                          st.sampled_from([1, 3, 255]), st.sampled_from([None, 512, 1232, 4096]),
                          st.booleans()), min_size=1, max_size=12))
def test_negative_answers_from_templates_are_dnspythons_byte_for_byte(
        asked: list[tuple[list[str], str, str, int, int | None, bool]]) -> None:
    """Names built to share suffixes with the SOA's MNAME and RNAME (ns1., hostmaster.), in any
    case, in and out of the zone, of classes IN, CH and ANY, with and without EDNS and RD, asked
    in turn of one responder: each answer equals a fresh dnspython answer, and so do the counts."""
    kept, fresh = keeping(), keeping(cache=0)
    for labels, origin, kind, rdclass, payload, rd in asked:
        query = dns.message.make_query(".".join([*labels, origin]), kind, rdclass=rdclass,
                                       use_edns=None if payload is None else 0, payload=payload or 1232)
        if not rd:
            query.flags &= ~dns.flags.RD
        for ident in (1, 2):
            wire = with_id(query.to_wire(), ident)
            assert kept.handle(wire, PEER, 0.0) == fresh.handle(wire, PEER, 0.0), wire
    assert kept.stats == fresh.stats


@pytest.mark.parametrize("first, then", [
    ("abcdefghijkl.example.test", "a.hostmaster.example.test"),  # the same length before the origin
    ("abcdefghij.example.test", "HostMaster.example.test"),  # the RNAME itself, in another case
    ("abcdefg.example.test", "a.b.ns1.example.test"),  # under the MNAME (which exists: not this name)
])
def test_a_name_ending_like_the_soas_names_does_not_take_another_names_template(first: str, then: str) -> None:
    """dnspython compresses the SOA's MNAME and RNAME against the question: a question ending in
    ``hostmaster.example.test`` makes the RNAME one pointer, so its answer has other bytes than a
    name of the same length that does not — the template key tells them apart."""
    kept, fresh = keeping(), keeping(cache=0)
    for name in (first, then):
        query = dns.message.make_query(name, "A").to_wire()
        assert kept.handle(query, PEER, 0.0) == fresh.handle(query, PEER, 0.0)
    assert kept.stats["nxdomain"] == 2


@pytest.mark.parametrize("first, then", [
    ("zzzz.example.test", "_udp.example.test"),  # an empty non-terminal: NODATA
    ("xy.www.example.test", "x.wild.example.test"),  # a wildcard stands for it
    ("x.y.www.example.test", "x.cname.example.test"),  # a wildcard CNAME stands for it
    ("ab.c.www.example.test", "x.y.wild.example.test"),  # two labels below the wildcard's
])
def test_a_name_that_exists_or_a_wildcard_stands_for_does_not_take_a_nonexistent_names_template(
        first: str, then: str) -> None:
    """The two names are the same length in the same zone, so an NXDOMAIN template made for the
    first fits the second's key; but the second has an answer (RFC 8020, RFC 4592)."""
    kept, fresh = keeping(), keeping(cache=0)
    for name in (first, then):
        query = dns.message.make_query(name, "A").to_wire()
        assert kept.handle(query, PEER, 0.0) == fresh.handle(query, PEER, 0.0), name
    assert kept.stats["nxdomain"] == 1 and kept.stats["answered"] == 1


def test_a_label_holding_the_origins_bytes_is_not_under_the_origin() -> None:
    """``ab\\007example.test.`` is one label ``ab<7>example`` under ``test.``: its wire form ends
    with ``example.test.``'s, but not at a label's start — REFUSED, as dnspython says."""
    kept, fresh = keeping(), keeping(cache=0)  # first a name of the same length that is under it
    for name in ("ab.example.test", "ab\\007example.test", "x.ab\\007example.test"):
        query = dns.message.make_query(name, "A").to_wire()
        assert kept.handle(query, PEER, 0.0) == fresh.handle(query, PEER, 0.0), name
    assert kept.stats["refused"] == 2 and kept.stats["nxdomain"] == 1


def test_a_root_zone_answers_every_name_from_its_templates(tmp_path: Path) -> None:
    path = tmp_path / "root.zone"
    path.write_text("$ORIGIN .\n$TTL 60\n@ SOA a.root-servers.net. nstld.example. 1 60 60 60 60\n"
                    "@ NS a.root-servers.net.\na.root-servers.net. A 192.0.2.1\n")
    zone = load_zone(path)
    kept, fresh = DnsResponder([zone], rate_limit=0), DnsResponder([zone], rate_limit=0, cache=0)
    for name in ("nope.", "x.nope.", "b.root-servers.net.", "nstld.example.", "q.nstld.example.", "zz."):
        query = dns.message.make_query(name, "A").to_wire()
        assert kept.handle(query, PEER, 0.0) == fresh.handle(query, PEER, 0.0), name
    assert kept.stats == fresh.stats and kept.stats["nxdomain"] == 6
