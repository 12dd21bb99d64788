"""pcap files of received datagrams, readable by Wireshark and tshark: pure encoding, no I/O.

Each datagram becomes an IPv4 or IPv6 packet with a UDP header carrying the real addresses and
ports, in a ``LINKTYPE_RAW`` capture with nanosecond timestamps (magic ``0xa1b23c4d``).
References: the pcap format (draft-ietf-opsawg-pcap), RFC 791 (IPv4 header), RFC 8200 (IPv6
header), RFC 768 (UDP, its checksum over the pseudo-header; RFC 8200 §8.1 for IPv6's).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

__all__ = ["LINKTYPE_RAW", "PacketBuilder", "file_header", "ip_udp_packet", "record", "split_time", "udp_checksum"]

LINKTYPE_RAW = 101
MAGIC_NANOSECONDS = 0xA1B23C4D
SNAPLEN = 65535 + 48
# pcap global header: magic, version 2.4, thiszone, sigfigs, snaplen, linktype
FILE_HEADER = struct.Struct("<IHHiIII")
# record header: seconds, nanoseconds, captured length, original length
RECORD_HEADER = struct.Struct("<IIII")
IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")  # RFC 791 §3.1
IPV6_HEADER = struct.Struct("!IHBB16s16s")  # RFC 8200 §3
UDP_HEADER = struct.Struct("!HHHH")  # RFC 768


def file_header() -> bytes:
    return FILE_HEADER.pack(MAGIC_NANOSECONDS, 2, 4, 0, 0, SNAPLEN, LINKTYPE_RAW)


def _ones_complement_sum(data: bytes) -> int:
    """The 16-bit ones' complement sum of ``data`` (RFC 1071), in 0..0xFFFF.

    Strategy: since 2**16 = 1 (mod 0xFFFF), summing big-endian 16-bit words with end-around carry
    is the whole buffer read as one big integer, modulo 0xFFFF — one C-level conversion instead
    of a Python loop; a non-zero buffer whose sum is a multiple of 0xFFFF is "negative zero", 0xFFFF.
    """
    if len(data) % 2:
        data += b"\0"
    value = int.from_bytes(data, "big")
    total = value % 0xFFFF
    return 0xFFFF if total == 0 and value else total


def udp_checksum(src: bytes, dst: bytes, udp: bytes) -> int:
    """RFC 768's checksum over the IPv4 or IPv6 pseudo-header and the UDP header and data; 0 -> 0xFFFF."""
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_UDP, len(udp))
    else:
        pseudo = src + dst + struct.pack("!I3xB", len(udp), socket.IPPROTO_UDP)
    checksum = ~_ones_complement_sum(pseudo + udp) & 0xFFFF
    return checksum or 0xFFFF


def ip_udp_packet(src_ip: str, src_port: int, dst_ip: str, dst_port: int, payload: bytes) -> bytes:
    """The IP packet that carried ``payload`` from ``src_ip:src_port`` to ``dst_ip:dst_port``.

    IPv4-mapped IPv6 addresses (a dual-stack socket's view of an IPv4 peer) are written as the
    IPv4 packet that really crossed the wire.
    """
    src_ip, dst_ip = _unmap(src_ip), _unmap(dst_ip)
    v6 = ":" in src_ip or ":" in dst_ip
    family = socket.AF_INET6 if v6 else socket.AF_INET
    src, dst = socket.inet_pton(family, src_ip), socket.inet_pton(family, dst_ip)
    length = UDP_HEADER.size + len(payload)
    udp = UDP_HEADER.pack(src_port, dst_port, length, 0) + payload
    udp = udp[:6] + struct.pack("!H", udp_checksum(src, dst, udp)) + udp[8:]
    if v6:
        return IPV6_HEADER.pack(6 << 28, length, socket.IPPROTO_UDP, 64, src, dst) + udp
    header = IPV4_HEADER.pack(0x45, 0, 20 + length, 0, 0x4000, 64, socket.IPPROTO_UDP, 0, src, dst)
    checksum = ~_ones_complement_sum(header) & 0xFFFF
    return header[:10] + struct.pack("!H", checksum) + header[12:] + udp


def _unmap(ip: str) -> str:
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip


def split_time(when: float) -> tuple[int, int]:
    """A receive time in seconds as a pcap record holds it: whole seconds and nanoseconds,
    rounded half to even. A time the record's 32-bit seconds cannot hold (before 1970, after 2106,
    not a number) is 0: a bad clock does not stop a recording."""
    if not 0.0 <= when < 4294967296.0:
        return 0, 0
    seconds = int(when)
    return seconds, min(int(round((when - seconds) * 1e9)), 999_999_999)


def record(timestamp: float, packet: bytes) -> bytes:
    """One pcap record: the packet with its arrival time."""
    seconds, nanos = split_time(timestamp)
    return RECORD_HEADER.pack(seconds, nanos, len(packet), len(packet)) + packet


class PacketBuilder:
    """``ip_udp_packet`` for a stream of datagrams: the IP and UDP headers of a (source, destination,
    length) are built once and kept, and each packet only adds its payload to a cached checksum sum.

    Strategy: a recording listener sees the same few peers and lengths again and again; building
    and summing 28 or 48 header bytes per datagram is most of the pcap cost, the payload's part of
    the UDP checksum the rest. The cache is dropped when it grows past ``limit`` entries.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._cache: dict[tuple[str, int, str, int, int], tuple[bytes, bytes, int]] = {}
        # records(): (sender as received, destination, port, length) -> (IP + UDP header, record size, sum)
        self._by_sender: dict[tuple[Any, str, int, int], tuple[bytes, int, int]] = {}

    def packet(self, src_ip: str, src_port: int, dst_ip: str, dst_port: int, payload: bytes) -> bytes:
        key = (src_ip, src_port, dst_ip, dst_port, len(payload))
        entry = self._cache.get(key)
        if entry is None:
            if len(self._cache) >= self.limit:
                self._cache.clear()
            entry = self._cache[key] = self._headers(*key)
        ip_header, udp_prefix, partial = entry
        total = partial + _ones_complement_sum(payload)
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        checksum = (~total & 0xFFFF) or 0xFFFF
        return b"".join((ip_header, udp_prefix, checksum.to_bytes(2, "big"), payload))

    def records(self, datagrams: list[Any], dst_ip: str, dst_port: int, default_time: float) -> bytes:
        """pcap records for a batch of received datagrams (:class:`udpkit.net.rx.Datagram`: data,
        sender, destination, receive time...) sent to ``dst_ip:dst_port`` unless a record names its
        own destination: record headers, IP/UDP headers and checksums in one pass, one join.

        Strategy: the loop runs once a datagram, so it does the least it can there. The cache is
        keyed by the sender as received (no scope id stripped a datagram) and holds the two headers
        as one ``bytes``; the UDP checksum is the payload, read as one integer, added to the cached
        sum modulo 0xFFFF (RFC 1071's end-around carry), ``0xFFFF - total`` being never 0 (a zero
        checksum is sent as 0xFFFF anyway); an odd length is the integer shifted, not a copy."""
        cache, limit, headers, pack = self._by_sender, self.limit, self._headers, RECORD_HEADER.pack
        parts: list[bytes] = []
        append = parts.append
        for data, peer, local, stamp, *_rest in datagrams:
            key = (peer, local or dst_ip, dst_port, len(data))
            entry = cache.get(key)
            if entry is None:
                if len(cache) >= limit:
                    cache.clear()
                ip_header, udp_prefix, partial = headers(peer[0].partition("%")[0], peer[1],
                                                         (local or dst_ip).partition("%")[0], dst_port, len(data))
                entry = cache[key] = (ip_header + udp_prefix, len(ip_header) + 8 + len(data), partial)
            head, size, partial = entry
            value = int.from_bytes(data, "big")
            if len(data) & 1:
                value <<= 8
            seconds, nanos = split_time(default_time if stamp is None else stamp)
            append(pack(seconds, nanos, size, size))
            append(head)
            append((0xFFFF - (partial + value) % 0xFFFF).to_bytes(2, "big"))
            append(data)
        return b"".join(parts)

    @staticmethod
    def _headers(src_ip: str, src_port: int, dst_ip: str, dst_port: int, length: int) -> tuple[bytes, bytes, int]:
        """The IP header, the UDP header's first 6 bytes, and the checksum sum of everything but the payload."""
        template = ip_udp_packet(src_ip, src_port, dst_ip, dst_port, b"\0" * length)
        ip_length = 20 if template[0] >> 4 == 4 else 40
        ip_header, udp_prefix = template[:ip_length], template[ip_length : ip_length + 6]
        src, dst = (template[12:16], template[16:20]) if ip_length == 20 else (template[8:24], template[24:40])
        if ip_length == 20:
            pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_UDP, UDP_HEADER.size + length)
        else:
            pseudo = src + dst + struct.pack("!I3xB", UDP_HEADER.size + length, socket.IPPROTO_UDP)
        return ip_header, udp_prefix, _ones_complement_sum(pseudo + udp_prefix)

