"""Sessions (socat's ``fork``, done in-process): one peer's own socket, and the table that ends them.

The first datagram from a new peer opens a socket bound to the same local address and port and
connected to that peer, so the kernel delivers that peer's later datagrams to it (a connected socket
is the better match) and ``ss`` shows it ESTAB. The listening socket never closes, so there is no
moment when the port is unbound. Between ``bind()`` and ``connect()`` the new socket is an
unconnected twin of the listening one and may catch other peers' datagrams: :meth:`Session.open`
hands them back as strays, to be routed by their real sender.

The table keeps sessions least recently active first, so the idle ones and the one to make room
for a new peer at ``max_sessions`` are always at the front.
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from udpkit.addr import Endpoint
from udpkit.listen.streams import StreamTarget, StreamUpstream, open_stream
from udpkit.net import BindOptions, Datagram, bind_udp, receive, socket_drops, upstream_socket

__all__ = ["Session", "SessionKey", "SessionTable"]

#: (index of the listening socket the peer came to, the peer's whole socket address)
SessionKey = tuple[int, tuple[Any, ...]]


class Session:
    """One peer's own socket (``down``: bound to our address and port, connected to the peer) and,
    when relaying, its own socket to the upstream (``up``), or its stream (a program, a TCP
    connection). It owns and closes both."""

    __slots__ = ("down", "key", "local", "peer", "up")

    def __init__(self, key: SessionKey, down: socket.socket, up: socket.socket | StreamUpstream | None,
                 local: Endpoint, peer: Endpoint) -> None:
        self.key = key
        self.down = down
        self.up = up
        self.local = local
        self.peer = peer

    @classmethod
    def open(cls, key: SessionKey, local: Endpoint, peer: Endpoint, bind: BindOptions,
             relay: tuple[int, tuple[str, int]] | None,
             stream: StreamTarget | None = None) -> tuple[Session, list[Datagram]]:
        """A session for the peer ``key[1]`` and the strays its socket caught; raises ``UdpkitError``
        or ``OSError`` when the kernel will not make it (out of descriptors, say)."""
        down = bind_udp(local, bind._replace(reuseaddr=True, pktinfo=False, memberships=(), send=None))
        up: socket.socket | StreamUpstream | None = None
        try:
            down.connect(key[1])
            strays = [stray._replace(local_ip=local.ip) for stray in receive(down, 1 << 16, ancillary=False)]
            if relay is not None:
                up = upstream_socket(relay[0], relay[1], rcvbuf=bind.rcvbuf)
            elif stream is not None:
                up = open_stream(stream)
        except BaseException:
            down.close()
            raise
        return cls(key, down, up, local, peer), strays

    def close(self) -> int:
        """Close both sockets; the datagrams the kernel dropped on ``down`` until now."""
        drops = socket_drops(self.down) or 0
        self.down.close()
        if self.up is not None:
            self.up.close()
        return drops


class SessionTable:
    """The open sessions in order of last activity, with the rules that end them."""

    def __init__(self, idle_timeout: float | None = None, max_sessions: int | None = None) -> None:
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self.total = 0  # sessions ever opened
        self._by_key: OrderedDict[SessionKey, Session] = OrderedDict()
        self._last_seen: dict[SessionKey, float] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Session]:
        """Least recently active first."""
        return iter(list(self._by_key.values()))

    def get(self, key: SessionKey) -> Session | None:
        return self._by_key.get(key)

    def full(self) -> bool:
        return self.max_sessions is not None and len(self._by_key) >= self.max_sessions

    def oldest(self) -> Session | None:
        return next(iter(self._by_key.values()), None)

    def add(self, session: Session, now: float) -> None:
        self._by_key[session.key] = session
        self._last_seen[session.key] = now
        self.total += 1

    def touch(self, key: SessionKey, now: float) -> None:
        if key in self._by_key:
            self._by_key.move_to_end(key)
            self._last_seen[key] = now

    def pop(self, key: SessionKey) -> Session | None:
        self._last_seen.pop(key, None)
        return self._by_key.pop(key, None)

    def next_expiry(self) -> float | None:
        """When the least recently active session will have been idle for ``idle_timeout``."""
        if self.idle_timeout is None or not self._by_key:
            return None
        return self._last_seen[next(iter(self._by_key))] + self.idle_timeout

    def expired(self, now: float) -> list[SessionKey]:
        """The sessions idle for ``idle_timeout`` at ``now`` (they are at the front)."""
        if self.idle_timeout is None:
            return []
        keys = []
        for key in self._by_key:
            if now - self._last_seen[key] < self.idle_timeout:
                break
            keys.append(key)
        return keys
