"""A recording formatted by the C batch as it reads (``Batch.record``, ``Sink.take_batch``) against
the Python formatters it replaces on the hot path (``Sink.write_records`` over the batch's records):
the same bytes, datagram for datagram, in raw, pcap and jsonl, on both families, on sockets bound
to one address and to a wildcard (each datagram's destination read), dual-stack (IPv4 peers as
mapped addresses, written as the IPv4 packets that crossed the wire), for empty, odd-length and
65,507-byte datagrams; each record at its own kernel receive time; a listener's ``--count`` cut
exact; and a listener that records the same files whichever way it reads."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from udpkit.addr import Endpoint
from udpkit.listen.sinks import Sink
from udpkit.net import BindOptions, bind_udp
from udpkit.net.mmsg import Batch, implementations, new_batch

pytestmark = pytest.mark.skipif("c" not in implementations(), reason="the C extension udpkit.net._mmsg is not built")

PAYLOADS = [b"", b"a", b"ab", b"\xff" * 3, bytes(range(64)), os.urandom(1001), bytes(10), os.urandom(65507)]
DEFAULT_TIME = 1765150000.123456789  # a float whose repr and nanoseconds show any rounding difference
# (socket's family, bound address, where the datagrams are sent, the sender's address, v6only)
CASES = {
    "v4 one address": (socket.AF_INET, "127.0.0.1", "127.0.0.1", "127.0.0.2", True),
    "v4 wildcard": (socket.AF_INET, "0.0.0.0", "127.0.0.5", "127.0.0.2", True),
    "v6 one address": (socket.AF_INET6, "::1", "::1", "::1", True),
    "v6 wildcard": (socket.AF_INET6, "::", "::1", "::1", True),
    "dual-stack, an IPv4 peer": (socket.AF_INET6, "::", "127.0.0.9", "127.0.0.3", False),
}


def c_batch() -> Batch:
    made = new_batch(64, 65536, True, kind="c")
    assert made is not None
    return made


def receiver(family: int, ip: str, v6only: bool, timestamps: bool = False) -> socket.socket:
    """Bound as the listener binds: a wildcard reads each datagram's destination."""
    wildcard = ip in ("0.0.0.0", "::")
    sock = bind_udp(Endpoint(ip, 0, family), BindOptions(v6only=v6only, pktinfo=wildcard, timestamps=timestamps))
    sock.setblocking(False)
    return sock


def send(tx: socket.socket, to: tuple[Any, ...], payloads: list[bytes]) -> None:
    for payload in payloads:
        tx.sendto(payload, to)
    time.sleep(0.05)


def both_ways(fmt: str, case: str, payloads: list[bytes]) -> tuple[bytes, bytes, tuple[int, int, list[Any]]]:
    """The same traffic sent twice to one socket from one sender: read once as records formatted in
    Python, once by record() — what each wrote, and record()'s counts."""
    family, ip, dest, sender, v6only = CASES[case]
    batch = c_batch()
    with receiver(family, ip, v6only) as rx, socket.socket(socket.AF_INET6 if ":" in sender else socket.AF_INET,
                                                         socket.SOCK_DGRAM) as tx:
        tx.bind((sender, 0))
        port = rx.getsockname()[1]
        send(tx, (dest, port), payloads)
        in_python = Sink(None, fmt)
        in_python.write_records(batch.receive(rx.fileno()), ip, port, DEFAULT_TIME)
        send(tx, (dest, port), payloads)
        in_c = Sink(None, fmt)
        counts = in_c.take_batch(batch.record, rx.fileno(), ip, port, 64, DEFAULT_TIME)  # type: ignore[attr-defined]
    return bytes(in_python._buffer), bytes(in_c._buffer), counts


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("fmt", ["raw", "pcap", "jsonl"])
def test_record_writes_the_bytes_the_python_formatters_write(fmt: str, case: str) -> None:
    payloads = [p for p in PAYLOADS if CASES[case][0] == socket.AF_INET6 or len(p) <= 65507]
    in_python, in_c, (n, nbytes, senders) = both_ways(fmt, case, payloads)
    assert in_c == in_python
    assert (n, nbytes) == (len(payloads), sum(map(len, payloads)))
    assert len(senders) == 1 and senders[0][0] == (f"::ffff:{CASES[case][3]}" if not CASES[case][4]
                                                   else CASES[case][3])


def pcap_records(blob: bytes) -> list[tuple[float, bytes]]:
    """(time, packet) of each record after the file header (24 bytes) when there is one."""
    out, at = [], 24 if blob[:4] == struct.pack("<I", 0xA1B23C4D) else 0
    while at < len(blob):
        seconds, nanos, size, _ = struct.unpack_from("<IIII", blob, at)
        out.append((seconds + nanos / 1e9, blob[at + 16 : at + 16 + size]))
        at += 16 + size
    return out


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_each_record_is_at_its_own_kernel_receive_time(family: int) -> None:
    """With SO_TIMESTAMPNS (as a listener that records asks), pcap and jsonl take each datagram's
    kernel time, between its send and the read — not the batch's default time."""
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    batch = c_batch()
    with receiver(family, host, True, timestamps=True) as rx, socket.socket(family, socket.SOCK_DGRAM) as tx:
        # The kernel turns receive stamping on a moment after the first socket asks (a deferred
        # static key); until then a datagram is stamped when it is read. One datagram first, read.
        send(tx, rx.getsockname()[:2], [b"warm-up"])
        assert len(batch.receive(rx.fileno())) == 1
        for fmt in ("pcap", "jsonl"):
            before = time.time()
            for n in range(5):
                tx.sendto(b"%d" % n, rx.getsockname()[:2])
                time.sleep(0.01)
            sink = Sink(None, fmt)
            n, _nbytes, _senders = sink.take_batch(batch.record, rx.fileno(), host,  # type: ignore[attr-defined]
                                                   rx.getsockname()[1], 64, 1.0)
            after = time.time()
            if fmt == "pcap":
                times = [when for when, _packet in pcap_records(bytes(sink._buffer))]
            else:
                times = [json.loads(line)["time"] for line in bytes(sink._buffer).splitlines()]
            assert n == len(times) == 5
            assert all(before - 0.001 <= t <= after + 0.001 for t in times), (before, times, after)
            assert times == sorted(times) and times[-1] - times[0] >= 0.03  # each its own, 10 ms apart


def test_only_the_first_most_are_recorded_and_counted() -> None:
    """A listener's --count: of a batch of 10, record(most=3) writes and counts 3; the other 7 were
    read (the queue is empty after), as the Python path reads and leaves them."""
    batch = c_batch()
    with receiver(socket.AF_INET, "127.0.0.1", True) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        send(tx, rx.getsockname(), [b"%d" % n for n in range(10)])
        sink = Sink(None, "raw")
        n, nbytes, senders = sink.take_batch(batch.record, rx.fileno(), "127.0.0.1",  # type: ignore[attr-defined]
                                             rx.getsockname()[1], 3, 0.0)
        assert (n, nbytes, bytes(sink._buffer), len(senders)) == (3, 3, b"012", 1)
        assert batch.receive(rx.fileno()) == []


def test_record_refuses_a_format_it_does_not_write_and_a_bound_address_that_is_not_one() -> None:
    batch = c_batch()
    with receiver(socket.AF_INET, "127.0.0.1", True) as rx:
        with pytest.raises(ValueError, match="raw, pcap or jsonl"):
            batch.record(rx.fileno(), "text", bytearray(), "127.0.0.1", 1, 64, 0.0)  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="not an IP address"):
            batch.record(rx.fileno(), "pcap", bytearray(), "localhost", 1, 64, 0.0)  # type: ignore[attr-defined]


def record_with_listener(monkeypatch: pytest.MonkeyPatch, kind: str, fmt: str, tmp_path: Path,
                         count: int | None = None) -> tuple[bytes, Any, list[str]]:
    from udpkit.listen import Listener

    monkeypatch.setenv("UDPKIT_MMSG", "0" if kind == "plain" else kind)
    path = tmp_path / f"{kind}.{fmt}"
    with path.open("wb") as out:
        listener = Listener([Endpoint("0.0.0.0", 0, socket.AF_INET), Endpoint("::", 0, socket.AF_INET6)],
                            respond="discard", sink=Sink(out, fmt), count=count,
                            bind=BindOptions(rcvbuf=8 << 20))  # (room for the burst: none dropped)
        bound = listener.open()
        how = listener.receive_paths()
        listener.start()
        try:
            for ep, source in ((bound[0], "127.0.0.7"), (bound[1], "::1")):
                with socket.socket(ep.family, socket.SOCK_DGRAM) as tx:
                    tx.bind((source, 41000 if kind == "plain" else 41001))
                    for n in range(300):
                        tx.sendto(bytes([n % 256]) * (n % 97), ("127.0.0.7" if ep.family == socket.AF_INET else "::1",
                                                                ep.port))
            deadline = time.monotonic() + 5
            want = 600 if count is None else count
            while listener.stats.datagrams_in < want and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            listener.stop()
            listener.join()
            listener.close()
    return path.read_bytes(), listener.stats, how


def without_times(fmt: str, blob: bytes) -> list[Any]:
    """The records without their times and ports (each run binds its own), in one order."""
    if fmt == "jsonl":
        lines = [json.loads(line) for line in blob.splitlines()]
        for line in lines:
            del line["time"]
            line["peer"]["port"] = line["local"]["port"] = 0
        return sorted(lines, key=json.dumps)
    packets = [packet for _when, packet in pcap_records(blob)]
    ip = [20 if p[0] >> 4 == 4 else 40 for p in packets]  # (the UDP header's ports and checksum left out)
    return sorted(p[:ip_len] + p[ip_len + 4 : ip_len + 6] + p[ip_len + 8 :] for p, ip_len in zip(packets, ip))


@pytest.mark.parametrize("fmt", ["raw", "pcap", "jsonl"])
def test_a_listener_records_the_same_file_whichever_way_it_reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                   fmt: str) -> None:
    """0.0.0.0 and [::] (each datagram's destination read): 600 datagrams recorded one recvmsg a
    call (Python's formatters) and by record() (C), the same records but for the times and the
    sender's port, and the same counts; --debug's path names record() in C."""
    plain, plain_stats, plain_how = record_with_listener(monkeypatch, "plain", fmt, tmp_path)
    in_c, c_stats, c_how = record_with_listener(monkeypatch, "c", fmt, tmp_path)
    assert all(f"recorded as {fmt} in the same call (record)" in how for how in c_how), c_how
    assert not any("(record)" in how for how in plain_how), plain_how
    assert (plain_stats.datagrams_in, plain_stats.bytes_in) == (c_stats.datagrams_in, c_stats.bytes_in)
    assert plain_stats.datagrams_in == 600
    if fmt == "raw":  # the two families' sockets are read in either order: the same bytes, not the same order
        assert sorted(plain) == sorted(in_c) and len(plain) == len(in_c)
    else:
        assert without_times(fmt, plain) == without_times(fmt, in_c)


def test_a_listener_with_a_count_records_exactly_that_many(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blob, stats, _how = record_with_listener(monkeypatch, "c", "jsonl", tmp_path, count=250)
    assert stats.datagrams_in == 250 and len(blob.splitlines()) == 250


def test_a_lone_datagram_reaches_the_file_within_the_hold_while_the_listener_runs(tmp_path: Path) -> None:
    """Records wait at most Sink.HOLD for others to share a write: with nothing more arriving, the
    listener wakes to write it; a reader of the file (tail -f, a pipe) sees it within that."""
    from udpkit.listen import Listener

    path = tmp_path / "one.jsonl"
    with path.open("wb") as out, Listener([Endpoint("127.0.0.1", 0, socket.AF_INET)], respond="discard",
                                          sink=Sink(out, "jsonl")) as listener:
        listener.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(b"alone", (listener.bound[0].ip, listener.bound[0].port))
        sent = time.monotonic()
        while path.stat().st_size == 0 and time.monotonic() - sent < 2:
            time.sleep(0.005)
        waited = time.monotonic() - sent
        assert path.stat().st_size > 0 and listener.stats.datagrams_in == 1
        assert waited < Sink.HOLD + 0.2, waited
    assert json.loads(path.read_text())["data_hex"] == b"alone".hex()
