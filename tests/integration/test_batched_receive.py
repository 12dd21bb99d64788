"""The batched paths (``recvmmsg``/``sendmmsg``, through the C extension and through ctypes) against the
one-datagram-per-call path, on the same traffic: the same records datagram for datagram (bytes, sender,
destination, receive time within a bound, truncation), on both families, for empty, small and
65,507-byte datagrams; an exact drop count when the receive queue overflows; and a listener that
counts and answers the same whichever way it reads."""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest

from udpkit.addr import Endpoint
from udpkit.net import BindOptions, bind_udp, receive, socket_drops
from udpkit.net.mmsg import Batch, implementations, new_batch
from udpkit.net.rx import Datagram, count_and_forget
from udpkit.services.classic import Echo

KINDS = implementations()
pytestmark = pytest.mark.skipif(not KINDS, reason="recvmmsg is not available here (not Linux)")

SIZES = [0, 1, 48, 1472, 9000, 65507]
HOSTS = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


def batch_of(kind: str, count: int = 64, size: int = 65536, ancillary: bool = True) -> Batch:
    made = new_batch(count, size, ancillary, kind=kind)
    assert made is not None
    return made


def receiver(family: int) -> socket.socket:
    """A socket that asks for everything a record holds: time, destination, drops."""
    sock = bind_udp(Endpoint(HOSTS[family], 0, family), BindOptions(timestamps=True, pktinfo=True, rcvbuf=8 << 20))
    sock.setblocking(False)
    return sock


def wildcard_receiver(timestamps: bool = False) -> socket.socket:
    """A socket on 0.0.0.0 that reads each datagram's destination: replies must leave from it."""
    sock = bind_udp(Endpoint("0.0.0.0", 0, socket.AF_INET), BindOptions(pktinfo=True, timestamps=timestamps))
    sock.setblocking(False)
    return sock


def send_all(tx: socket.socket, to: tuple[Any, ...], sizes: list[int]) -> tuple[float, float]:
    before = time.time()
    for n, size in enumerate(sizes):
        tx.sendto(bytes([n % 251]) * size, to)
    return before, time.time()


def read_all(rx: socket.socket, batch: Batch | None, expected: int) -> list[Datagram]:
    out: list[Datagram] = []
    deadline = time.monotonic() + 5
    while len(out) < expected and time.monotonic() < deadline:
        out += receive(rx, 64, ancillary=True, batch=batch)
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_a_batch_gives_the_records_recvmsg_gives_datagram_for_datagram(kind: str, family: int) -> None:
    sizes = SIZES * 5
    with receiver(family) as rx, socket.socket(family, socket.SOCK_DGRAM) as tx:
        tx.bind((HOSTS[family], 0))
        to, sender = rx.getsockname()[:2], tx.getsockname()
        sent_plain = send_all(tx, to, sizes)
        plain = read_all(rx, None, len(sizes))
        sent_batched = send_all(tx, to, sizes)
        batched = read_all(rx, batch_of(kind), len(sizes))
    assert len(plain) == len(batched) == len(sizes)
    for sent, records in ((sent_plain, plain), (sent_batched, batched)):
        for record in records:
            assert record.timestamp is not None and sent[0] - 0.01 <= record.timestamp <= sent[1] + 0.01
    for one, other in zip(plain, batched):
        assert one._replace(timestamp=None) == other._replace(timestamp=None)
        assert one.peer == sender and one.local_ip == HOSTS[family] and one.unicast


@pytest.mark.parametrize("kind", KINDS)
def test_a_datagram_longer_than_the_room_is_cut_and_marked_as_recvmsg_does(kind: str) -> None:
    with receiver(socket.AF_INET) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(b"y" * 3000, rx.getsockname())
        tx.sendto(b"y" * 3000, rx.getsockname())
        time.sleep(0.05)
        data, _control, flags, _peer = rx.recvmsg(1024)
        [record] = batch_of(kind, 2, 1024).receive(rx.fileno())
    assert flags & socket.MSG_TRUNC and len(data) == 1024
    assert record.truncated and record.data == data


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_sends_many_datagrams_in_one_call_and_leaves_names_to_sendto(kind: str) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as tx:
        rx.bind(("::1", 0))
        rx.settimeout(2)
        batch = batch_of(kind, 8, 2048)
        to = rx.getsockname()
        messages = [(f"m{i}".encode(), to) for i in range(5)] + [(b"named", ("localhost", to[1]))]
        assert batch.send(tx.fileno(), socket.AF_INET6, messages) == 5
        assert batch.send(tx.fileno(), socket.AF_INET6, messages, 5) == 0  # a name: the caller's sendto
        assert [rx.recv(100) for _ in range(5)] == [f"m{i}".encode() for i in range(5)]


@pytest.mark.parametrize("kind", ["plain", *KINDS])
def test_drops_stay_exact_when_the_queue_overflows(kind: str) -> None:
    """received + dropped = sent, whichever path read them; the records' SO_RXQ_OVFL count agrees."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        rx.setsockopt(socket.SOL_SOCKET, 40, 1)  # SO_RXQ_OVFL
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        for _ in range(2000):
            tx.sendto(b"z" * 200, rx.getsockname())
        buffer: bytearray | Batch = bytearray(65536) if kind == "plain" else batch_of(kind, 64, 2048)
        got, _bytes = count_and_forget(rx, 100_000, buffer, lambda peer: None, max_bytes=1 << 30)
        drops = socket_drops(rx)
        assert drops is not None and drops > 0
        assert got + drops == 2000
        # the same again, reading records: each carries the kernel's count of drops before it was
        # queued — the first one of this round, every drop of the last round
        for _ in range(2000):
            tx.sendto(b"z" * 200, rx.getsockname())
        records = receive(rx, 100_000, batch=None if kind == "plain" else batch_of(kind, 64, 2048))
        total = socket_drops(rx)
        assert total is not None and len(records) + (total - drops) == 2000
        assert records[0].drops == drops


def exchange_with_listener(monkeypatch: pytest.MonkeyPatch, kind: str, respond: str, payload: bytes,
                           sockets: int) -> tuple[int, int, list[str]]:
    from udpkit.listen import Listener

    monkeypatch.setenv("UDPKIT_MMSG", "0" if kind == "plain" else kind)
    endpoints = [Endpoint(f"127.0.0.{n + 1}", 0, socket.AF_INET) for n in range(sockets)]
    listener = Listener(endpoints, respond=respond)
    bound = listener.open()
    how = listener.receive_paths()
    listener.start()
    replies = 0
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(0.5)
            for n in range(200):
                client.sendto(payload, (bound[n % sockets].ip, bound[n % sockets].port))
                if respond != "discard":
                    try:
                        reply = client.recv(2048)
                    except TimeoutError:
                        continue
                    replies += 1
                    if respond == "echo":
                        assert reply == payload
                    else:
                        assert len(reply) == 48 and reply[0] & 7 == 4  # a server reply
        time.sleep(0.2)  # the last datagrams of a discard run are read before the count is taken
    finally:
        listener.stop()
        listener.join()
        listener.close()
    return listener.stats.datagrams_in, replies, how


@pytest.mark.parametrize("sockets", [1, 2], ids=["one socket", "two sockets"])
@pytest.mark.parametrize("respond, payload", [("discard", b"d" * 100), ("echo", b"echo me"),
                                              ("ntp", b"\x23" + bytes(47))])
def test_a_listener_answers_the_same_whichever_way_it_reads(monkeypatch: pytest.MonkeyPatch, respond: str,
                                                            payload: bytes, sockets: int) -> None:
    """The discard, blocking (one socket), plain and timed paths: 200 requests, every reply where
    one is due, the same counts one datagram per call, through the extension and through ctypes."""
    results = {}
    for kind in ["plain", *KINDS]:
        received, replies, how = exchange_with_listener(monkeypatch, kind, respond, payload, sockets)
        assert ("recvmmsg" in " ".join(how)) == (kind != "plain"), how
        results[kind] = (received, replies)
    assert set(results.values()) == {(200, 0 if respond == "discard" else 200)}, results


def test_without_the_extension_or_when_told_the_listener_reads_one_datagram_per_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from udpkit.listen import Listener

    monkeypatch.setenv("UDPKIT_MMSG", "0")
    with Listener([Endpoint("127.0.0.1", 0, socket.AF_INET)], respond="echo") as listener:
        assert listener.receive_paths() == [f"udp {listener.bound[0]}: blocking, blocking recvfrom and sendto"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("respond", ["echo (reflect)", "echo", "dns"])
def test_a_listener_that_waits_says_how_long_it_polls_before_each_wait(
        monkeypatch: pytest.MonkeyPatch, kind: str, respond: str) -> None:
    """One socket answering, or one for each family: the receive path names the busy-poll window
    (50 µs by default, none when asked for 0) and, for two, that each has a thread of its own (an
    echo in C) or that one wait in C covers both; the C batch reports what the poll did; ctypes'
    waits do not poll, and it says nothing of one."""
    from udpkit.listen import Listener

    monkeypatch.setenv("UDPKIT_MMSG", kind)
    for window, said in ((None, ", polling 50 µs before each wait"), (0, ", no busy poll"),
                         (200, ", polling 200 µs before each wait")):
        more = {} if window is None else {"busy_poll_us": window}
        responder = {"echo (reflect)": Echo(rate_limit=None), "echo": "echo", "dns": dns_server()}[respond]
        with Listener([Endpoint("127.0.0.1", 0, socket.AF_INET)], respond=responder, **more) as listener:
            how = listener.receive_paths()[0]
            if kind == "c":
                assert how.startswith(f"udp {listener.bound[0]}: blocking, recvmmsg") and how.endswith(said), how
                assert listener.busy_poll() == (0, 0, 0)
            else:
                assert "poll" not in how and listener.busy_poll() is None, how
        with Listener([Endpoint("127.0.0.1", 0, socket.AF_INET), Endpoint("::1", 0, socket.AF_INET6)],
                      respond=responder, **more) as listener:  # a socket a family: a thread each, or one wait
            for how in listener.receive_paths():
                if kind == "c":
                    each = ", a thread for each socket" if respond == "echo (reflect)" else \
                        ", one wait for all 2 sockets (epoll in C)"
                    assert how.endswith(each + said), how
                    assert listener.busy_poll() == (0, 0, 0)
                else:
                    assert "poll" not in how and "one wait" not in how, how
    with Listener([Endpoint("0.0.0.0", 0, socket.AF_INET)], respond="ntp") as listener:  # epoll: receive times
        assert "poll" not in listener.receive_paths()[0]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rate_limit", [None, 100.0], ids=["no budget (reflect)", "a budget per peer"])
def test_one_wildcard_socket_waits_without_epoll_and_answers_from_each_destination(
        monkeypatch: pytest.MonkeyPatch, kind: str, rate_limit: float | None) -> None:
    """An echo on 0.0.0.0 alone is served by the blocking loop (with the C batch, polling): each
    request answered from the address it was sent to, a broadcast left unanswered, every datagram
    counted."""
    from tests.integration.conftest import eventually
    from udpkit.listen import Listener

    monkeypatch.setenv("UDPKIT_MMSG", kind)
    with Listener([Endpoint("0.0.0.0", 0, socket.AF_INET)], respond=Echo(rate_limit=rate_limit)) as listener:
        how = listener.receive_paths()[0]
        assert how.split(": ")[1].startswith("wildcard") and ("polling 50 µs" in how) == (kind == "c"), how
        listener.start()
        port = listener.bound[0].port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(2)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            client.sendto(b"to all", ("255.255.255.255", port))
            for n in range(40):
                target = f"127.0.0.{1 + n % 3}"
                client.sendto(b"%d" % n, (target, port))
                assert client.recvfrom(64) == (b"%d" % n, (target, port))
            assert eventually(lambda: listener.stats.datagrams_in == 41, timeout=5)
        listener.stop()
        listener.join()
    stats = listener.stats
    assert (stats.datagrams_in, stats.datagrams_out) == (41, 40) and stats.faults == {"not_unicast": 1}


def test_the_test_command_builds_the_c_extension() -> None:
    """Where the test command installed a compiler and Python's headers, the extension exists, so
    the suite exercises it and not only the fallbacks."""
    from tests.conftest import _unavailable

    if "c" not in KINDS:
        _unavailable("the C extension udpkit.net._mmsg was not built (no compiler or Python headers)")


@pytest.mark.parametrize("gso, shortest", [(True, 1), (True, 32), (False, 1)],
                         ids=["every run as UDP_SEGMENT", "runs of 32 or more as UDP_SEGMENT", "one by one"])
def test_runs_to_one_peer_arrive_as_the_same_datagrams_each_with_the_trailer(gso: bool, shortest: int) -> None:
    """Replies to one peer are grouped into segmented sends; the receiver still gets every datagram
    whole, in order, each followed by the trailer — runs cut by a longer, a shorter or an empty
    payload, by another peer, and by the 64-segment bound, and short runs sent one by one."""
    if "c" not in KINDS:
        pytest.skip("segmented sends are the C extension's")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for rx in (a, b):
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            rx.bind(("127.0.0.1", 0))
            rx.settimeout(0.3)
        batch = batch_of("c", 128, 2048, ancillary=False)
        batch.gso = gso  # type: ignore[attr-defined]
        batch.gso_min_run = shortest  # type: ignore[attr-defined]
        payloads = [b"%03d" % i for i in range(70)] + [b"", b"longer one", b"x", b"%03d" % 999] + [b"y" * 1300] * 3
        messages = [(p, a.getsockname()) for p in payloads] + [(b"to b", b.getsockname()), (b"a again", a.getsockname())]
        sent = 0
        for _ in range(10):
            if sent == len(messages):
                break
            sent += batch.send(tx.fileno(), socket.AF_INET, messages, sent, b"#")
        assert sent == len(messages)
        got: dict[str, list[bytes]] = {"a": [], "b": []}
        for name, rx in (("a", a), ("b", b)):
            try:
                while True:
                    got[name].append(rx.recv(4096))
            except TimeoutError:
                pass
    assert got["a"] == [p + b"#" for p in payloads] + [b"a again#"]
    assert got["b"] == [b"to b#"]


@pytest.mark.root
def test_only_a_run_of_32_or_more_to_one_peer_is_sent_as_one_segmented_train() -> None:
    """A segmented run leaves as one packet (a tap on lo sees it whole) and reaches its peer as one
    train, which wakes a client once for all of it: a few requests in flight then go back and
    forth in step, each side waiting for the other's wake-up (0.41x sockperf's round trips with 8
    in flight). So a run shorter than 32 goes datagram by datagram."""
    if "c" not in KINDS:
        pytest.skip("segmented sends are the C extension's")
    with socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800)) as tap, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tap.bind(("lo", 0))
        tap.settimeout(0.3)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        rx.bind(("127.0.0.1", 0))
        batch = batch_of("c", 128, 2048, ancillary=False)
        assert batch.gso_min_run == 32  # type: ignore[attr-defined]
        # runs cut by a longer datagram: 31, 32, 1 and 40 (then cut at 64 segments: 40 is whole)
        runs = [(b"a" * 10, 31), (b"b" * 11, 32), (b"c" * 12, 1), (b"d" * 13, 40)]
        messages = [(payload, rx.getsockname()) for payload, count in runs for _ in range(count)]
        assert batch.send(tx.fileno(), socket.AF_INET, messages) == len(messages)
        packets: list[int] = []  # the UDP payload bytes of each packet to rx (lo shows each once)
        try:
            while len(packets) < 200:
                packet = tap.recv(70000)
                header = (packet[0] & 0xF) * 4
                if packet[9] == 17 and packet[header + 2 : header + 4] == rx.getsockname()[1].to_bytes(2, "big"):
                    packets.append(int.from_bytes(packet[header + 4 : header + 6], "big") - 8)
        except TimeoutError:
            pass
    assert packets == [10] * 31 + [32 * 11, 12, 40 * 13]


@pytest.mark.parametrize("kind", KINDS)
def test_an_echo_batch_answers_as_handle_does(kind: str) -> None:
    from udpkit.services.classic import Echo

    with receiver(socket.AF_INET) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for size in SIZES:
            tx.sendto(b"e" * size, rx.getsockname())
        records = read_all(rx, batch_of(kind), len(SIZES))
    echo = Echo(rate_limit=None)
    # the records themselves: data, sender and destination are the reply's payload, peer and source
    assert echo.handle_batch(records, time.time()) == records
    assert Echo().handle_batch(records, time.time()) is None  # a budget per peer: one by one


@pytest.mark.parametrize("kind", KINDS)
def test_each_reply_leaves_from_the_source_it_names(kind: str) -> None:
    """(payload, peer, source) messages: runs split where the source changes; the receiver sees each
    datagram from the address named (the C batch sets IP_PKTINFO; ctypes leaves them to the caller)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(0.3)
        tx.bind(("0.0.0.0", 0))
        port = tx.getsockname()[1]
        sources = ["127.0.0.1", "127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.1", "127.0.0.1"]
        messages = [(b"m%d" % n, rx.getsockname(), source) for n, source in enumerate(sources)]
        batch = batch_of(kind, 16, 2048, ancillary=False)
        sent = batch.send(tx.fileno(), socket.AF_INET, messages, 0, b"!")
        if kind == "ctypes":
            assert sent == 0  # a source is the caller's to set (send_reply)
            return
        assert sent == len(messages)
        got = [rx.recvfrom(100) for _ in sources]
    assert got == [(b"m%d!" % n, (source, port)) for n, source in enumerate(sources)]


def test_each_reply_from_a_dual_stack_socket_leaves_from_the_ipv6_source_it_names() -> None:
    """IPV6_PKTINFO sources, alone and beside UDP_SEGMENT: the C batch passes a lone control message
    at its length without padding (36 bytes, which the kernel copies onto its stack instead of
    allocating), and a segmented run's source at its padded space before the UDP_SEGMENT message.
    IPv4-mapped sources on a dual-stack socket are the IPv6 sources loopback can tell apart."""
    if "c" not in KINDS:
        pytest.skip("the C batch is not built here")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        rx.settimeout(0.3)
        tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        tx.bind(("::", 0))
        port = tx.getsockname()[1]
        peer = ("::ffff:127.0.0.1", rx.getsockname()[1])
        # a run of 40 to one peer from one source: segmented (32 or more); then lone replies
        sources = ["127.0.0.2"] * 40 + ["127.0.0.3", "127.0.0.1", "127.0.0.3", "127.0.0.2"]
        # (one length for all: a run of segments is of one size)
        messages = [(b"m%02d" % n, peer, "::ffff:" + source) for n, source in enumerate(sources)]
        batch = batch_of("c", 64, 2048, ancillary=False)
        assert batch.send(tx.fileno(), socket.AF_INET6, messages, 0, b"!") == len(messages)
        got = [rx.recvfrom(100) for _ in sources]
    assert got == [(b"m%02d!" % n, (source, port)) for n, source in enumerate(sources)]


@pytest.mark.parametrize("kind", ["plain", *KINDS])
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
@pytest.mark.parametrize("respond", ["echo", "ntp"])
def test_a_wildcard_listener_answers_each_request_from_the_address_it_was_sent_to(
        monkeypatch: pytest.MonkeyPatch, kind: str, family: int, respond: str) -> None:
    from udpkit.listen import Listener
    from udpkit.services.classic import Echo
    from udpkit.services.ntp import NtpResponder

    monkeypatch.setenv("UDPKIT_MMSG", "0" if kind == "plain" else kind)
    responder = Echo(rate_limit=None) if respond == "echo" else NtpResponder()
    wildcard, targets = ("0.0.0.0", ["127.0.0.1", "127.0.0.2", "127.0.0.3"]) if family == socket.AF_INET else ("::", ["::1"])
    with Listener([Endpoint(wildcard, 0, family)], respond=responder) as listener:
        assert listener.receive_paths()[0].split(": ")[1].startswith("wildcard")
        listener.start()
        port = listener.bound[0].port
        request = b"\x23" + bytes(47) if respond == "ntp" else b"hello"
        with socket.socket(family, socket.SOCK_DGRAM) as client:
            client.settimeout(1)
            for n in range(30):
                target = targets[n % len(targets)]
                client.sendto(request, (target, port))
                reply, sender = client.recvfrom(100)
                assert sender[:2] == (target, port)
                assert reply == request if respond == "echo" else len(reply) == 48
        listener.stop()
        listener.join()
    assert listener.stats.datagrams_in == listener.stats.datagrams_out == 30


@pytest.mark.parametrize("kind", ["plain", *KINDS])
def test_a_dual_stack_listener_answers_ipv4_peers_from_the_mapped_address_they_asked(
        monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    from udpkit.listen import Listener
    from udpkit.services.classic import Echo

    monkeypatch.setenv("UDPKIT_MMSG", "0" if kind == "plain" else kind)
    with Listener([Endpoint("::", 0, socket.AF_INET6)], respond=Echo(rate_limit=None),
                  bind=BindOptions(v6only=False)) as listener:
        listener.start()
        port = listener.bound[0].port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(1)
            for target in ["127.0.0.2", "127.0.0.3", "127.0.0.1"] * 5:
                client.sendto(b"v4 over v6", (target, port))
                assert client.recvfrom(100) == (b"v4 over v6", (target, port))
        listener.stop()
        listener.join()


@pytest.mark.parametrize("kind", KINDS)
def test_senders_and_destinations_read_as_recvfrom_reads_them(kind: str) -> None:
    """Every width of an address byte (0, 9, 10, 99, 100, 255), in the sender and the destination."""
    addresses = ["127.0.0.1", "127.9.10.99", "127.100.255.0", "127.255.255.254", "127.1.0.100"]
    receivers = [bind_udp(Endpoint("0.0.0.0", 0, socket.AF_INET), BindOptions(pktinfo=True)) for _ in range(2)]
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in addresses]
    try:
        for n, tx in enumerate(senders):
            tx.bind((addresses[n], 0))
            for rx in receivers:
                tx.sendto(b"x", (addresses[(n + 1) % len(addresses)], rx.getsockname()[1]))
        for rx in receivers:
            rx.setblocking(False)
        plain = read_all(receivers[0], None, len(addresses))
        batched = read_all(receivers[1], batch_of(kind), len(addresses))
        expected = [(tx.getsockname(), addresses[(n + 1) % len(addresses)]) for n, tx in enumerate(senders)]
    finally:
        for sock in [*receivers, *senders]:
            sock.close()
    assert [(r.peer, r.local_ip) for r in plain] == [(r.peer, r.local_ip) for r in batched] == expected


def test_a_probers_reader_takes_batches_once_replies_come_and_reads_them_as_before() -> None:
    from udpkit.net.probing import ProbeSocket

    with ProbeSocket(socket.AF_INET) as probe, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        rounds = []
        for n in range(3):
            for k in range(40):
                peer.sendto(b"reply %d %d" % (n, k), ("127.0.0.1", probe.port))
            time.sleep(0.05)
            rounds.append((probe._batch is not None, probe.replies(limit=100)))
        sender = peer.getsockname()
    # the first round one recvfrom each, the next ones a batch per call ("c" where it was built)
    assert [batched for batched, _ in rounds] == [False, "c" in KINDS, "c" in KINDS]
    for n, (_batched, replies) in enumerate(rounds):
        assert replies == [(b"reply %d %d" % (n, k), *sender) for k in range(40)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_send_time_trailer_is_the_time_of_the_call_as_an_ntp_timestamp(kind: str) -> None:
    from udpkit.net.mmsg import NTP_TIME_TRAILER
    from udpkit.services.ntp import NTP_EPOCH_OFFSET

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(1)
        before = time.time()
        assert batch_of(kind, 4, 2048, ancillary=False).send(
            tx.fileno(), socket.AF_INET, [(b"x" * 40, rx.getsockname())] * 3, 0, NTP_TIME_TRAILER) == 3
        after = time.time()
        got = [rx.recv(100) for _ in range(3)]
    for datagram in got:
        seconds, fraction = struct.unpack("!II", datagram[40:])
        assert datagram[:40] == b"x" * 40
        assert before - 1e-6 <= seconds - NTP_EPOCH_OFFSET + fraction / 2**32 <= after + 1e-6


def test_the_c_batch_refuses_what_it_cannot_send_without_crashing() -> None:
    """Malformed messages stop a send before them (the caller's sendto reports them); an
    uninitialised batch raises."""
    if "c" not in KINDS:
        pytest.skip("the C extension's own checks")
    from udpkit.net._mmsg import Batch as CBatch  # type: ignore[attr-defined]

    batch = batch_of("c", 4, 2048, ancillary=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for junk in ([("x", ("127.0.0.1", 9))], [(b"x", ("127.0.0.1", 70000))], [(b"x", "127.0.0.1")],
                     [(b"x",)], ["x"], [(b"x", ("127.0.0.1", 9), 42)], [(b"x", ("no such host", 9))]):
            assert batch.send(tx.fileno(), socket.AF_INET, junk) == 0, junk  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            batch.send(tx.fileno(), socket.AF_INET, ((b"x", ("127.0.0.1", 9)),))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        CBatch.__new__(CBatch).receive(0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_reflect_echoes_each_datagram_unchanged_and_leaves_low_ports_to_the_caller(kind: str, family: int) -> None:
    """``Batch.reflect`` (echo without a call per datagram): every datagram from a port of at least
    ``lowest_port`` comes back byte for byte, in order, empty and 65,507-byte ones too; the others
    are handed back as the records ``receive`` makes, unanswered; the counts are exact."""
    rx = bind_udp(Endpoint(HOSTS[family], 0, family), BindOptions(pktinfo=False, rcvbuf=8 << 20))  # one address
    rx.setblocking(False)
    with rx, socket.socket(family, socket.SOCK_DGRAM) as high, socket.socket(family, socket.SOCK_DGRAM) as low:
        for client in (high, low):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            client.bind((HOSTS[family], 0))
            client.settimeout(0.3)
        if low.getsockname()[1] > high.getsockname()[1]:
            high, low = low, high  # "low": the one whose port is below lowest_port
        lowest = high.getsockname()[1]
        names = {"high": high.getsockname()[:2], "low": low.getsockname()[:2]}
        sizes = SIZES
        for size in sizes:
            high.sendto(b"h" * size, rx.getsockname())
        low.sendto(b"from a low port", rx.getsockname())
        batch = batch_of(kind)
        results = []
        deadline = time.monotonic() + 5
        while sum(r[0] + len(r[6]) for r in results) < len(sizes) + 1 and time.monotonic() < deadline:
            results.append(batch.reflect(rx.fileno(), socket.MSG_DONTWAIT, lowest))
        echoed = [high.recv(65536) for _ in sizes]
        with pytest.raises(TimeoutError):
            low.recv(100)
    assert echoed == [b"h" * size for size in sizes]
    assert sum(r[0] for r in results) == sum(r[3] for r in results) == len(sizes)
    assert sum(r[1] for r in results) == sum(r[4] for r in results) == sum(sizes)
    assert {peer[:2] for r in results for peer in r[2]} == {names["high"]}
    assert [f for r in results for f in r[5]] == [] and not any(r[7] for r in results)
    rest = [record for r in results for record in r[6]]
    assert [(record.data, record.peer[:2]) for record in rest] == [(b"from a low port", names["low"])]


def test_reflect_answers_from_the_address_each_datagram_was_sent_to() -> None:
    """On a wildcard socket (destinations read), each echo leaves from its request's destination."""
    if "c" not in KINDS:
        pytest.skip("the ctypes batch leaves sources to the caller (send_reply)")
    rx = wildcard_receiver()
    with rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(0.5)
        port = rx.getsockname()[1]
        targets = ["127.0.0.1", "127.0.0.2", "127.0.0.2", "127.0.0.3"]
        for n, target in enumerate(targets):
            client.sendto(b"to %d" % n, (target, port))
        time.sleep(0.05)
        result = batch_of("c").reflect(rx.fileno(), socket.MSG_DONTWAIT, 1024)
        got = [client.recvfrom(100) for _ in targets]
    assert result[0] == result[3] == len(targets)
    assert got == [(b"to %d" % n, (target, port)) for n, target in enumerate(targets)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_sends_on_a_connected_socket_without_an_address(kind: str) -> None:
    """Peer ``None``: the connected socket's own peer (a session's or the relay's sends)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(0.3)
        tx.connect(rx.getsockname())
        payloads = [b"%d" % n for n in range(20)] + [b"", b"z" * 3000]
        sent = batch_of(kind, 64, 4096, ancillary=False).send(tx.fileno(), socket.AF_INET,
                                                              [(p, None) for p in payloads])
        assert sent == len(payloads)
        assert [rx.recv(4096) for _ in payloads] == payloads


@pytest.mark.parametrize("kind", ["plain", *KINDS])
@pytest.mark.parametrize("rate_limit", [None, 100.0], ids=["no budget (reflect)", "a budget per peer"])
def test_an_echo_listener_answers_and_counts_the_same_whichever_way_it_reads(
        monkeypatch: pytest.MonkeyPatch, kind: str, rate_limit: float | None) -> None:
    """Bursts from two clients, every size, one socket (the blocking path) and two (the plain
    path): every datagram echoed, the statistics exact."""
    from udpkit.listen import Listener
    from udpkit.services.classic import Echo

    monkeypatch.setenv("UDPKIT_MMSG", "0" if kind == "plain" else kind)
    for endpoints in ([Endpoint("127.0.0.1", 0, socket.AF_INET)],
                      [Endpoint("127.0.0.1", 0, socket.AF_INET), Endpoint("::1", 0, socket.AF_INET6)]):
        with Listener(endpoints, respond=Echo(rate_limit=rate_limit), bind=BindOptions(rcvbuf=4 << 20)) as listener:
            listener.start()
            sent = 0
            for ep in listener.bound:
                with socket.socket(ep.family, socket.SOCK_DGRAM) as a, socket.socket(ep.family, socket.SOCK_DGRAM) as b:
                    for client in (a, b):
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                        client.settimeout(2)
                    sizes = [0, 1, 48, 1472, 9000] * 8
                    for size in sizes:
                        a.sendto(b"a" * size, (ep.ip, ep.port))
                        b.sendto(b"b" * size, (ep.ip, ep.port))
                    assert [a.recv(65536) for _ in sizes] == [b"a" * size for size in sizes]
                    assert [b.recv(65536) for _ in sizes] == [b"b" * size for size in sizes]
                    sent += 2 * len(sizes)
            listener.stop()
            listener.join()
        stats = listener.stats
        assert (stats.datagrams_in, stats.datagrams_out, stats.peers) == (sent, sent, 2 * len(endpoints))
        assert stats.bytes_in == stats.bytes_out and not stats.faults


@pytest.mark.parametrize("kind", ["c", "ctypes"])
def test_the_statistics_are_live_while_the_echo_loop_waits(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """The one-socket echo loop waits in C with no timeout between datagrams: what it echoed, and
    to whom, shows in ``stats`` at once, not when the next datagram (or stop) comes."""
    from tests.integration.conftest import eventually
    from udpkit.listen import Listener
    from udpkit.services.classic import Echo

    monkeypatch.setenv("UDPKIT_MMSG", kind)
    with Listener([Endpoint("127.0.0.1", 0, socket.AF_INET)], respond=Echo(rate_limit=None)) as listener:
        listener.start()
        ep = listener.bound[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
            for client in (a, b):
                client.settimeout(2)
            for i in range(5):  # one client waiting for each answer: the loop in C with one sender
                a.sendto(b"%d" % i, (ep.ip, ep.port))
                assert a.recv(64) == b"%d" % i
            assert eventually(lambda: listener.stats[:4] == (5, 5, 5, 5), timeout=2)
            assert listener.stats.peers == 1
            b.sendto(b"bb", (ep.ip, ep.port))
            assert b.recv(64) == b"bb"
            assert eventually(lambda: listener.stats[:5] == (6, 7, 6, 7, 2), timeout=2)
        listener.stop()
        listener.join()
        assert listener.stats[:5] == (6, 7, 6, 7, 2)


def test_a_relay_carries_a_burst_both_ways_in_order() -> None:
    """A session's datagrams go upstream, and the answers back, a ``sendmmsg`` per batch: a burst
    of numbered datagrams arrives whole and in order, every one counted."""
    from udpkit.listen import Listener
    from udpkit.services.classic import Echo

    v4 = Endpoint("127.0.0.1", 0, socket.AF_INET)
    with Listener([v4], respond=Echo(rate_limit=None), bind=BindOptions(rcvbuf=4 << 20)) as upstream:
        upstream.start()
        target = (socket.AF_INET, ("127.0.0.1", upstream.bound[0].port))
        with Listener([v4], relay=target, bind=BindOptions(rcvbuf=4 << 20)) as proxy:
            proxy.start()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                client.settimeout(2)
                client.sendto(b"hello", ("127.0.0.1", proxy.bound[0].port))
                assert client.recv(100) == b"hello"  # the session (and its upstream socket) exists
                payloads = [n.to_bytes(4, "big") * (1 + n % 300) for n in range(1000)]
                for n, payload in enumerate(payloads):
                    client.sendto(payload, ("127.0.0.1", proxy.bound[0].port))
                    if n % 100 == 99:
                        time.sleep(0.002)
                got = [client.recv(2048) for _ in payloads]
            assert got == payloads
            proxy.stop()
            proxy.join()
        stats = proxy.stats
    assert stats.datagrams_in == stats.datagrams_out == 1001 and stats.sessions_total == 1
    assert not stats.faults


def test_reflect_in_rounds_is_an_echo_servers_loop_that_hands_back_what_it_cannot_echo() -> None:
    """``rounds`` on a blocking socket (``MSG_WAITFORONE``): a client that waits for each answer is
    served round after round within one call (each lone request read with ``recvfrom``); the call
    ends when a datagram it must not echo comes (handed back), when the socket is shut for reading
    (``stop()``'s wake-up), and when nothing comes within ``SO_RCVTIMEO``."""
    import threading

    if "c" not in KINDS:
        pytest.skip("rounds are the C batch's")
    server = bind_udp(Endpoint("127.0.0.1", 0, socket.AF_INET), BindOptions(pktinfo=False))
    server.setblocking(True)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, 200_000))
    high, low = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for client in (high, low):
        client.bind(("127.0.0.1", 0))
        client.settimeout(2)
    if low.getsockname()[1] > high.getsockname()[1]:
        high, low = low, high
    answers: list[bytes] = []

    def ping_pong() -> None:
        for n in range(300):
            high.sendto(b"%d" % n, server.getsockname())
            answers.append(high.recv(100))
        low.sendto(b"low", server.getsockname())

    client_thread = threading.Thread(target=ping_pong)
    batch = batch_of("c", ancillary=True)
    calls = []
    with server, high, low:
        client_thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            calls.append(batch.reflect(server.fileno(), 0x10000, high.getsockname()[1], 64))  # MSG_WAITFORONE
            if calls[-1][6]:
                break
        client_thread.join()
        idle = batch.reflect(server.fileno(), 0x10000, 1024, 64)  # nothing comes: SO_RCVTIMEO ends it
        with pytest.raises(OSError):  # ENOTCONN on an unconnected socket, which it shuts all the same
            server.shutdown(socket.SHUT_RD)
        woken = batch.reflect(server.fileno(), 0x10000, 1024, 64)
    assert answers == [b"%d" % n for n in range(300)]
    assert sum(c[0] for c in calls) == sum(c[3] for c in calls) == 300
    assert max(c[0] for c in calls) > 16  # many round trips a call, not one
    assert [r.data for r in calls[-1][6]] == [b"low"] and not any(c[5] or c[7] for c in calls)
    assert idle[:1] == woken[:1] == (0,) and idle[7] == woken[7] == 0


def test_reflect_counts_only_its_recvmmsg_rounds() -> None:
    """A client that waits for each answer: a blocking call with ``rounds`` R echoes 64·R round
    trips (each recvmmsg round, then 63 read one a call), so an echo server goes back to Python once
    every 64·R of them, not every R (that return cost +7 µs on the round trip it fell on: its p99)."""
    import threading

    if "c" not in KINDS:
        pytest.skip("rounds are the C batch's")
    server = bind_udp(Endpoint("127.0.0.1", 0, socket.AF_INET), BindOptions(pktinfo=False))
    server.setblocking(True)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, 200_000))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(2)
    answers: list[bytes] = []

    def ping_pong() -> None:
        for n in range(200):
            client.sendto(b"%d" % n, server.getsockname())
            answers.append(client.recv(100))

    client_thread = threading.Thread(target=ping_pong)
    batch = batch_of("c", ancillary=True)
    with server, client:
        client_thread.start()
        calls = [batch.reflect(server.fileno(), 0x10000, 1024, 2) for _ in range(3)]  # MSG_WAITFORONE
        client_thread.join()
    assert answers == [b"%d" % n for n in range(200)]
    assert [c[0] for c in calls] == [128, 72, 0]  # the last two end at SO_RCVTIMEO: nothing more came


@contextlib.contextmanager
def two_families_waited_together(busy_poll_ns: int = 0, wait_ms: int = 2000) -> Iterator[
        tuple[Batch, socket.socket, socket.socket, int]]:
    """A C batch whose blocking receives wait on an epoll set of a v4 and a v6 socket (non-blocking,
    as the listener leaves them) and a pipe's read end; yields (batch, v4, v6, the pipe's write end)."""
    import os
    import select

    if "c" not in KINDS:
        pytest.skip("waiting on a set is the C batch's")
    v4 = bind_udp(Endpoint("127.0.0.1", 0, socket.AF_INET), BindOptions(pktinfo=False))
    v6 = bind_udp(Endpoint("::1", 0, socket.AF_INET6), BindOptions(pktinfo=False))
    wake_r, wake_w = os.pipe()
    batch = batch_of("c")
    with v4, v6, select.epoll() as waits:
        for fd in (v4.fileno(), v6.fileno(), wake_r):
            waits.register(fd, select.EPOLLIN)
        v4.setblocking(False)
        v6.setblocking(False)
        batch.wait_epoll, batch.wait_ms = waits.fileno(), wait_ms  # type: ignore[attr-defined]
        batch.busy_poll_ns = busy_poll_ns  # type: ignore[attr-defined]
        try:
            yield batch, v4, v6, wake_w
        finally:
            os.close(wake_r)
            os.close(wake_w)


def test_a_wait_on_a_set_of_sockets_answers_its_own_and_names_the_one_that_is_ready_instead() -> None:
    """``wait_epoll``: a blocking receive on one socket of the set returns with nothing, naming the
    other (``wait_ready``), when a datagram comes to the other first, and echoes its own as
    before; when both have one it answers its own and still names the other (so the caller can be
    fair); a byte on the pipe (``stop()``) or ``wait_ms`` ends an empty wait."""
    import os

    MSG_WAITFORONE = 0x10000
    with two_families_waited_together(wait_ms=300) as (batch, v4, v6, wake_w), \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c4, \
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c6:
        c4.settimeout(2)
        c6.settimeout(2)
        c6.sendto(b"six", v6.getsockname())
        time.sleep(0.05)
        started = time.monotonic()
        other = batch.reflect(v4.fileno(), MSG_WAITFORONE, 1024, 16)
        assert time.monotonic() - started < 0.2 and other[0] == 0 and other[7] == 0
        assert batch.wait_ready == v6.fileno()  # type: ignore[attr-defined]
        own = batch.reflect(v6.fileno(), MSG_WAITFORONE, 1024, 1)
        assert own[0] == 1 and c6.recv(64) == b"six"
        c4.sendto(b"four", v4.getsockname())
        c6.sendto(b"six again", v6.getsockname())
        time.sleep(0.05)
        both = batch.reflect(v4.fileno(), MSG_WAITFORONE, 1024, 1)
        assert both[0] == 1 and c4.recv(64) == b"four"
        assert batch.wait_ready == v6.fileno()  # type: ignore[attr-defined]
        assert batch.reflect(v6.fileno(), MSG_WAITFORONE, 1024, 1)[0] == 1 and c6.recv(64) == b"six again"
        started = time.monotonic()
        idle = batch.reflect(v4.fileno(), MSG_WAITFORONE, 1024, 16)  # nothing comes: wait_ms ends it
        waited = time.monotonic() - started
        assert idle[0] == 0 and idle[7] == 0 and 0.25 < waited < 1.5, waited
        assert batch.wait_ready == -1  # type: ignore[attr-defined]
        os.write(wake_w, b"x")
        started = time.monotonic()
        woken = batch.reflect(v6.fileno(), MSG_WAITFORONE, 1024, 16)
        assert woken[0] == 0 and time.monotonic() - started < 0.2
        assert batch.wait_ready not in (-1, v4.fileno(), v6.fileno())  # type: ignore[attr-defined]
        # the general read (Batch.receive) waits the same way
        c4.sendto(b"read me", v4.getsockname())
        assert [r.data for r in batch.receive(v6.fileno(), MSG_WAITFORONE)] == []
        assert [r.data for r in batch.receive(v4.fileno(), MSG_WAITFORONE)] == [b"read me"]


def test_a_wait_on_a_set_polls_first_and_catches_what_is_already_queued() -> None:
    """With a busy-poll window, the wait on the set polls (``epoll_wait`` with no timeout) before it
    sleeps: requests queued before each call are caught awake, one per wait."""
    MSG_WAITFORONE = 0x10000
    with two_families_waited_together(busy_poll_ns=1_000_000) as (batch, v4, v6, _wake), \
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c6:
        c6.settimeout(2)
        for n in range(20):
            c6.sendto(b"%d" % n, v6.getsockname())
            time.sleep(0.002)
            assert batch.reflect(v6.fileno(), MSG_WAITFORONE, 1024, 1)[0] == 1
            assert c6.recv(64) == b"%d" % n
        assert batch.spin_caught == 20  # type: ignore[attr-defined]


@pytest.mark.skipif("c" not in KINDS, reason="waiting on a set is the C batch's")
def test_a_flood_on_one_family_leaves_the_other_served(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listener with a socket a family (``udpkit listen PORT``) serves both, an echo in C on a
    thread a socket: while a v4 sender keeps the v4 socket's queue full (batches of 64 with
    ``sendmmsg``, for 1.5 s), a v6 client that waits for each answer is answered every time, and
    the v4 datagrams are echoed too."""
    import threading

    from udpkit.listen import Listener

    monkeypatch.setenv("UDPKIT_MMSG", "c")
    flooding = threading.Event()
    sent = [0]

    def flood(port: int) -> None:
        batch = batch_of("c", ancillary=False)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (its echoes mostly dropped: not read)
            messages = [(b"flood", ("127.0.0.1", port))] * 64
            end = time.monotonic() + 1.5
            flooding.set()
            while time.monotonic() < end and sent[0] < 5_000_000:
                try:
                    sent[0] += batch.send(tx.fileno(), socket.AF_INET, messages)
                except OSError:
                    pass

    with Listener([Endpoint("0.0.0.0", 0, socket.AF_INET), Endpoint("::", 0, socket.AF_INET6)],
                  respond=Echo(rate_limit=None)) as listener:
        assert all("a thread for each socket" in how for how in listener.receive_paths())
        listener.start()
        port = listener.bound[0].port
        flooder = threading.Thread(target=flood, args=(port,))
        flooder.start()
        answered = 0
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c6:
            c6.settimeout(1.0)
            assert flooding.wait(5)
            for n in range(100):
                c6.sendto(b"v6 %d" % n, ("::1", port))
                try:
                    answered += c6.recv(64) == b"v6 %d" % n
                except TimeoutError:
                    pass
        flooder.join(10)
        listener.stop()
        listener.join()
    stats = listener.stats
    assert answered == 100
    assert stats.datagrams_in > 10_000 and stats.datagrams_out > 10_000, stats


@pytest.mark.skipif("c" not in KINDS, reason="waiting on a set is the C batch's")
@pytest.mark.parametrize("respond", ["echo", "echo (reflect)"], ids=["one wait on the set", "a thread each"])
def test_a_listener_on_several_sockets_stops_at_once_and_ends_at_its_duration(
        monkeypatch: pytest.MonkeyPatch, respond: str) -> None:
    """A wait on several sockets (echo with its budget per peer: through the responder) needs no
    ``shutdown``: ``stop()`` ends it through the reactor's pipe at once; an echo in C, a thread a
    socket, is woken by ``shutdown`` on each. A duration ends either on time with no datagram
    coming, and no serving thread is left behind."""
    import threading

    from udpkit.listen import Listener

    monkeypatch.setenv("UDPKIT_MMSG", "c")
    endpoints = [Endpoint("127.0.0.1", 0, socket.AF_INET), Endpoint("::1", 0, socket.AF_INET6)]

    def responder() -> Echo | str:
        return Echo(rate_limit=None) if respond == "echo (reflect)" else "echo"

    with Listener(endpoints, respond=responder()) as listener:
        listener.start()
        time.sleep(0.3)
        started = time.monotonic()
        listener.stop()
        listener.join(5)
        assert time.monotonic() - started < 0.5
    with Listener(endpoints, respond=responder(), duration=0.6) as timed:
        started = time.monotonic()
        timed.serve()
        assert 0.55 < time.monotonic() - started < 1.5
    assert not [t.name for t in threading.enumerate() if t.name.startswith("udpkit-echo")]


def test_an_echo_on_a_socket_a_family_answers_each_in_a_thread_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """``udpkit listen PORT --respond echo --rate-limit 0``: each family's socket has a blocking
    loop on a thread of its own (no epoll between a request and its answer). Clients of both
    families that wait for each answer are all answered; a broadcast on the IPv4 socket, the second
    thread's, is handed back to Python, counted and not echoed, with that thread's own batch
    (``_answer_batch`` sends with it, while the other thread's batch may be in a call); the
    statistics add both threads' datagrams and peers."""
    import threading

    from udpkit.listen import Listener, listener as module

    monkeypatch.setenv("UDPKIT_MMSG", "c")
    handed_back: list[tuple[str, Any]] = []
    answer = module.Listener._answer_batch

    def noting(self: Any, index: int, sock: Any, got: Any, timed: bool, batch: Any = None) -> bool:
        handed_back.append((threading.current_thread().name, batch))
        return answer(self, index, sock, got, timed, batch)

    monkeypatch.setattr(module.Listener, "_answer_batch", noting)
    with Listener([Endpoint("::", 0, socket.AF_INET6), Endpoint("0.0.0.0", 0, socket.AF_INET)],
                  respond=Echo(rate_limit=None)) as listener:
        listener.start()
        port = listener.bound[0].port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c4, \
                socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c6:
            for client in (c4, c6):
                client.settimeout(2.0)
            c4.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            deadline = time.monotonic() + 5
            while not [t for t in threading.enumerate() if t.name == "udpkit-echo-1"]:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            answered = 0
            for n in range(300):
                c4.sendto(b"v4 %d" % n, ("127.0.0.1", port))
                c6.sendto(b"v6 %d" % n, ("::1", port))
                answered += c4.recv(64) == b"v4 %d" % n
                answered += c6.recv(64) == b"v6 %d" % n
                if n == 150:
                    c4.sendto(b"to all", ("127.255.255.255", port))
            c4.sendto(b"last", ("127.0.0.1", port))  # (after the broadcast: the next datagram is the echo)
            assert c4.recv(64) == b"last"
        listener.stop()
        listener.join()
    stats = listener.stats
    assert answered == 600
    assert (stats.datagrams_in, stats.datagrams_out) == (602, 601), stats
    assert stats.peers == 2 and stats.faults.get("not_unicast") == 1, stats
    assert handed_back == [("udpkit-echo-1", listener._others[0][0])]
    assert listener._others[0][0] is not listener._batch


def test_an_echo_thread_that_fails_stops_the_others_and_its_error_is_raised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket's echo loop that raises ends the listener: the other loop, waiting with no timeout,
    is woken, and ``serve`` raises the error."""
    import threading

    from udpkit.listen import Listener, listener as module

    monkeypatch.setenv("UDPKIT_MMSG", "c")
    loop = module.Listener._reflect_loop

    def failing(self: Any, index: int, *args: Any) -> None:
        if index == 1:
            time.sleep(0.2)
            raise RuntimeError("broken loop")
        loop(self, index, *args)

    monkeypatch.setattr(module.Listener, "_reflect_loop", failing)
    raised: list[BaseException] = []

    def serve(listener: Listener) -> None:
        try:
            listener.serve()
        except BaseException as exc:  # noqa: BLE001 - what serve raised is the point
            raised.append(exc)

    with Listener([Endpoint("127.0.0.1", 0, socket.AF_INET), Endpoint("::1", 0, socket.AF_INET6)],
                  respond=Echo(rate_limit=None)) as listener:
        serving = threading.Thread(target=serve, args=(listener,))
        serving.start()
        serving.join(2)
        ended = not serving.is_alive()
        listener.stop()  # (only if it did not end: the test's own clean-up)
        serving.join(5)
    assert ended, "the other loop was left waiting"
    assert [str(exc) for exc in raised] == ["broken loop"]


def blocking_wildcard_and_client() -> tuple[socket.socket, int, socket.socket]:
    """For reflect's blocking rounds (the C batch's): a blocking 0.0.0.0 socket reading each
    datagram's destination, whose waits end after 200 ms, its port, and a client socket."""
    if "c" not in KINDS:
        pytest.skip("rounds are the C batch's")
    server = wildcard_receiver()
    server.setblocking(True)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, 200_000))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(2)
    return server, server.getsockname()[1], client


def test_reflect_answers_a_wildcard_client_that_waits_from_each_destination_and_hands_back_a_broadcast() -> None:
    """On a wildcard socket (each datagram's destination read), the echo loop for a client that
    waits for each answer reads one datagram at a time (``recvmsg``) and answers it from the address
    it came to (``sendmsg`` with ``IP_PKTINFO``); a broadcast from that same client in the middle
    is handed back, not echoed, and the loop goes on."""
    import threading

    server, port, client = blocking_wildcard_and_client()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    answers: list[tuple[bytes, Any]] = []
    expected: list[tuple[bytes, Any]] = []

    def ping_pong() -> None:
        for n in range(300):
            if n == 150:
                client.sendto(b"to all", ("127.255.255.255", port))  # lo's broadcast: the same sender
            target = f"127.0.0.{1 + n % 3}"
            expected.append((b"%d" % n, (target, port)))
            client.sendto(b"%d" % n, (target, port))
            answers.append(client.recvfrom(100))

    thread = threading.Thread(target=ping_pong)
    batch = batch_of("c", ancillary=True)
    calls = []
    with server, client:
        thread.start()
        deadline = time.monotonic() + 20
        while thread.is_alive() and time.monotonic() < deadline:
            calls.append(batch.reflect(server.fileno(), 0x10000, 1024, 64))  # MSG_WAITFORONE
        thread.join(5)
    assert answers == expected
    assert sum(c[0] for c in calls) == sum(c[3] for c in calls) == 300 and not any(c[5] or c[7] for c in calls)
    rest = [record for c in calls for record in c[6]]
    assert [(r.data, r.unicast) for r in rest] == [(b"to all", False)]


def test_a_wildcard_echo_loop_that_finds_requests_queued_answers_them_all_from_each_destination() -> None:
    """Several requests in flight to a wildcard socket, with the busy poll on: a request already
    queued when the poll starts ends the one-at-a-time loop for a batch round (see receive_one), and
    every request is still answered once, in order, from the address it was sent to."""
    import threading

    server, port, client = blocking_wildcard_and_client()
    answers: list[tuple[bytes, Any]] = []
    expected = [(b"%d" % n, (f"127.0.0.{1 + n % 3}", port)) for n in range(8 * 60)]

    def windows() -> None:
        for first in range(0, len(expected), 8):
            for data, to in expected[first:first + 8]:
                client.sendto(data, to)
            answers.extend(client.recvfrom(100) for _ in range(8))

    thread = threading.Thread(target=windows)
    batch = batch_of("c", ancillary=True)
    batch.busy_poll_ns = 200_000  # type: ignore[attr-defined]
    echoed = 0
    with server, client:
        thread.start()
        deadline = time.monotonic() + 20
        while thread.is_alive() and time.monotonic() < deadline:
            call = batch.reflect(server.fileno(), 0x10000, 1024, 64)  # MSG_WAITFORONE
            assert not (call[5] or call[6] or call[7]), call
            echoed += call[0]
        thread.join(5)
    assert answers == expected and echoed == len(expected)


def _ping_pong_served(batch: Batch, requests: int, gap: float) -> list[bytes]:
    """``requests`` round trips from a client thread that waits for each answer and ``gap`` seconds
    more before the next, served by ``batch.reflect``'s echo loop on a blocking socket: the answers."""
    import threading

    server = bind_udp(Endpoint("127.0.0.1", 0, socket.AF_INET), BindOptions(pktinfo=False))
    server.setblocking(True)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, 200_000))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(2)
    answers: list[bytes] = []

    def ping_pong() -> None:
        for n in range(requests):
            client.sendto(b"%d" % n, server.getsockname())
            answers.append(client.recv(100))
            if gap:
                time.sleep(gap)

    thread = threading.Thread(target=ping_pong)
    with server, client:
        thread.start()
        deadline = time.monotonic() + 20
        while thread.is_alive() and time.monotonic() < deadline:
            batch.reflect(server.fileno(), 0x10000, 1024, 64)  # MSG_WAITFORONE: the blocking loop
        thread.join(5)
    return answers


def test_the_echo_loop_polls_for_the_next_request_before_it_sleeps_and_answers_the_same() -> None:
    """With ``busy_poll_ns`` the echo loop polls a while after each answer instead of sleeping at
    once (a request then finds the core awake): the same answers, in order, and requests caught
    by the poll. Off by default in a batch (the listener turns it on), and off means no polling."""
    if "c" not in KINDS:
        pytest.skip("the busy poll is the C batch's")
    quiet = batch_of("c", ancillary=True)
    assert quiet.busy_poll_ns == 0  # type: ignore[attr-defined]
    assert _ping_pong_served(quiet, 100, 0) == [b"%d" % n for n in range(100)]
    assert (quiet.spin_caught, quiet.spin_idle, quiet.spin_preempted) == (0, 0, 0)  # type: ignore[attr-defined]

    polling = batch_of("c", ancillary=True)
    polling.busy_poll_ns = 50_000  # type: ignore[attr-defined]
    assert _ping_pong_served(polling, 3000, 0) == [b"%d" % n for n in range(3000)]
    assert polling.reflected_in == polling.reflected_out == 3000
    # Whether a poll catches a client's next request in time depends on the machine (a client on a
    # busy core misses every window, and the poll then backs off, as it should). Requests already
    # queued, read one per round (a batch of one), are each found by the first poll after an answer.
    one = batch_of("c", count=1, ancillary=True)
    one.busy_poll_ns = 50_000  # type: ignore[attr-defined]
    server = bind_udp(Endpoint("127.0.0.1", 0, socket.AF_INET), BindOptions(pktinfo=False, rcvbuf=1 << 20))
    server.setblocking(True)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, 100_000))
    with server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(2)
        for n in range(50):
            client.sendto(b"%d" % n, server.getsockname())
        for _ in range(10):
            if one.reflected_out >= 50:
                break
            one.reflect(server.fileno(), 0x10000, 1024, 64)  # MSG_WAITFORONE
        assert [client.recv(100) for _ in range(50)] == [b"%d" % n for n in range(50)]
    assert one.spin_caught >= 45, (one.spin_caught, one.spin_idle, one.spin_preempted)  # type: ignore[attr-defined]


def test_the_busy_poll_backs_off_when_requests_come_slower_than_its_window() -> None:
    """A client slower than the window (3 ms between requests, a 50 µs window): after each window
    that runs out the poll waits twice as long before it is tried again, so 100 requests cost a
    dozen or so windows, not 100 — and every request is still answered."""
    if "c" not in KINDS:
        pytest.skip("the busy poll is the C batch's")
    batch = batch_of("c", ancillary=True)
    batch.busy_poll_ns = 50_000  # type: ignore[attr-defined]
    assert _ping_pong_served(batch, 100, 0.003) == [b"%d" % n for n in range(100)]
    tried = batch.spin_caught + batch.spin_idle + batch.spin_preempted  # type: ignore[attr-defined]
    assert 1 <= tried <= 25, (batch.spin_caught, batch.spin_idle, batch.spin_preempted)  # type: ignore[attr-defined]


def test_the_busy_poll_steps_aside_for_a_client_on_the_same_core() -> None:
    """Server and client pinned to one core: a poll there would keep the client from sending what
    it polls for. Each window that runs out, or that another task cuts into (a gap in the polling),
    backs the poll off; the client is served throughout, and at most one request in 20 costs a
    window given up."""
    import os

    if "c" not in KINDS:
        pytest.skip("the busy poll is the C batch's")
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # this thread, and the client thread it starts
    try:
        batch = batch_of("c", ancillary=True)
        batch.busy_poll_ns = 50_000  # type: ignore[attr-defined]
        assert _ping_pong_served(batch, 2000, 0) == [b"%d" % n for n in range(2000)]
    finally:
        os.sched_setaffinity(0, cpus)
    given_up = batch.spin_idle + batch.spin_preempted  # type: ignore[attr-defined]
    assert given_up <= 100, (batch.spin_caught, batch.spin_idle, batch.spin_preempted)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", KINDS)
def test_forward_passes_datagrams_on_unchanged_and_stops_at_an_error(kind: str) -> None:
    """``Batch.forward`` (a relay's hop): what waits on one connected socket goes out on another,
    byte for byte and in order — empty, GSO-sized runs and 65,507-byte datagrams; an error the
    destination reports (an ICMP port unreachable for an earlier send) ends the call, reported."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as src, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dst, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        for sock in (src, peer, sink):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.5)
        src.connect(peer.getsockname())
        peer.connect(src.getsockname())
        dst.connect(sink.getsockname())
        payloads = [b"", b"x"] + [b"%04d" % n for n in range(50)] + [b"y" * 1200] * 5 + [b"z" * 65507, b"end"]
        for payload in payloads:
            peer.send(payload)
        time.sleep(0.05)
        batch = batch_of(kind, 64, 65536, ancillary=False)
        got, nbytes, sent, sent_bytes, failures, error = batch.forward(src.fileno(), dst.fileno())
        assert (got, sent, failures, error) == (len(payloads), len(payloads), [], 0)
        assert nbytes == sent_bytes == sum(map(len, payloads))
        assert [sink.recv(65536) for _ in payloads] == payloads

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
            gone.bind(("127.0.0.1", 0))
            nowhere = gone.getsockname()
        dst.connect(nowhere)  # nothing listens there: the first send draws a port unreachable
        peer.send(b"first")
        time.sleep(0.05)
        assert batch.forward(src.fileno(), dst.fileno())[2] == 1
        time.sleep(0.05)
        peer.send(b"second")
        peer.send(b"third")
        time.sleep(0.05)
        got, _nbytes, sent, _sent_bytes, failures, error = batch.forward(src.fileno(), dst.fileno())
    assert (got, sent, error) == (2, 0, 0) and set(failures) == {errno.ECONNREFUSED}  # the call ends there


def ntp_request(first: int, poll: int = 6, transmit: int = 0, extra: bytes = b"") -> bytes:
    """A request's 48 bytes (first byte: leap, version, mode), its transmit time, then ``extra``."""
    return bytes([first, 0, poll, 0xEC]) + bytes(36) + transmit.to_bytes(8, "big") + extra


NTP_REQUESTS = [  # (request, answered)
    (ntp_request(0x23, 6, 1), True),  # version 4, client
    (ntp_request(0x1B, 10, 2), True),  # version 3
    (ntp_request(0xE3, 200, 3), True),  # leap bits set; a poll out of range (clamped in the reply)
    (ntp_request(0x21, 4, 4), True),  # symmetric active
    (ntp_request(0x23, 6, 5, bytes(20)), True),  # with an extension field: answered as 48 bytes
    (ntp_request(0x24, 6, 6), False),  # a server's reply, not a request
    (ntp_request(0x16, 6, 7), False),  # control (mode 6): never answered
    (ntp_request(0x03, 6, 8), False),  # version 0
    (ntp_request(0x23, 6, 9)[:47], False),  # short
    (ntp_request(0x13, 6, 10), True),  # version 2
]


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_answer_ntp_replies_as_handle_does_and_leaves_the_rest_to_the_caller(family: int) -> None:
    """``Batch.answer_ntp`` against ``NtpResponder.handle``: the same header, reference and origin,
    the kernel's receive time, a transmit time read at the send; what handle would not answer is
    handed back whole, in order; each sender once."""
    from udpkit.services.ntp import NtpResponder, from_ntp

    if "c" not in KINDS:
        pytest.skip("answer_ntp is the C batch's")
    made = dict(stratum=3, refid=b"GPS", leap=1, root_delay=0.25, root_dispersion=0.5, precision=-23)
    responder, reference = NtpResponder(**made), NtpResponder(**made)  # type: ignore[arg-type]
    template = responder.ntp_template
    assert template is not None
    accept, start_for, count_answered = template
    batch = batch_of("c")
    with receiver(family) as rx, socket.socket(family, socket.SOCK_DGRAM) as client:
        client.settimeout(2)
        client.bind((HOSTS[family], 0))
        where = client.getsockname()[:2]
        sent_at = time.time()
        for request, _ in NTP_REQUESTS:
            client.sendto(request, rx.getsockname()[:2])
        time.sleep(0.05)
        senders: list[Any] = []
        before = time.time()
        answered, nbytes, sent, sent_bytes, failures, rest, error = batch.answer_ntp(
            rx.fileno(), socket.MSG_DONTWAIT, accept, start_for, 16, senders)
        after = time.time()
        replies = [client.recv(100) for _ in range(answered)]
        client.sendto(ntp_request(0x23), rx.getsockname()[:2])  # the same sender again: not handed out again
        time.sleep(0.05)
        again: list[Any] = []
        assert batch.answer_ntp(rx.fileno(), socket.MSG_DONTWAIT, accept, start_for, 16, again)[0] == 1
        assert again == [] and len(client.recv(100)) == 48
    wanted = [request for request, ok in NTP_REQUESTS if ok]
    assert (answered, sent, failures, error) == (len(wanted), len(wanted), [], 0)
    assert nbytes == sum(len(request) for request in wanted) and sent_bytes == 48 * len(wanted)
    assert [record[0] for record in rest] == [request for request, ok in NTP_REQUESTS if not ok]
    assert [peer[:2] for peer in senders] == [where]
    peer = Endpoint(where[0], where[1], family)
    for request, reply in zip(wanted, replies):
        assert len(reply) == 48
        received = from_ntp(int.from_bytes(reply[32:40], "big"), before)
        transmit = from_ntp(int.from_bytes(reply[40:48], "big"), before)
        # (the receive time is the kernel's; when timestamping has just been turned on for the
        # machine, Linux switches it on in the background and stamps at the read meanwhile)
        assert sent_at - 0.001 <= received <= transmit and before - 0.001 <= transmit <= after + 0.001
        expected = reference.handle(request, peer, received)
        assert expected is not None and isinstance(expected, bytes)
        assert reply[:32] == expected[:32]  # header, reference time, origin = the request's transmit
        assert abs(int.from_bytes(reply[32:40], "big") - int.from_bytes(expected[32:40], "big")) < 2**32 // 10**6
    count_answered(answered)
    assert responder.stats["answered"] == len(wanted)


def test_answer_ntp_answers_from_the_address_each_request_was_sent_to() -> None:
    """On a wildcard socket (destinations read), each reply leaves from its request's destination."""
    from udpkit.services.ntp import NtpResponder

    if "c" not in KINDS:
        pytest.skip("answer_ntp is the C batch's")
    template = NtpResponder().ntp_template
    assert template is not None
    rx = wildcard_receiver(timestamps=True)
    with rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(1)
        port = rx.getsockname()[1]
        targets = ["127.0.0.1", "127.0.0.2", "127.0.0.2", "127.0.0.3", "255.255.255.255"]
        client.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        for n, target in enumerate(targets):
            client.sendto(ntp_request(0x23, 6, n), (target, port))
        time.sleep(0.05)
        answered, _, sent, _, _, rest, _ = batch_of("c").answer_ntp(
            rx.fileno(), socket.MSG_DONTWAIT, template[0], template[1], 16, [])
        got = [client.recvfrom(100) for _ in range(answered)]
    assert answered == sent == 4
    assert [(reply[24:32], where) for reply, where in got] == [
        ((n).to_bytes(8, "big"), (target, port)) for n, target in enumerate(targets[:4])]
    assert [record[6] for record in rest] == [False]  # the broadcast: not ours to answer here


@pytest.mark.parametrize("kind", ["plain", *KINDS])
def test_an_ntp_listener_answers_and_counts_the_same_whichever_way_it_reads(
        monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """Requests good and bad from three clients to a wildcard and a unicast socket: the same replies
    counted, the same refusals by reason, the same peers — through answer_ntp (C), handle_batch
    (ctypes) and handle (one datagram per call)."""
    from udpkit.listen import Listener
    from udpkit.services.ntp import NtpResponder

    monkeypatch.setenv("UDPKIT_MMSG", "0" if kind == "plain" else kind)
    responder = NtpResponder()
    endpoints = [Endpoint("0.0.0.0", 0, socket.AF_INET), Endpoint("::1", 0, socket.AF_INET6)]
    with Listener(endpoints, respond=responder) as listener:
        bound = listener.bound
        how = " ".join(listener.receive_paths())
        assert ("answer_ntp" in how) == (kind == "c"), how
        listener.start()
        replies = 0
        for ep in bound:
            target = "127.0.0.1" if ep.family == socket.AF_INET else "::1"
            for _ in range(3):
                with socket.socket(ep.family, socket.SOCK_DGRAM) as client:
                    client.settimeout(1)
                    for request, ok in NTP_REQUESTS:
                        client.sendto(request, (target, ep.port))
                    for request, ok in NTP_REQUESTS:
                        if ok:
                            reply = client.recv(100)
                            assert len(reply) == 48 and reply[0] & 7 == 4
                            replies += 1
        listener.stop()
        listener.join()
    stats = listener.stats
    answered = sum(ok for _, ok in NTP_REQUESTS) * 6
    assert replies == answered and stats.datagrams_out == answered and stats.bytes_out == 48 * answered
    assert stats.datagrams_in == len(NTP_REQUESTS) * 6 and stats.peers == 6
    assert (responder.stats["answered"], responder.stats["mode"], responder.stats["version"],
            responder.stats["short"]) == (answered, 12, 6, 6)


def dns_queries() -> list[bytes]:
    """Queries a DNS listener is asked, good and bad: kept answers, new names, NXDOMAIN, a wildcard's
    name, REFUSED, an empty non-terminal, a response (never answered), garbage with a header
    (FORMERR), a short datagram (silence)."""
    import dns.message

    made = [dns.message.make_query(name, kind).to_wire() for name, kind in [
        ("www.example.test", "A"), ("alias.example.test", "AAAA"), ("nope.example.test", "A"),
        ("www.example.test", "A"), ("example.test", "MX"), ("x.wild.example.test", "A"), ("example.org", "A"),
        ("_udp.example.test", "SRV")]]
    response = dns.message.make_response(dns.message.make_query("www.example.test", "A")).to_wire()
    return [*made, response, made[0][:12] + b"\xff" * 5, b"\x00\x01\x02"]


@contextlib.contextmanager
def dns_queries_waiting(family: int, tag: int) -> Iterator[tuple[socket.socket, socket.socket, list[bytes], Endpoint]]:
    """``dns_queries()``, each under its own ID (its index and ``tag``), sent by one client to a
    receiver and waiting there: (the receiver, the client, the queries as sent, the client's address)."""
    with receiver(family) as rx, socket.socket(family, socket.SOCK_DGRAM) as client:
        client.settimeout(2)
        client.bind((HOSTS[family], 0))
        asked = [bytes([n, tag]) + query[2:] if len(query) > 2 else query for n, query in enumerate(dns_queries())]
        for query in asked:
            client.sendto(query, rx.getsockname()[:2])
        time.sleep(0.05)
        yield rx, client, asked, Endpoint(*client.getsockname()[:2], family)


def dns_server(**kwargs: Any) -> Any:
    from pathlib import Path

    from udpkit.services.dns import DnsResponder, load_zone

    zone = load_zone(Path(__file__).parent.parent / "data" / "example.zone")
    return DnsResponder([zone], rate_limit=0, **kwargs)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_answer_kept_gives_handles_answers_again_and_leaves_the_rest_to_the_caller(family: int) -> None:
    """``Batch.answer_kept`` against ``DnsResponder.handle``: a query answered before gets, under
    its own ID, the bytes handle gives; new questions, a response, garbage and a short datagram
    come back whole and in order; each outcome is handed over for counting; each sender once."""
    if "c" not in KINDS:
        pytest.skip("answer_kept is the C batch's")
    responder, reference = dns_server(), dns_server(cache=0)
    kept = responder.kept_answers
    assert kept is not None
    table, count, _fresh = kept
    for query in dns_queries()[:2]:  # two answers kept: www A (asked twice below) and alias AAAA
        responder.handle(query, Endpoint("192.0.2.1", 1, socket.AF_INET), 0.0)
    batch = batch_of("c")
    with dns_queries_waiting(family, 0x5A) as (rx, client, asked, peer):
        senders: list[Any] = []
        hits: list[Any] = []
        answered, nbytes, sent, sent_bytes, failures, rest, error = batch.answer_kept(
            rx.fileno(), socket.MSG_DONTWAIT, table, hits, senders)
        replies = [client.recv(2048) for _ in range(answered)]
        client.sendto(asked[0], rx.getsockname()[:2])  # the same sender again: not handed out again
        time.sleep(0.05)
        again: list[Any] = []
        assert batch.answer_kept(rx.fileno(), socket.MSG_DONTWAIT, table, [], again)[0] == 1
        assert again == [] and client.recv(2048)[:2] == asked[0][:2]
    kept_ones = [asked[0], asked[1], asked[3]]
    assert (answered, sent, failures, error) == (3, 3, [], 0)
    assert replies == [reference.handle(query, peer, 0.0) for query in kept_ones]
    assert nbytes == sum(len(query) for query in kept_ones) and sent_bytes == sum(len(reply) for reply in replies)
    assert [record[0] for record in rest] == [query for query in asked if query not in kept_ones]
    assert [p[:2] for p in senders] == [(peer.ip, peer.port)]
    count(hits)
    assert responder.stats["answered"] == 2 + 3


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_answer_kept_answers_new_names_from_templates_in_the_same_call(family: int) -> None:
    """With the responder's ``fresh``: names the zone does not hold (NXDOMAIN, REFUSED, a wildcard's)
    are answered in the call as handle answers them, and kept; names it holds, a response,
    garbage and a short datagram still come back for handle."""
    if "c" not in KINDS:
        pytest.skip("answer_kept is the C batch's")
    responder, reference = dns_server(), dns_server(cache=0)
    table, count, fresh = responder.kept_answers
    batch = batch_of("c")
    with dns_queries_waiting(family, 0x33) as (rx, client, asked, peer):
        hits: list[Any] = []
        answered, _nbytes, sent, _sent_bytes, failures, rest, error = batch.answer_kept(
            rx.fileno(), socket.MSG_DONTWAIT, table, hits, [], fresh)
        replies = [client.recv(2048) for _ in range(answered)]
    new_names = [asked[2], asked[5], asked[6]]  # nope. (NXDOMAIN), x.wild., example.org (REFUSED)
    assert (answered, sent, failures, error) == (3, 3, [], 0)
    assert replies == [reference.handle(query, peer, 0.0) for query in new_names]
    assert [record[0] for record in rest] == [query for query in asked if query not in new_names]
    assert all(query[2:] in table for query in new_names)  # kept, as handle keeps them
    for record in rest:
        responder.handle(record[0], peer, 0.0)
    for query in asked:
        if query not in new_names:
            reference.handle(query, peer, 0.0)
    count(hits)
    assert responder.stats == reference.stats


def test_answer_kept_answers_from_the_address_each_query_was_sent_to() -> None:
    """On a wildcard socket (destinations read), each reply leaves from its query's destination;
    the broadcast is handed back."""
    if "c" not in KINDS:
        pytest.skip("answer_kept is the C batch's")
    responder = dns_server()
    query = dns_queries()[0]
    responder.handle(query, Endpoint("192.0.2.1", 1, socket.AF_INET), 0.0)
    table, _count, _fresh = responder.kept_answers
    rx = wildcard_receiver()
    with rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(1)
        port = rx.getsockname()[1]
        targets = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "255.255.255.255"]
        client.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        for n, target in enumerate(targets):
            client.sendto(bytes([0, n]) + query[2:], (target, port))
        time.sleep(0.05)
        answered, _, sent, _, _, rest, _ = batch_of("c").answer_kept(rx.fileno(), socket.MSG_DONTWAIT, table, [], [])
        got = [client.recvfrom(2048) for _ in range(answered)]
    assert answered == sent == 3
    assert [(reply[:2], where) for reply, where in got] == [(bytes([0, n]), (target, port))
                                                            for n, target in enumerate(targets[:3])]
    assert [record[6] for record in rest] == [False]


@pytest.mark.parametrize("kind", ["plain", *KINDS])
@pytest.mark.parametrize("where", ["one socket", "wildcard", "wildcard and v6"])
def test_a_dns_listener_answers_and_counts_the_same_whichever_way_it_reads(
        monkeypatch: pytest.MonkeyPatch, kind: str, where: str) -> None:
    """Queries good and bad from three clients, three times each: the same answers (byte for byte,
    IDs included), the same counts by outcome, the same peers — through answer_kept (C) for the
    answers kept, handle for the rest, and handle alone (ctypes, one datagram per call)."""
    from tests.integration.conftest import eventually
    from udpkit.listen import Listener

    monkeypatch.setenv("UDPKIT_MMSG", "0" if kind == "plain" else kind)
    responder, reference = dns_server(), dns_server(cache=0)
    endpoints = {"one socket": [Endpoint("127.0.0.1", 0, socket.AF_INET)],
                 "wildcard": [Endpoint("0.0.0.0", 0, socket.AF_INET)],  # blocking too: no receive time needed
                 "wildcard and v6": [Endpoint("0.0.0.0", 0, socket.AF_INET),
                                     Endpoint("::1", 0, socket.AF_INET6)]}[where]
    queries = dns_queries()
    with Listener(endpoints, respond=responder) as listener:
        bound = listener.bound
        how = " ".join(listener.receive_paths())
        assert ("answer_kept" in how) == (kind == "c"), how
        listener.start()
        got, expected = [], []
        for ep in bound:
            target = "127.0.0.1" if ep.family == socket.AF_INET else "::1"
            for _ in range(3):
                with socket.socket(ep.family, socket.SOCK_DGRAM) as client:
                    client.settimeout(1)
                    client.bind((target, 0))
                    peer = Endpoint(target, client.getsockname()[1], ep.family)
                    for n, query in enumerate(queries):
                        asked = bytes([n, 7]) + query[2:] if len(query) > 2 else query
                        client.sendto(asked, (target, ep.port))
                        reply = reference.handle(asked, peer, 0.0)
                        if reply is not None:
                            expected.append(reply)
                            got.append(client.recv(2048))
        asked_count = len(queries) * 3 * len(bound)
        # (the last queries draw no answer: stop() does not wait for what is still queued)
        assert eventually(lambda: listener.stats.datagrams_in == asked_count, timeout=5)
        listener.stop()
        listener.join()
    stats = listener.stats
    assert got == expected
    assert stats.datagrams_in == asked_count and stats.datagrams_out == len(expected) and stats.peers == 3 * len(bound)
    assert responder.stats == reference.stats


def test_a_kept_answers_table_the_call_cannot_read_loses_the_batch_not_the_service(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A key whose comparison raises (a responder's table is its own business): each batch is
    counted as a responder error and the listener goes on, answering what is not in the table."""
    from udpkit.listen import Listener

    if "c" not in KINDS:
        pytest.skip("answer_kept is the C batch's")
    monkeypatch.setenv("UDPKIT_MMSG", "c")

    class Raising:
        def __hash__(self) -> int:
            return hash(b"a question of 12+ bytes")

        def __eq__(self, other: object) -> bool:
            raise ValueError("no")

    class Odd:
        name, replies, uses_time = "odd", True, False
        kept_answers = ({Raising(): (b"x", ())}, lambda hits: None)

        def handle(self, datagram: bytes, peer: Endpoint, now: float) -> bytes:
            return b"handled"

    with Listener([Endpoint("127.0.0.1", 0, socket.AF_INET)], respond=Odd()) as listener:  # type: ignore[arg-type]
        port = listener.bound[0].port
        listener.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(1)
            client.sendto(b"\x00\x00a question of 12+ bytes", ("127.0.0.1", port))  # compared with the raising key
            time.sleep(0.1)
            client.sendto(b"\x00\x00another question", ("127.0.0.1", port))  # not in the table
            assert client.recv(100) == b"handled"
        listener.stop()
        listener.join()
    assert listener.stats.faults.get("responder_error:ValueError", 0) >= 1
