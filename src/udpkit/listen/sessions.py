"""Sessions: one per peer, kept least recently active first, so that the idle ones and the one to
evict at ``max_peers`` are always at the front."""

from __future__ import annotations

import socket
from collections import OrderedDict
from collections.abc import Iterator

from udpkit.addr import Endpoint

__all__ = ["Session", "SessionKey", "SessionTable"]

#: (index of the listening socket the peer came to, the peer's address)
SessionKey = tuple[int, tuple[str, int]]


class Session:
    """One peer's own socket (bound to our address and port, connected to the peer) and, when
    relaying, its own socket to the upstream."""

    __slots__ = ("down", "key", "local", "peer", "up")

    def __init__(self, key: SessionKey, down: socket.socket, up: socket.socket | None, local: Endpoint,
                 peer: Endpoint) -> None:
        self.key = key
        self.down = down
        self.up = up
        self.local = local
        self.peer = peer


class SessionTable:
    """The open sessions in order of last activity, with the rules that end them."""

    def __init__(self, idle_timeout: float | None = None, max_peers: int | None = None) -> None:
        self.idle_timeout = idle_timeout
        self.max_peers = max_peers
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
        return self.max_peers is not None and len(self._by_key) >= self.max_peers

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
