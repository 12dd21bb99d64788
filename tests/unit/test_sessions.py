"""The session table's rules: least recently active first, idle expiry, eviction at max_peers."""

from __future__ import annotations

import socket

from udpkit.addr import Endpoint
from udpkit.listen.sessions import Session, SessionTable


def session(port: int) -> Session:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.close()  # the table never touches the sockets; the listener does
    return Session((0, ("127.0.0.1", port)), sock, None, Endpoint("127.0.0.1", 9, socket.AF_INET),
                   Endpoint("127.0.0.1", port, socket.AF_INET))


def test_activity_reorders_and_idle_sessions_expire_from_the_front() -> None:
    table = SessionTable(idle_timeout=10, max_sessions=3)
    for port, now in ((1, 0.0), (2, 1.0), (3, 2.0)):
        table.add(session(port), now)
    assert table.full() and table.total == 3
    table.touch((0, ("127.0.0.1", 1)), 5.0)
    assert [s.peer.port for s in table] == [2, 3, 1]
    assert table.oldest() is not None and table.oldest().peer.port == 2  # type: ignore[union-attr]
    assert table.next_expiry() == 11.0
    assert table.expired(12.5) == [(0, ("127.0.0.1", 2)), (0, ("127.0.0.1", 3))]
    assert table.pop((0, ("127.0.0.1", 2))) is not None and len(table) == 2 and not table.full()


def test_without_an_idle_timeout_nothing_expires() -> None:
    table = SessionTable()
    table.add(session(1), 0.0)
    assert table.next_expiry() is None and table.expired(1e9) == [] and not table.full()
