"""NTP without sockets: the wire format, the era, the responder's rules and the probe's arithmetic."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpkit.addr import Endpoint
from udpkit.services.ntp import (
    NTP_EPOCH_OFFSET, NtpPacket, NtpProbe, NtpResponder, decode_packet, encode_packet, from_ntp, to_ntp,
)

PEER = Endpoint("192.0.2.9", 40000, 2)
NOW = 1_795_810_393.25


def request(version: int = 4, mode: int = 3, transmit: int = 0x1234_5678_9ABC_DEF0) -> bytes:
    return encode_packet(NtpPacket(0, version, mode, 0, 6, -20, 0.0, 0.0, b"\0" * 4, 0, 0, 0, transmit))


def test_timestamps_round_trip_and_the_unix_epoch_is_era_0() -> None:
    assert to_ntp(0.0) >> 32 == NTP_EPOCH_OFFSET
    assert from_ntp(to_ntp(NOW), NOW) == pytest.approx(NOW, abs=1e-9)


def test_the_2036_rollover_decodes_into_era_1() -> None:
    wrap = 2**32 - NTP_EPOCH_OFFSET  # 2036-02-07 06:28:16 UTC in UNIX seconds
    after = wrap + 100.5
    stamp = to_ntp(after)
    assert stamp >> 32 == 100  # the seconds field wrapped
    assert from_ntp(stamp, wrap - 50) == pytest.approx(after)  # a reference before the wrap still lands after it


@pytest.mark.parametrize("version", [3, 4])
def test_a_client_request_gets_a_server_reply_echoing_version_and_transmit(version: int) -> None:
    responder = NtpResponder()
    reply = responder.handle(request(version), PEER, NOW)
    assert isinstance(reply, bytes) and len(reply) == 48
    packet = decode_packet(reply)
    assert packet is not None
    assert (packet.mode, packet.version, packet.stratum, packet.refid) == (4, version, 10, b"LOCL")
    assert packet.origin == 0x1234_5678_9ABC_DEF0
    assert from_ntp(packet.receive, NOW) == pytest.approx(NOW, abs=1e-9)
    finished = decode_packet(responder.finish(reply, NOW + 0.001))
    assert finished is not None and from_ntp(finished.transmit, NOW) == pytest.approx(NOW + 0.001, abs=1e-9)


@pytest.mark.parametrize("mode", [0, 2, 4, 5, 6, 7])
def test_control_private_and_server_packets_are_never_answered(mode: int) -> None:
    monlist = request(mode=mode) + b"\0" * 400
    assert NtpResponder().handle(monlist, PEER, NOW) is None


def test_short_and_unknown_version_packets_are_dropped_and_counted() -> None:
    responder = NtpResponder()
    assert responder.handle(b"\x23" * 47, PEER, NOW) is None
    assert responder.handle(request(version=7), PEER, NOW) is None
    assert responder.stats["short"] == 1 and responder.stats["version"] == 1


def test_a_flood_gets_one_kiss_of_death_rate_a_second_then_silence() -> None:
    responder = NtpResponder(rate_limit=1.0)
    replies = [responder.handle(request(), PEER, NOW + i * 0.01) for i in range(10)]
    answered = [decode_packet(r) for r in replies if r is not None]
    assert [p.stratum for p in answered if p] == [10, 10, 0]  # burst of two, then one kiss
    kiss = answered[-1]
    assert kiss is not None and (kiss.refid, kiss.leap, kiss.origin) == (b"RATE", 3, 0x1234_5678_9ABC_DEF0)
    assert responder.stats["rate_limited"] == 7
    assert responder.handle(request(), Endpoint("192.0.2.10", 1, 2), NOW) is not None  # others unaffected


def test_the_probe_accepts_only_a_reply_to_its_own_request_and_measures_the_offset() -> None:
    probe = NtpProbe()
    sent = probe.build(NOW)
    server = NtpResponder()
    reply = server.finish(server.handle(sent, PEER, NOW + 0.5 + 0.010), NOW + 0.5 + 0.011)  # server 0.5 s ahead
    evidence = probe.classify(reply, NOW + 0.021)
    assert evidence is not None and evidence.protocol == "ntp"
    assert evidence.detail["offset_ms"] == pytest.approx(500.0, abs=0.01)
    assert evidence.detail["delay_ms"] == pytest.approx(20.0, abs=0.01)
    assert evidence.detail["stratum"] == 10 and evidence.detail["refid"] == "LOCL"
    forged = server.finish(server.handle(request(transmit=123), PEER, NOW), NOW)
    assert probe.classify(forged, NOW) is None


def test_the_probe_reads_a_kiss_code() -> None:
    probe = NtpProbe()
    sent = decode_packet(probe.build(NOW))
    assert sent is not None
    kiss = encode_packet(NtpPacket(3, 4, 4, 0, 0, 0, 0.0, 0.0, b"RATE", 0, sent.transmit, 0, 0))
    evidence = probe.classify(kiss, NOW)
    assert evidence is not None and evidence.detail["kiss"] == "RATE"


def test_the_request_is_a_48_byte_sntp_v4_client_packet() -> None:
    first, stratum = struct.unpack_from("!BB", NtpProbe().build(NOW))
    assert (first >> 3 & 7, first & 7, stratum) == (4, 3, 0)


def test_the_client_limiter_refills_at_its_rate() -> None:
    from udpkit.services.ratelimit import ClientLimiter

    limiter = ClientLimiter(2.0)
    assert [limiter.admit("a", 0.0) for _ in range(5)] == [True] * 4 + [False]  # a burst of twice the rate
    assert limiter.admit("a", 0.5) and not limiter.admit("a", 0.5)  # one token back in half a second
    assert limiter.notice("a", 0.5) and not limiter.notice("a", 1.0) and limiter.notice("a", 1.6)


# -- a batch at a time: the same replies as handle and finish, byte for byte ----------------------

def _record(data: bytes, port: int, stamp: float | None) -> tuple[object, ...]:
    """A received datagram as udpkit.net.rx.Datagram lays it out."""
    from udpkit.net.rx import Datagram

    return Datagram(data, ("192.0.2.1", port), None, stamp, None, False, True)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=0, max_size=60), st.floats(min_value=0, max_value=4e9),
                          st.booleans()), max_size=40),
       st.floats(min_value=1e9, max_value=3e9), st.floats(min_value=1e9, max_value=3e9))
def test_a_batch_is_answered_as_handle_and_finish_answer_it(requests: list[tuple[bytes, float, bool]], now: float,
                                                            sent: float) -> None:
    """Random datagrams (many of them requests: the first byte is often a client's), with and without
    a receive time: the batch's replies plus the trailer are handle's replies after finish."""
    one, batched = NtpResponder(), NtpResponder()
    records = []
    expected = []
    for n, (data, stamp, client) in enumerate(requests):
        if client and data:
            data = bytes([0x23]) + data[1:]
        record = _record(data, 40000 + n, stamp if n % 3 else None)
        records.append(record)
        reply = one.handle(data, Endpoint("192.0.2.1", 40000 + n, 2), now if record[3] is None else record[3])
        if reply is not None:
            assert isinstance(reply, bytes)
            expected.append((one.finish(reply, sent), record[1]))
    answered = batched.handle_batch(records, now)
    assert answered is not None
    trailer = batched.trailer(sent)
    assert [(payload + trailer, peer) for payload, peer, _source in answered] == expected
    assert all(source is None for _payload, _peer, source in answered)  # the records' destination
    assert batched.stats == one.stats


def test_with_a_rate_limit_the_batch_is_left_to_handle() -> None:
    assert NtpResponder(rate_limit=10).handle_batch([_record(b"\x23" + bytes(47), 40000, 1e9)], 1e9) is None
