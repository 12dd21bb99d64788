"""Where received datagrams are recorded (``--out FILE|-`` with ``--format``): text, hex, jsonl, raw or pcap."""

from __future__ import annotations

import time
from typing import BinaryIO

from udpkit.addr import Endpoint
from udpkit.errors import UsageError
from udpkit.listen import pcap

__all__ = ["FORMATS", "Sink", "format_fields", "format_record"]

FORMATS = ("text", "hex", "jsonl", "raw", "pcap")


_second: list[object] = [None, ""]  # the last whole second formatted, and its text


def _when(timestamp: float) -> str:
    """``1700000000.25`` -> ``"2023-11-14T22:13:20.250000Z"``; the date part is formatted once per second."""
    whole = int(timestamp)
    if _second[0] != whole:
        _second[0], _second[1] = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    micros = min(int(round((timestamp - whole) * 1e6)), 999_999)
    return f"{_second[1]}.{micros:06d}Z"


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def format_record(fmt: str, timestamp: float, peer: Endpoint, local: Endpoint, data: bytes) -> bytes:
    """One datagram in ``fmt`` (pure): what ``Sink.write`` appends to the file."""
    return format_fields(fmt, timestamp, peer.ip, peer.port, local.ip, local.port, data)


def format_fields(fmt: str, timestamp: float, peer_ip: str, peer_port: int, local_ip: str, local_port: int,
                  data: bytes) -> bytes:
    """``format_record`` on plain fields (the listener's recording loop builds no Endpoint)."""
    if fmt == "raw":
        return data
    if fmt == "pcap":
        return pcap.record(timestamp, pcap.ip_udp_packet(peer_ip, peer_port, local_ip, local_port, data))
    if fmt == "jsonl":
        # Addresses are inet_ntop text and ports numbers: nothing here needs JSON escaping.
        return (f'{{"time":{timestamp!r},"peer":{{"address":"{peer_ip}","port":{peer_port}}},'
                f'"local":{{"address":"{local_ip}","port":{local_port}}},"bytes":{len(data)},'
                f'"data_hex":"{data.hex()}"}}\n').encode()
    head = f"{_when(timestamp)} {_hostport(peer_ip, peer_port)} -> {_hostport(local_ip, local_port)} {len(data)} bytes"
    if fmt == "hex":
        lines = [head]
        for offset in range(0, len(data), 16):
            chunk = data[offset : offset + 16]
            text = chunk.decode("latin-1").translate(_PRINTABLE)
            lines.append(f"  {offset:04x}  {chunk.hex(' '):<47}  {text}")
        return ("\n".join(lines) + "\n").encode()
    escaped = data.decode("latin-1").encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'{head}: "{escaped}"\n'.encode()


_PRINTABLE = {b: (chr(b) if 32 <= b < 127 else ".") for b in range(256)}


class Sink:
    """Appends every datagram to a binary stream in one format; the caller owns opening and closing."""

    def __init__(self, stream: BinaryIO, fmt: str) -> None:
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")
        self.stream = stream
        self.format = fmt
        self._packets = pcap.PacketBuilder() if fmt == "pcap" else None
        if fmt == "pcap":
            stream.write(pcap.file_header())

    def write(self, timestamp: float, peer: Endpoint, local: Endpoint, data: bytes) -> None:
        if self.format == "pcap":
            self.write_fields(timestamp, peer.ip, peer.port, local.ip, local.port, data)
        else:
            self.stream.write(format_record(self.format, timestamp, peer, local, data))

    def write_fields(self, timestamp: float, peer_ip: str, peer_port: int, local_ip: str, local_port: int,
                     data: bytes) -> None:
        """``write`` without Endpoint objects, for the listener's recording loop."""
        if self._packets is not None:
            self.stream.write(pcap.record(timestamp, self._packets.packet(peer_ip, peer_port, local_ip, local_port, data)))
        else:
            self.stream.write(format_fields(self.format, timestamp, peer_ip, peer_port, local_ip, local_port, data))

    def flush(self) -> None:
        self.stream.flush()
