"""How --out records a datagram in each format."""

from __future__ import annotations

import io
import json
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpkit.addr import Endpoint
from udpkit.errors import UsageError
from udpkit.listen.sinks import Sink, decimal_time, format_record

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


# -- a batch at a time: the same bytes as one record at a time --------------------------------------

# (sender, the record's own destination or None, the socket's bound address): what one socket sees
_CASES = [
    (("127.0.0.1", 40000), None, "127.0.0.1"), (("127.0.0.1", 40000), "127.0.0.2", "0.0.0.0"),
    (("::1", 5353, 0, 0), None, "::1"), (("fe80::1%3", 546, 0, 3), "fe80::2%3", "::"),
    (("::ffff:192.0.2.7", 123, 0, 0), "::ffff:192.0.2.1", "::"),
]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["pcap", "jsonl", "text", "hex", "raw"]),
       st.lists(st.tuples(st.binary(max_size=300), st.sampled_from(_CASES),
                          st.one_of(st.none(), st.floats(min_value=0, max_value=4e9))), max_size=30))
def test_a_batch_is_recorded_as_its_datagrams_one_by_one(
        fmt: str, datagrams: list[tuple[bytes, tuple[tuple[object, ...], str | None, str], float | None]]) -> None:
    from udpkit.net.rx import Datagram

    default_time = 1_795_000_000.125
    one, batch = Sink(io.BytesIO(), fmt), Sink(io.BytesIO(), fmt)
    by_socket: dict[str, list[Datagram]] = {}
    for data, (peer, local, bound), stamp in datagrams:
        by_socket.setdefault(bound, []).append(Datagram(data, peer, local, stamp, None, False, True))
    for bound, records in by_socket.items():
        for r in records:
            one.write_fields(default_time if r.timestamp is None else r.timestamp, r.peer[0], r.peer[1],
                             r.local_ip or bound, 9, r.data)
        batch.write_records(records, bound, 9, default_time)
    assert batch._buffer == one._buffer and batch._pending == one._pending


def test_a_json_line_s_time_has_the_nanoseconds_of_the_pcap_record() -> None:
    """Nine decimals, integers written as they are (not the float's repr, 450 ns a datagram)."""
    assert decimal_time(1796688200.7670364) == "1796688200.767036438"
    assert decimal_time(1.25) == "1.250000000" and decimal_time(float("nan")) == "0.000000000"


def test_a_recording_is_written_once_it_holds_enough_or_has_waited_its_hold() -> None:
    """flush_if_due, the listener's write after each wake-up: a few records wait (up to HOLD
    seconds) for others to share one write; WRITE_AT bytes go at once; an empty buffer is not due."""
    out = io.BytesIO()
    sink = Sink(out, "raw")
    assert sink.flush_if_due(100.0) is None
    sink.write_raw(b"first")
    sink.wrote(1)
    assert sink.flush_if_due(100.0) == pytest.approx(100.0 + Sink.HOLD)
    assert sink.flush_if_due(100.0 + Sink.HOLD / 2) == pytest.approx(100.0 + Sink.HOLD)  # still held
    assert out.getvalue() == b"" and sink.recorded == 0
    assert sink.flush_if_due(100.0 + Sink.HOLD) is None
    assert out.getvalue() == b"first" and sink.recorded == 1
    sink.write_raw(b"x" * Sink.WRITE_AT)
    sink.wrote(1)
    assert sink.flush_if_due(200.0) is None and len(out.getvalue()) == 5 + Sink.WRITE_AT  # enough: at once
