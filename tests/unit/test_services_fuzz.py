"""Random and mutated datagrams into every responder and every probe recogniser: no exception
escapes, and no responder ever answers with more bytes than it received (no amplification)."""

from __future__ import annotations

from pathlib import Path

import dns.message
from hypothesis import given, settings
from hypothesis import strategies as st

from udpkit.addr import Endpoint
from udpkit.services.classic import DaytimeProbe, EchoProbe, TimeProbe
from udpkit.services.dns import DnsProbe, DnsResponder, load_zone
from udpkit.services.ntp import NtpProbe, NtpResponder
from udpkit.services.registry import PROBES, probe_for

PEER = Endpoint("192.0.2.9", 40000, 2)
DNS = DnsResponder([load_zone(Path(__file__).parent.parent / "data" / "example.zone")])
NTP = NtpResponder(rate_limit=1000)
SEEDS = [NtpProbe().build(0.0), dns.message.make_query("www.example.test", "A").to_wire(),
         dns.message.make_query("big.example.test", "TXT", use_edns=0, payload=600).to_wire()]


def mutated() -> st.SearchStrategy[bytes]:
    def flip(seed: bytes, at: list[int], value: int) -> bytes:
        data = bytearray(seed)
        for i in at:
            data[i % len(data)] = value
        return bytes(data)

    return st.builds(flip, st.sampled_from(SEEDS), st.lists(st.integers(0, 600), max_size=4), st.integers(0, 255))


CATALOGUE = [probe_for(name, 1) for name in PROBES]  # type: ignore[misc]
for _probe in CATALOGUE:
    if _probe is not None and _probe.build(0.0):
        SEEDS.append(_probe.build(0.0))  # their requests, mutated, exercise the recognisers' paths
CATALOGUE = [p for p in CATALOGUE if p is not None]

datagrams = st.one_of(st.binary(max_size=700), mutated())


@settings(max_examples=2000, deadline=None)
@given(datagrams)
def test_the_ntp_responder_never_raises_and_never_amplifies(data: bytes) -> None:
    reply = NTP.handle(data, PEER, 1_795_810_393.0)
    assert reply is None or (isinstance(reply, bytes) and len(reply) <= len(data))


@settings(max_examples=2000, deadline=None)
@given(datagrams)
def test_the_dns_responder_never_raises_and_stays_within_the_clients_limit(data: bytes) -> None:
    reply = DNS.handle(data, PEER, 0.0)
    assert reply is None or (isinstance(reply, bytes) and len(reply) <= 1232)
    if reply is not None and len(data) >= 12:
        try:
            query = dns.message.from_wire(data)
        except Exception:  # noqa: BLE001
            return
        if query.edns < 0:
            assert len(reply) <= 512


@settings(max_examples=1500, deadline=None)
@given(datagrams)
def test_probe_recognisers_never_raise(data: bytes) -> None:
    for probe in (NtpProbe(), DnsProbe(), EchoProbe(), DaytimeProbe(), TimeProbe(), *CATALOGUE):
        probe.classify(data, 1_795_810_393.0)
