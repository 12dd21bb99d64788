"""The batched receive path (``recvmmsg``) against the one-datagram-per-call path, on the same datagrams:
the same count, bytes, senders and payloads, on both families, for empty, small and 65,507-byte
datagrams; and the drop count stays exact when the receive queue overflows."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from udpkit.net import socket_drops
from udpkit.net.mmsg import Batch, available
from udpkit.net.rx import count_and_forget

pytestmark = pytest.mark.skipif(not available(), reason="recvmmsg is not available here")

SIZES = [0, 1, 64, 1472, 9000, 65507]


def exchange(family: int, receiver: bytearray | Batch) -> tuple[int, int, list[tuple[Any, ...]], list[bytes]]:
    """Send every size 20 times from one socket; what ``count_and_forget`` reports with ``receiver``."""
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    with socket.socket(family, socket.SOCK_DGRAM) as rx, socket.socket(family, socket.SOCK_DGRAM) as tx:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        rx.bind((host, 0))
        rx.setblocking(False)
        tx.bind((host, 0))
        for n, size in enumerate(SIZES * 20):
            tx.sendto(bytes([n % 251]) * size, rx.getsockname()[:2])
        peers: list[tuple[Any, ...]] = []
        payloads: list[bytes] = []
        count, total = count_and_forget(rx, 10_000, receiver, peers.append, lambda view: payloads.append(bytes(view)),
                                        max_bytes=1 << 30)
        return count, total, peers, payloads


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_batched_and_plain_receive_the_same(family: int) -> None:
    plain = exchange(family, bytearray(65536))
    batched = exchange(family, Batch(64, 65536))
    assert plain[0] == batched[0] == len(SIZES) * 20
    assert plain[1] == batched[1] == sum(SIZES) * 20
    assert plain[3] == batched[3]  # every payload, byte for byte, in order
    # the same sender each time (two runs: two ports), in recvfrom's own form
    assert len(set(plain[2])) == len(set(batched[2])) == 1
    assert len(plain[2][0]) == len(batched[2][0]) and plain[2][0][0] == batched[2][0][0]


def test_a_batch_decodes_senders_as_recvfrom_does() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as tx:
        rx.bind(("::1", 0))
        tx.bind(("::1", 0))
        tx.sendto(b"x", rx.getsockname()[:2])
        rx.settimeout(2)
        rx.recv(1, socket.MSG_PEEK)
        batch = Batch(4, 2048)
        assert batch.receive(rx) == 1
        assert batch.peer(0) == tx.getsockname()  # ('::1', port, 0, 0)
        assert bytes(batch.data(0)) == b"x" and not batch.truncated(0)


def test_a_datagram_longer_than_the_room_is_marked_truncated() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        tx.sendto(b"y" * 3000, rx.getsockname())
        rx.settimeout(2)
        rx.recv(1, socket.MSG_PEEK)
        batch = Batch(2, 1024)
        assert batch.receive(rx) == 1
        assert batch.truncated(0) and len(batch.data(0)) == 1024


def test_a_batch_sends_many_datagrams_in_one_call() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(2)
        batch = Batch(8, 2048)
        assert batch.send(tx, [(f"m{i}".encode(), rx.getsockname()) for i in range(5)]) == 5
        assert [rx.recv(100) for _ in range(5)] == [f"m{i}".encode() for i in range(5)]


def test_drops_stay_exact_when_the_queue_overflows() -> None:
    """received + dropped = sent, whichever path read them."""
    receivers: list[bytearray | Batch] = [bytearray(65536), Batch(64, 2048)]
    for receiver in receivers:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            rx.bind(("127.0.0.1", 0))
            rx.setblocking(False)
            for _ in range(2000):
                tx.sendto(b"z" * 200, rx.getsockname())
            got, _bytes = count_and_forget(rx, 100_000, receiver, lambda peer: None, max_bytes=1 << 30)
            drops = socket_drops(rx)
            assert drops is not None and drops > 0
            assert got + drops == 2000, (type(receiver).__name__, got, drops)


@pytest.mark.parametrize("respond, payload", [("discard", b"d" * 100), ("echo", b"echo me"),
                                              ("ntp", b"\x23" + bytes(47))])
def test_a_listener_answers_the_same_whether_it_reads_in_batches(monkeypatch: pytest.MonkeyPatch, respond: str,
                                                                 payload: bytes) -> None:
    """The listener's batched paths (asked for with UDPKIT_MMSG=1) count and answer as the plain ones:
    two unicast sockets (the plain and timed paths), 200 requests, every reply where one is due."""
    from udpkit.addr import Endpoint
    from udpkit.listen import Listener

    results = []
    for batched in (False, True):
        if batched:
            monkeypatch.setenv("UDPKIT_MMSG", "1")
        else:
            monkeypatch.delenv("UDPKIT_MMSG", raising=False)
        listener = Listener([Endpoint("127.0.0.1", 0, socket.AF_INET), Endpoint("127.0.0.2", 0, socket.AF_INET)],
                            respond=respond)
        bound = listener.open()
        listener.start()
        try:
            if batched:
                assert "recvmmsg" in " ".join(listener.receive_paths())
            replies = 0
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(0.5)
                for n in range(200):
                    client.sendto(payload, (bound[n % 2].ip, bound[n % 2].port))
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
        results.append((listener.stats.datagrams_in, replies))
    assert results[0] == results[1] == (200, 0 if respond == "discard" else 200), results
