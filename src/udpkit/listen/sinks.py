"""Where received datagrams are recorded (``--out FILE|-`` with ``--format``): text, hex, jsonl, raw or pcap."""

from __future__ import annotations

import json
import socket
import time
from typing import BinaryIO

from udpkit.addr import Endpoint
from udpkit.errors import UsageError
from udpkit.listen import pcap

__all__ = ["FORMATS", "Sink", "format_record"]

FORMATS = ("text", "hex", "jsonl", "raw", "pcap")


def _when(timestamp: float) -> str:
    micros = int(round((timestamp % 1) * 1e6))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + f".{micros % 1_000_000:06d}Z"


def format_record(fmt: str, timestamp: float, peer: Endpoint, local: Endpoint, data: bytes) -> bytes:
    """One datagram in ``fmt`` (pure): what ``Sink.write`` appends to the file."""
    if fmt == "raw":
        return data
    if fmt == "pcap":
        return pcap.record(timestamp, pcap.ip_udp_packet(peer.ip, peer.port, local.ip, local.port, data))
    if fmt == "jsonl":
        doc = {"time": timestamp, "peer": {"address": peer.ip, "port": peer.port},
               "local": {"address": local.ip, "port": local.port}, "bytes": len(data), "data_hex": data.hex()}
        return (json.dumps(doc, separators=(",", ":")) + "\n").encode()
    head = f"{_when(timestamp)} {peer} -> {local} {len(data)} bytes"
    if fmt == "hex":
        lines = [head]
        for offset in range(0, len(data), 16):
            chunk = data[offset : offset + 16]
            text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
            lines.append(f"  {offset:04x}  {chunk.hex(' '):<47}  {text}")
        return ("\n".join(lines) + "\n").encode()
    escaped = data.decode("latin-1").encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'{head}: "{escaped}"\n'.encode()


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
            return
        family = socket.AF_INET6 if ":" in local_ip else socket.AF_INET
        self.stream.write(format_record(self.format, timestamp, Endpoint(peer_ip, peer_port, family),
                                        Endpoint(local_ip, local_port, family), data))

    def flush(self) -> None:
        self.stream.flush()
