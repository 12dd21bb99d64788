"""DNS over dnspython, without sockets: an authoritative responder for zone files and a query probe.

The responder answers from its zones only, as NSD does: authoritative answers (AA), CNAME chains
followed inside the zone, wildcards (RFC 4592); NXDOMAIN, and NODATA (also for an empty
non-terminal, a name with names below it but no records: RFC 8020), with the SOA, its TTL at most
its MINIMUM (RFC 2308); ANY with one RRset (RFC 8482); REFUSED outside its zones; NOTIMP for other
opcodes; no recursion (RA clear); minimal answers (no NS or glue added to the other sections).
Garbage with a readable header gets FORMERR; garbage without one gets silence. Every answer fits
what the client allows — 512 bytes without EDNS, the client's EDNS size (at most 1232) with it —
else it is cut to the question with TC set.

Strategy against what the network sends: dnspython would parse anything, and a 64 KB message of
65,535 compressed questions costs it half a second. So nothing reaches it that a real query would
not be: :func:`screen` walks the header, the one question and the one OPT record at most by hand
(a few microseconds, bounded by :data:`MAX_QUERY` bytes and :data:`MAX_OPTIONS` options) and turns
anything else away with a header-only FORMERR or NOTIMP, never larger than what came in. And since
an answer can be 25 times its question, a response rate limit in the manner of BIND's RRL is on by
default (:data:`DEFAULT_RATE_LIMIT` answers a second per client; beyond it silence, and every second
time a truncated answer no larger than the query).

And since dnspython takes ~80 µs to read a query and write its answer, while the answer depends on
nothing but the query's bytes and the zones, the responder keeps the answers it gave: the next query
equal to one of them but for its ID gets the same answer under its own ID, without dnspython (see
:data:`ANSWER_CACHE`). A name the zones do not hold (REFUSED, NXDOMAIN, or what a wildcard stands
for: what a flood of random names asks) is answered from a template of dnspython's bytes around
the question, in ~3 µs.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.node
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

from udpkit.addr import Endpoint
from udpkit.errors import UsageError
from udpkit.files import read_text
from udpkit.services.base import BaseResponder, Evidence, Reply
from udpkit.services.outstanding import Outstanding
from udpkit.services.ratelimit import ResponseRateLimiter

__all__ = ["ANSWER_CACHE", "DEFAULT_RATE_LIMIT", "DnsProbe", "DnsResponder", "MAX_OPTIONS", "MAX_QUERY", "load_zone",
           "screen"]

_MAX_UDP = 1232  # the DNS flag day 2020 size: no fragmentation on common paths
_HEADER = struct.Struct("!HH")
_COUNTS = struct.Struct("!HHHH")
_OPT_FIXED = struct.Struct("!HHIH")  # type, class (the payload size), ttl, rdlength: RFC 6891 §6.1.2
_OPTION = struct.Struct("!HH")
#: The largest query looked at: one question of at most 255 bytes and an OPT record fit many times over.
MAX_QUERY = 1232
#: The most EDNS options a query may carry (cookie, padding, client subnet, ... — a handful in practice).
MAX_OPTIONS = 16
#: Answers a second per client address by default (``--rate-limit``; 0 turns it off).
DEFAULT_RATE_LIMIT = 20.0
#: Bytes of answers kept by default, by query (every byte but the ID): the questions a zone's
#: clients repeat. Each kept answer is charged its query, its answer and :data:`_KEPT_OVERHEAD` for
#: Python's objects — ~14,000 answers of the usual size, and at least 1,500 of the largest (1,232
#: bytes each way). A query not kept costs what it would without the table (the oldest answers
#: then make room), so a flood of distinct questions can cost CPU, never memory. ``cache=0``: off.
ANSWER_CACHE = 4 << 20
_KEPT_OVERHEAD = 200  # a dict slot, a tuple, two bytes objects' headers (tracemalloc: ~170 bytes)
_QUERY, _TYPE_OPT = 0, 41
_Kept = tuple[bytes, tuple[str, ...]]  # a kept answer but its ID, and the counters it charges


def screen(datagram: bytes) -> tuple[str, int] | None:
    """Is ``datagram`` a query worth parsing? ``None`` if so (its question ends at the offset dnspython
    will find); else ``(why, rcode)``: the counter to charge and the header-only answer to give
    (FORMERR 1 or NOTIMP 4; 0: stay silent). Pure and cheap: a walk of at most ``MAX_QUERY`` bytes.

    ``b"\x12\x34\x01\x00" + b"\x00\x01" + 6 * b"\x00" + b"\x00\x00\x06\x00\x01"`` (one question for
    ``. SOA``) -> ``None``; the same with qdcount 2 -> ``("formerr", 1)``.
    """
    size = len(datagram)
    if size < 12:
        return ("silent", 0)
    flags = datagram[2] << 8 | datagram[3]
    if flags & 0x8000:
        return ("silent", 0)  # a response: never answered (a loop with another server)
    if (flags >> 11) & 0xF != _QUERY:
        return ("notimp", 4)
    if size > MAX_QUERY:
        return ("formerr", 1)
    qdcount, ancount, nscount, arcount = _COUNTS.unpack_from(datagram, 4)
    if qdcount != 1 or ancount or nscount or arcount > 1:
        return ("formerr", 1)
    at = _skip_name(datagram, 12)
    if at < 0 or at + 4 > size:
        return ("formerr", 1)
    at += 4
    if arcount:
        if at + 1 + _OPT_FIXED.size > size or datagram[at] != 0:
            return ("formerr", 1)
        rtype, _payload, _ttl, rdlength = _OPT_FIXED.unpack_from(datagram, at + 1)
        at += 1 + _OPT_FIXED.size
        if rtype != _TYPE_OPT or at + rdlength != size:
            return ("formerr", 1)
        options = 0
        while at < size:
            if at + 4 > size or options == MAX_OPTIONS:
                return ("formerr", 1)
            at += 4 + _OPTION.unpack_from(datagram, at)[1]
            options += 1
        if at != size:
            return ("formerr", 1)
    elif at != size:
        return ("formerr", 1)
    return None


def _skip_name(data: bytes, at: int) -> int:
    """The offset after the uncompressed name at ``at`` (the question's; a pointer there can only
    point into the header), or -1 if it is not a well-formed name of at most 255 bytes."""
    start = at
    while at < len(data):
        length = data[at]
        if length == 0:
            return at + 1 if at + 1 - start <= 255 else -1
        if length > 63:
            return -1
        at += 1 + length
    return -1


def load_zone(path: str | Path, origin: str | None = None) -> dns.zone.Zone:
    """An RFC 1035 master file, or a hosts-style file (``ADDRESS NAME [ALIAS...]``) made into a zone
    under ``origin`` (default: the first name's parent... or ``local.``) with a generated SOA and NS.
    The file is read as a server must (:func:`udpkit.files.read_text`: a regular file, no symbolic
    link, at most 16 MiB, UTF-8); every problem is one ``UsageError``."""
    if origin is not None:
        try:
            dns.name.from_text(origin)
        except (dns.exception.DNSException, ValueError) as exc:
            raise UsageError(f"--origin {origin!r}: not a domain name ({exc})") from None
    text = read_text(str(path), "--zone")
    if _looks_like_hosts(text):
        try:
            return _hosts_zone(text, origin)
        except (dns.exception.DNSException, ValueError) as exc:
            raise UsageError(f"{path}: not a hosts file: {exc}") from None
    try:
        return dns.zone.from_text(text, origin=origin, relativize=False, check_origin=True)
    except (dns.exception.DNSException, ValueError) as exc:
        raise UsageError(f"{path}: not a zone file: {exc}") from None


def _looks_like_hosts(text: str) -> bool:
    import ipaddress

    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        try:
            ipaddress.ip_address(fields[0])
        except ValueError:
            return False
        return len(fields) >= 2
    return False


def _hosts_zone(text: str, origin: str | None) -> dns.zone.Zone:
    entries: list[tuple[str, str]] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        entries.extend((fields[0], name) for name in fields[1:])
    if not entries:
        raise UsageError("the hosts file names no host")
    if origin is None:
        first = dns.name.from_text(entries[0][1])
        origin = str(first.parent()) if len(first.labels) > 2 else "local."
    zone = dns.zone.Zone(dns.name.from_text(origin), relativize=False)
    apex = zone.origin
    assert apex is not None
    soa = f"ns.{apex} hostmaster.{apex} 1 3600 600 86400 60"
    zone.replace_rdataset(apex, dns.rrset.from_text(apex, 3600, "IN", "SOA", soa).to_rdataset())
    zone.replace_rdataset(apex, dns.rrset.from_text(apex, 3600, "IN", "NS", f"ns.{apex}").to_rdataset())
    for address, name in entries:
        owner = dns.name.from_text(name, dns.name.root if "." in name.rstrip(".") else apex)
        if not owner.is_subdomain(apex):
            continue
        kind = "AAAA" if ":" in address else "A"
        node = zone.find_node(owner, create=True)
        rdataset = node.find_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(kind), create=True)
        rdataset.update_ttl(300)
        rdataset.add(dns.rrset.from_text(owner, 300, "IN", kind, address)[0])
    return zone


class DnsResponder(BaseResponder):
    """An authoritative DNS server for ``zones``: ``--respond dns --zone FILE``.

    ``rate_limit``: answers a second per client address (:class:`ResponseRateLimiter`, BIND's RRL:
    beyond it silence, and every ``slip``-th time a truncated answer); ``0`` or ``None`` turns it off.
    ``stats`` counts the outcomes. ``cache``: the bytes of answers to keep (:data:`ANSWER_CACHE`).

    Why an answer may be kept: it is a function of the query's bytes and the zones only (zones are
    read once; no time, peer or randomness enters it), and the ID, copied, is the one byte pair
    that changes from query to query. So the key is every byte but the ID — flags, question, OPT
    record and options as sent — and an answer found there is, with the ID put back, byte for byte
    what dnspython would write again, with the same counts. The screen reads no ID either, so a
    query equal to a kept one has passed it; only the rate limit is asked again. Only answers that
    dnspython read the query for are kept (not FORMERR from a parse: a parse may look at bytes the
    screen does not).
    """

    name = "dns"
    uses_time = True

    def __init__(self, zones: Iterable[dns.zone.Zone], *, rate_limit: float | None = DEFAULT_RATE_LIMIT,
                 slip: int = 2, cache: int = ANSWER_CACHE) -> None:
        super().__init__()
        self.zones = sorted(zones, key=lambda z: -len(z.origin.labels) if z.origin else 0)
        for kind in ("A", "AAAA", "TXT", "CNAME", "MX", "SRV", "PTR", "NS", "SOA", "OPT", "ANY"):
            # dnspython imports each type's module on first use; do it now, before a server drops
            # its privileges and can no longer read the library's files
            dns.rdata.get_rdata_class(dns.rdataclass.IN, dns.rdatatype.from_text(kind))  # type: ignore[no-untyped-call]
        self.rate_limit = rate_limit or None
        self._limiter = ResponseRateLimiter(rate_limit, slip=slip) if rate_limit else None
        self.uses_time = self._limiter is not None  # the time is the rate limit's alone
        self.stats = {"answered": 0, "wildcard": 0, "nxdomain": 0, "refused": 0, "formerr": 0, "notimp": 0,
                      "silent": 0, "truncated": 0, "rate_limited": 0, "slipped": 0}
        self.cache_size = max(0, cache)
        self._kept: dict[bytes, _Kept] = {}
        self._kept_bytes = 0
        self._soas: dict[int, dns.rrset.RRset] = {}  # by id() of a zone in self.zones, which holds them
        self._negatives: dict[tuple[object, ...], tuple[bytes, bytes, tuple[str, ...]]] = {}
        # the names that exist in each zone (its nodes and the empty non-terminals between them and
        # the origin: see _existing), and whether it has wildcards, in the order of self.zones
        self._existing = [_existing(zone) for zone in self.zones]
        self._wild = [any(name.labels[:1] == (b"*",) for name in names) for names in self._existing]
        # each zone's origin, the names that exist, the names with a wildcard below them (each with
        # the names below it an answer may write: see _wildcards) and the SOA's names (see
        # _tail_names): lowercased wire forms, in the order of self.zones — the templates' lookups
        self._names = [(_lowered(zone.origin), frozenset(map(_lowered, existing)), _wildcards(zone, existing),
                        _tail_names(zone))
                       for zone, existing in zip(self.zones, self._existing)]

    def handle(self, datagram: bytes, peer: Endpoint, now: float) -> Reply:
        if type(datagram) is not bytes:
            datagram = bytes(datagram)  # a view into a receive buffer: the key must own its bytes
        key = datagram[2:]
        kept = self._kept.get(key)
        if kept is None:
            turned_away = screen(datagram)
            if turned_away is not None:
                why, rcode = turned_away
                self.stats[why] += 1
                if not rcode:
                    return None
                ident, flags = _HEADER.unpack_from(datagram)
                return _header_only(ident, flags, rcode)
        if self._limiter is not None:
            verdict = self._limiter.decide(peer.ip, now)
            if verdict != "answer":
                if verdict == "drop":
                    self.stats["rate_limited"] += 1
                    return None
                self.stats["slipped"] += 1
                return _slip(datagram)
        if kept is None:
            kept = (self._templated(datagram) if self.cache_size else None) or self._respond(datagram)
            if kept[1] != ("formerr",):
                # a name that does not exist, or one a wildcard stands for, is kept only while there
                # is room: a flood of new names cannot push out the answers kept for the zone's own
                self._keep(key, kept, make_room=kept[1] not in _NEGATIVE and "wildcard" not in kept[1])
        rest, outcomes = kept
        for outcome in outcomes:
            self.stats[outcome] += 1
        return datagram[:2] + rest

    @property
    def kept_answers(self) -> tuple[dict[bytes, _Kept], Callable[[list[tuple[str, ...]]], None],
                                    Callable[[bytes], _Kept | None]] | None:
        """What a send layer needs to give kept answers without a call per query (``Batch.answer_kept``):
        the table (every byte of a query but its ID -> (its answer but the ID, the counters it
        charges)), the function that counts a list of those counters, one per answer given, and
        the function that answers a query not in the table from a template (``_fresh``).
        ``None`` with a rate limit (decided client by client, in ``handle``) or no table. Queries
        neither answers come to ``handle``, which adds them."""
        if self._limiter is not None or not self.cache_size:
            return None
        return self._kept, self._count_kept, self._fresh

    def _fresh(self, datagram: bytes) -> _Kept | None:
        """``handle`` for a query not in the table, without a rate limit, when its answer is a
        template's (a name the zones do not hold: see ``_templated``): that answer, kept as
        ``handle`` keeps it; ``None`` for ``handle`` to answer (a query the screen turns away, a
        name the zones hold). The counters are the caller's (``_count_kept``). A flood of new
        names is answered this way in the send layer's call, without a record per query."""
        if screen(datagram) is not None:
            return None
        kept = self._templated(datagram)
        if kept is not None and kept[1] != ("formerr",):
            self._keep(datagram[2:], kept, make_room=kept[1] not in _NEGATIVE and "wildcard" not in kept[1])
        return kept

    def _count_kept(self, hits: list[tuple[str, ...]]) -> None:
        stats = self.stats
        for outcomes, times in Counter(hits).items():
            for outcome in outcomes:
                stats[outcome] += times

    def _keep(self, key: bytes, kept: _Kept, *, make_room: bool = True) -> None:
        """Keeps an answer, first letting go of the oldest (a dict keeps insertion order) until the
        table with it stays within ``cache_size`` bytes; without ``make_room``, only if it fits."""
        cost = len(key) + len(kept[0]) + _KEPT_OVERHEAD
        if cost > self.cache_size or (not make_room and self._kept_bytes + cost > self.cache_size):
            return
        table = self._kept
        while self._kept_bytes + cost > self.cache_size:
            old_key = next(iter(table))
            self._kept_bytes -= len(old_key) + len(table.pop(old_key)[0]) + _KEPT_OVERHEAD
        table[key] = kept
        self._kept_bytes += cost

    def _templated(self, datagram: bytes) -> _Kept | None:
        """The answer for a name that does not exist — REFUSED (outside the zones), NXDOMAIN, or
        what a wildcard stands for — in a few microseconds instead of dnspython's ~80, or ``None``
        for dnspython to answer. Why it may: such an answer is the header, the question copied, and
        what follows it — nothing (REFUSED), the zone's SOA, or the wildcard's records under the
        question's name — whose names dnspython compresses against the question's. So given the
        same query bytes but the question name, the same zone, the zone's origin (or the wildcard's
        closest encloser) at the same offset, and the same longest suffix shared with a name the
        answer may write (``_tail_names``, ``_wildcards``), dnspython writes the same bytes
        around the question: the first such answer is dnspython's, cut around its question into a
        template (at most :data:`_NEGATIVE_TEMPLATES`), and the next ones are that template around
        their own question. The flood of random names a "random subdomain" attack sends is
        answered this way, under a wildcard too."""
        starts: list[int] = []  # where each label of the question's name starts, from 0, the root's too
        at = 12
        for _ in range(128):  # (the screen let through a well-formed name of at most 255 bytes)
            size = datagram[at]
            starts.append(at - 12)
            if not size:
                break
            at += 1 + size
        end = at + 5  # the root label, type and class
        # the name in wire form, lowercased as dnspython compares names (a length byte is at most 63:
        # never a letter, so lowering the whole name changes labels only)
        name = datagram[12 : at + 1].lower()
        index = -1
        for k, names in enumerate(self._names):
            origin = names[0]
            cut = len(name) - len(origin)
            if origin and cut in starts and name.endswith(origin):
                index = k
                break
        if index < 0 or datagram[end - 2 : end] != b"\x00\x01":  # no zone of ours, or not class IN: REFUSED
            key: tuple[object, ...] = (-1, datagram[2:12], datagram[end - 4 :])
        else:
            origin, existing, wildcards, tails = self._names[index]
            if name in existing or wildcards is None:
                return None  # a name the zone holds, or an empty non-terminal: dnspython's (then kept)
            wild = b""
            if wildcards:
                # the closest encloser (the longest existing name above it: the origin at the latest),
                # whose wildcard, if it has one, stands for every name below it that does not exist
                for start in starts[1:]:
                    encloser = name[start:]
                    if encloser in existing:
                        below = wildcards.get(encloser)
                        if below is not None:
                            wild, tails = encloser, below
                        break
            shared = b""
            if tails:
                for start in starts:
                    if name[start:] in tails:
                        shared = name[start:]
                        break
            # (the question's end: for one zone and encloser, where the origin and the encloser are)
            key = (index, wild, end, shared, datagram[2:12], datagram[end - 4 :])
        template = self._negatives.get(key)
        if template is not None:
            head, tail, outcomes = template
            return head + datagram[12:end] + tail, outcomes
        rest, outcomes = self._respond(datagram)
        # (a wildcard's CNAME to a name that does not exist says neither: answered, not templated)
        if ("wildcard" in outcomes if key[1] else outcomes in _NEGATIVE) and rest[10 : end - 2] == datagram[12:end]:
            if len(self._negatives) >= _NEGATIVE_TEMPLATES:
                del self._negatives[next(iter(self._negatives))]
            self._negatives[key] = (rest[:10], rest[end - 2 :], outcomes)
        return rest, outcomes

    def _respond(self, datagram: bytes) -> _Kept:
        """The answer to a screened query but its ID (two bytes the caller puts back) and the
        counters it charges: a pure function of the query's bytes and the zones."""
        try:
            query = dns.message.from_wire(datagram)
        except Exception:  # noqa: BLE001 - dnspython raises many kinds for garbage; all mean FORMERR
            ident, flags = _HEADER.unpack_from(datagram)
            return _header_only(ident, flags, dns.rcode.FORMERR)[2:], ("formerr",)
        response = dns.message.make_response(query, recursion_available=False)
        response.flags &= ~dns.flags.RA
        limit = 512
        if query.edns >= 0:
            limit = max(512, min(query.payload, _MAX_UDP))
            response.use_edns(0, payload=_MAX_UDP)
        outcome = self._answer(query.question[0], response)
        try:
            return response.to_wire(max_size=limit)[2:], outcome
        except dns.exception.TooBig:
            response.answer.clear()
            response.authority.clear()
            response.additional.clear()
            response.flags |= dns.flags.TC
            return response.to_wire(max_size=limit)[2:], (*outcome, "truncated")

    def _answer(self, question: dns.rrset.RRset, response: dns.message.Message) -> tuple[str, ...]:
        """Fills ``response`` from the zones; the counters it charges."""
        qname, qtype = question.name, question.rdtype
        index = next((k for k, z in enumerate(self.zones) if z.origin is not None and qname.is_subdomain(z.origin)),
                     -1)
        if index < 0 or question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return ("refused",)
        zone = self.zones[index]
        response.flags |= dns.flags.AA
        name = qname
        answered: tuple[str, ...] = ("answered",)
        for _ in range(8):  # follow CNAMEs inside the zone, a bounded number of times
            node, exists = self._find(index, name)
            if node is None:
                self._soa(zone, response)
                if exists:  # an empty non-terminal: NODATA
                    return answered
                if name == qname:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                    return ("nxdomain",)
                return ()
            if not exists:
                answered = ("answered", "wildcard")
            rdataset = node.get_rdataset(dns.rdataclass.IN, qtype)
            if rdataset is not None or qtype == dns.rdatatype.ANY:
                # ANY gets one RRset, the name's first (RFC 8482, as NSD answers): not all of them,
                # which would make a small question a large answer
                found = [rdataset] if rdataset is not None else list(node.rdatasets)[:1]
                for data in found:
                    response.answer.append(dns.rrset.from_rdata_list(name, data.ttl, list(data)))
                return answered
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is None:
                self._soa(zone, response)  # NODATA
                return answered
            response.answer.append(dns.rrset.from_rdata_list(name, cname.ttl, list(cname)))
            name = cname[0].target
            if not name.is_subdomain(zone.origin):
                return answered
        return answered

    def _find(self, index: int, name: dns.name.Name) -> tuple[dns.node.Node | None, bool]:
        """The node that answers for ``name`` (under the origin of zone ``index``) and whether the name
        exists. A name exists when the zone holds it or a name below it (an empty non-terminal: no
        node, and NODATA rather than NXDOMAIN, which RFC 8020 lets a resolver take as a denial of
        every name below). A name that does not exist takes the node of the wildcard below its
        closest encloser, the longest name above it that exists, when there is one (RFC 4592)."""
        zone = self.zones[index]
        node = zone.get_node(name)
        existing = self._existing[index]
        if node is not None or name in existing:
            return node, True
        if not self._wild[index] or name == zone.origin:
            return None, False
        encloser = name.parent()
        while encloser not in existing and encloser != zone.origin:
            encloser = encloser.parent()  # (name is below the origin: the walk ends there)
        return zone.get_node(dns.name.Name((b"*", *encloser.labels))), False

    def _soa(self, zone: dns.zone.Zone, response: dns.message.Message) -> None:
        """The zone's SOA in the authority section of a negative answer, with the TTL a resolver may
        keep the denial for: the SOA's own TTL or its MINIMUM field, whichever is smaller (RFC 2308
        section 3). Made once per zone (an RRset's making hashes each record in wire form, half the
        work of an NXDOMAIN answer), then shared — a message only reads the RRsets it writes."""
        soa = self._soas.get(id(zone))
        if soa is None:
            assert zone.origin is not None
            found = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
            if found is None:
                return
            ttl = min([found.ttl, *(rdata.minimum for rdata in found)])
            soa = self._soas[id(zone)] = dns.rrset.from_rdata_list(zone.origin, ttl, list(found))
        response.authority.append(soa)


#: Templates of REFUSED, NXDOMAIN and wildcard answers kept (see ``DnsResponder._templated``): one
#: per shape of query (flags, type, OPT record) and place of the zone's origin (or wildcard) in the
#: question — a handful in practice, a few hundred under a flood of random names of every length;
#: each under 1.5 KB.
_NEGATIVE_TEMPLATES = 1024
_NEGATIVE = (("refused",), ("nxdomain",))  # the counters of the answers a template may give


def _existing(zone: dns.zone.Zone) -> frozenset[dns.name.Name]:
    """The names that exist in ``zone`` (RFC 4592 2.2.2), absolute: its names under the origin and
    every name between one of them and the origin, the empty non-terminals (``_udp.example.`` for
    ``_ntp._udp.example.``). Names compare and hash without regard to case."""
    origin = zone.origin
    found: set[dns.name.Name] = set()
    if origin is None:
        return frozenset()
    for name in zone.nodes:
        name = name.derelativize(origin)
        while name.is_subdomain(origin) and name not in found:
            found.add(name)
            if name == origin:
                break
            name = name.parent()
    return frozenset(found)


def _lowered(name: dns.name.Name | None) -> bytes:
    """A name in wire form, lowercased as dnspython compares names (``b""`` for none, which no zone
    is matched by: see ``_templated``)."""
    return b"" if name is None else b"".join(bytes((len(label),)) + label.lower() for label in name.labels)


def _tail_names(zone: dns.zone.Zone) -> frozenset[bytes]:
    """The names an NXDOMAIN answer from ``zone`` writes after its question (the SOA's owner, MNAME
    and RNAME) cut to each of their suffixes longer than the origin, lowercased, in wire form: a
    question name ending in one of these is compressed against differently, so it is part of a
    template's key."""
    origin = zone.origin
    soa = zone.get_rdataset(origin, dns.rdatatype.SOA) if origin is not None else None
    if origin is None or soa is None:
        return frozenset()
    found: set[bytes] = set()
    for rdata in soa:
        for name in (rdata.mname, rdata.rname):
            if name.is_subdomain(origin):
                for depth in range(len(name.labels) - len(origin.labels)):
                    found.add(_lowered(dns.name.Name(name.labels[depth:])))
    return frozenset(found)


#: Wildcards a zone's answers are templated for (see ``_wildcards``); a zone with more answers the
#: names it does not hold from dnspython, as it is
_TEMPLATED_WILDCARDS = 64


def _wildcards(zone: dns.zone.Zone, existing: frozenset[dns.name.Name]) -> dict[bytes, frozenset[bytes]] | None:
    """For each name E with a wildcard below it (``*.E``), lowercased in wire form: the names an
    answer from the wildcard may write below E (owners and names in records, found through the
    records' slots: an MX's exchange, a CNAME's target, an SOA's MNAME...), cut to each of their
    suffixes longer than E, lowercased, in wire form — a question name under E ending in one of
    these is compressed against differently, so it is part of a template's key (as
    ``_tail_names`` for an NXDOMAIN answer). One pass over the zone's names. Empty when the zone
    has no wildcard; ``None`` when it has more than :data:`_TEMPLATED_WILDCARDS` (no template for a
    name it does not hold, then: one made for a name no wildcard stands for could fit one that a
    wildcard does)."""
    parents = {name.parent() for name in existing if name.labels[:1] == (b"*",)}
    if len(parents) > _TEMPLATED_WILDCARDS:
        return None
    below: dict[dns.name.Name, set[bytes]] = {parent: set() for parent in parents}
    if parents:
        deepest = max(len(parent.labels) for parent in parents)
        shallowest = min(len(parent.labels) for parent in parents)
        for name in _written_names(zone):
            labels = name.labels
            # each wildcard parent above the name, and the suffixes between it and the name
            for depth in range(max(1, len(labels) - deepest), len(labels) - shallowest + 1):
                found = below.get(dns.name.Name(labels[depth:]))
                if found is not None:
                    found.update(_lowered(dns.name.Name(labels[d:])) for d in range(depth))
    return {_lowered(parent): frozenset(names) for parent, names in below.items()}


def _written_names(zone: dns.zone.Zone) -> Iterable[dns.name.Name]:
    """Every name an answer from ``zone`` may write: its owners and the names in its records,
    absolute."""
    origin = zone.origin
    if origin is None:
        return
    for owner, node in zone.nodes.items():
        yield owner.derelativize(origin)
        for rdataset in node.rdatasets:
            kind = type(rdataset[0]) if rdataset else object
            slots = [slot for cls in kind.__mro__ for slot in getattr(cls, "__slots__", ())]
            for rdata in rdataset:
                for slot in slots:
                    value = getattr(rdata, slot, None)
                    if isinstance(value, dns.name.Name):
                        yield value.derelativize(origin)


def _header_only(ident: int, flags: int, rcode: int) -> bytes:
    """A header-only answer to ``ident`` with ``rcode`` (opcode and RD copied, QR set): 12 bytes."""
    return struct.pack("!HHHHHH", ident, 0x8000 | (flags & 0x7900) | rcode, 0, 0, 0, 0)


def _slip(query: bytes) -> bytes:
    """RRL's "slip": the question back with TC set and nothing else — no larger than the query, and
    a real client retries over TCP (for a spoofed victim, a few bytes it did not ask for)."""
    end = _skip_name(query, 12) + 4
    flags = 0x8000 | (query[2] << 8 & 0x7900) | 0x0400 | 0x0200  # QR, opcode and RD, AA, TC
    return query[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + query[12:end]


class DnsProbe:
    """A query (default ``. SOA``, or ``query="NAME/TYPE"``) with a random ID; only a response with
    that ID and the same question is accepted. Reports rcode, flags and the answers. With
    ``unicast`` it is the mDNS probe (ID 0, the QU bit set, answers about the name accepted)."""

    def __init__(self, query: str = "./SOA", *, protocol: str = "dns", unicast: bool = False) -> None:
        self.name = self.protocol = protocol
        self.unicast = unicast  # mDNS: ask for a unicast answer (RFC 6762 §5.4, the QU bit)
        self.verifies = not unicast  # mDNS answers carry ID 0: only the question ties them to us
        name, _, kind = query.partition("/")
        try:
            self.qname = dns.name.from_text(name or ".")
            self.qtype = dns.rdatatype.from_text(kind or "A")
        except (dns.exception.DNSException, ValueError) as exc:
            raise UsageError(f"bad --query {query!r}: {exc}") from None
        self._ids: Outstanding[int, float] = Outstanding()

    def build(self, now: float) -> bytes:
        query = dns.message.make_query(self.qname, self.qtype, use_edns=None if self.unicast else 0,
                                       payload=_MAX_UDP,
                                       rdclass=dns.rdataclass.RdataClass.make(0x8001 if self.unicast else 1))
        query.id = 0 if self.unicast else int.from_bytes(os.urandom(2), "big")
        self._ids.remember(query.id, now)
        return query.to_wire()

    def classify(self, reply: bytes, now: float) -> Evidence | None:
        try:
            response = dns.message.from_wire(reply)
        except Exception:  # noqa: BLE001 - not DNS
            return None
        if not response.flags & dns.flags.QR or response.id not in self._ids:
            return None
        if self.unicast:  # mDNS answers may omit the question; an answer about our name will do
            if not any(rrset.name == self.qname for rrset in response.answer) and not (
                    response.question and response.question[0].name == self.qname):
                return None
        elif len(response.question) != 1 or response.question[0].name != self.qname \
                or response.question[0].rdtype != self.qtype:
            return None
        sent = self._ids.get(response.id)
        if sent is None:
            return None
        return Evidence(self.protocol, {
            "rcode": dns.rcode.to_text(response.rcode()),
            "flags": dns.flags.to_text(response.flags).lower(),
            "answers": [str(rr) for rrset in response.answer for rr in rrset.to_text().splitlines()],
            "rtt_ms": round((now - sent) * 1000, 3),
        })
