"""How --out records a datagram in each format."""

from __future__ import annotations

import io
import json
import socket

import pytest

from udpkit.addr import Endpoint
from udpkit.errors import UsageError
from udpkit.listen.sinks import Sink, format_record

PEER = Endpoint("127.0.0.1", 40000, socket.AF_INET)
LOCAL = Endpoint("127.0.0.1", 9, socket.AF_INET)


def test_text_escapes_bytes_and_names_both_ends() -> None:
    line = format_record("text", 0.5, PEER, LOCAL, b'hi "there"\n\x00').decode()
    assert line == '1970-01-01T00:00:00.500000Z 127.0.0.1:40000 -> 127.0.0.1:9 12 bytes: "hi \\"there\\"\\n\\x00"\n'


def test_hex_dumps_sixteen_bytes_a_line() -> None:
    lines = format_record("hex", 0, PEER, LOCAL, bytes(range(20))).decode().splitlines()
    assert lines[1].startswith("  0000  00 01 02") and lines[2].startswith("  0010  10 11 12 13")


def test_jsonl_is_one_object_per_line() -> None:
    doc = json.loads(format_record("jsonl", 1.25, PEER, LOCAL, b"\xff"))
    assert doc == {"time": 1.25, "peer": {"address": "127.0.0.1", "port": 40000},
                   "local": {"address": "127.0.0.1", "port": 9}, "bytes": 1, "data_hex": "ff"}


def test_raw_is_the_payload_and_pcap_starts_with_a_file_header() -> None:
    assert format_record("raw", 0, PEER, LOCAL, b"abc") == b"abc"
    buf = io.BytesIO()
    sink = Sink(buf, "pcap")
    sink.write(0, PEER, LOCAL, b"abc")
    sink.flush()
    assert buf.getvalue()[:4] == bytes.fromhex("4d3cb2a1") and buf.getvalue().endswith(b"abc")
    with pytest.raises(UsageError):
        Sink(io.BytesIO(), "xml")
