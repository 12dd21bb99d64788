"""pcap encoding: headers a capture reader accepts, checksums that verify, real addresses."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpkit.listen import pcap


def verify_sum(data: bytes) -> int:
    return pcap._ones_complement_sum(data)


def test_file_header_is_nanosecond_pcap_with_raw_ip_link_type() -> None:
    magic, major, minor, _zone, _sig, snaplen, link = struct.unpack("<IHHiIII", pcap.file_header())
    assert (magic, major, minor, link) == (0xA1B23C4D, 2, 4, 101) and snaplen >= 65535


def test_ipv4_packet_fields_and_checksums() -> None:
    pkt = pcap.ip_udp_packet("10.0.0.1", 5000, "10.0.0.2", 53, b"hello")
    assert pkt[0] == 0x45 and struct.unpack("!H", pkt[2:4])[0] == 20 + 8 + 5 and pkt[9] == 17
    assert pkt[12:16] == bytes([10, 0, 0, 1]) and pkt[16:20] == bytes([10, 0, 0, 2])
    assert verify_sum(pkt[:20]) == 0xFFFF  # the IPv4 header checksum verifies
    udp = pkt[20:]
    assert struct.unpack("!HHH", udp[:6]) == (5000, 53, 13)
    pseudo = pkt[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    assert verify_sum(pseudo + udp) == 0xFFFF  # and so does the UDP checksum


def test_ipv4_mapped_peers_are_written_as_the_ipv4_packets_they_were() -> None:
    assert pcap.ip_udp_packet("::ffff:127.0.0.1", 1, "::ffff:127.0.0.1", 2, b"")[0] == 0x45


@given(st.binary(max_size=300), st.integers(0, 65535), st.integers(0, 65535))
def test_ipv6_udp_checksum_verifies(payload: bytes, sport: int, dport: int) -> None:
    pkt = pcap.ip_udp_packet("fe80::1", sport, "::1", dport, payload)
    assert pkt[0] >> 4 == 6 and pkt[6] == 17 and struct.unpack("!H", pkt[4:6])[0] == 8 + len(payload)
    udp = pkt[40:]
    pseudo = pkt[8:40] + struct.pack("!I3xB", len(udp), 17)
    assert verify_sum(pseudo + udp) == 0xFFFF


def test_record_carries_nanoseconds() -> None:
    rec = pcap.record(1700000000.123456789, b"xyz")
    sec, nsec, cap, orig = struct.unpack("<IIII", rec[:16])
    assert sec == 1700000000 and abs(nsec - 123456789) < 1000 and cap == orig == 3 and rec[16:] == b"xyz"


@given(st.sampled_from([("10.0.0.1", "10.0.0.2"), ("::1", "fe80::2"), ("::ffff:127.0.0.1", "::ffff:127.0.0.1")]),
       st.integers(0, 65535), st.integers(0, 65535), st.lists(st.binary(max_size=200), min_size=1, max_size=4))
def test_the_cached_builder_makes_exactly_the_reference_packets(
    addresses: tuple[str, str], sport: int, dport: int, payloads: list[bytes]
) -> None:
    builder = pcap.PacketBuilder(limit=2)
    for payload in payloads + payloads:  # again, from the cache (and across a cache reset)
        assert builder.packet(addresses[0], sport, addresses[1], dport, payload) == pcap.ip_udp_packet(
            addresses[0], sport, addresses[1], dport, payload)


@given(st.lists(st.tuples(st.sampled_from([("10.0.0.1", 1000), ("10.0.0.3", 1001), ("fe80::1%2", 546, 0, 2),
                                           ("::ffff:10.0.0.5", 123, 0, 0)]),
                          st.binary(max_size=70), st.one_of(st.none(), st.floats(0, 4e9))), min_size=1, max_size=12))
def test_records_in_a_batch_are_the_reference_records_across_cache_resets(
        datagrams: list[tuple[tuple[object, ...], bytes, float | None]]) -> None:
    # (a cache of two entries, cleared as it fills: each record is rebuilt the same; the checksum
    # is the payload's sum added modulo 0xFFFF, odd lengths padded, as RFC 768 and 1071 have it)
    from udpkit.net.rx import Datagram

    builder = pcap.PacketBuilder(limit=2)
    batch = [Datagram(data, peer, None if ":" not in str(peer[0]) else "::ffff:10.0.0.9" if "ffff" in str(peer[0])
                      else "fe80::9%2", stamp, None, False, True) for peer, data, stamp in datagrams]
    expected = b"".join(
        pcap.record(1.5e9 if d.timestamp is None else d.timestamp,
                    pcap.ip_udp_packet(str(d.peer[0]).partition("%")[0], int(d.peer[1]),  # type: ignore[arg-type]
                                       (d.local_ip or "10.0.0.2").partition("%")[0], 7, d.data))
        for d in batch)
    assert builder.records(batch, "10.0.0.2", 7, 1.5e9) == expected
    assert builder.records(batch, "10.0.0.2", 7, 1.5e9) == expected  # again, from the cache


def test_a_time_is_split_into_seconds_and_nanoseconds_rounded_half_to_even() -> None:
    assert pcap.split_time(1.25) == (1, 250_000_000)
    assert pcap.split_time(0.0) == (0, 0)
    assert pcap.split_time(1796688200.7670364) == (1796688200, 767036438)  # the float's own value, to the ns


@pytest.mark.parametrize("when", [-1.0, float("nan"), float("inf"), 2.0**32, 1e300])
def test_a_time_no_pcap_record_can_hold_is_zero_not_a_crash(when: float) -> None:
    assert pcap.split_time(when) == (0, 0)
    assert pcap.record(when, b"x")[:8] == bytes(8)


@given(st.floats(min_value=0, max_value=2**32 - 1, allow_nan=False))
def test_a_split_time_reads_back_within_half_a_nanosecond_and_the_float_s_own_error(when: float) -> None:
    seconds, nanos = pcap.split_time(when)
    assert 0 <= nanos <= 999_999_999
    assert abs(seconds + nanos / 1e9 - when) <= 0.5e-9 + 2 * when * 2**-52
