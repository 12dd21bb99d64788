"""A UDP client on two file descriptors: what is read from one goes out as datagrams, the replies go
to the other (socat's ``- UDP4:HOST:PORT``, nc's ``-u`` without ``-z``)."""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

from udpkit.net.rx import MAX_DATAGRAM

__all__ = ["Sink", "pump"]


class Sink(Protocol):
    """Where replies go: a binary stream (standard output's buffer), or anything that takes bytes."""

    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


def pump(sock: socket.socket, source_fd: int | None, sink: Sink, *, linger: float | None = 0.5,
         idle: float | None = None, until_refused: bool = False, deaf_after_eof: bool = False,
         chunk: int | None = None, peer: tuple[Any, ...] | None = None, only_peer: bool = True,
         tap: Callable[[bytes, bool], None] | None = None) -> tuple[int, int]:
    """Send each read from ``source_fd`` as one datagram on the connected ``sock`` and write every
    reply to ``sink``, until ``source_fd`` ends and ``linger`` seconds pass without a reply (socat's
    ``-t``; ``None``: keep receiving, like nc), or nothing moves for ``idle`` seconds (``-T``, nc's ``-w``).
    ``source_fd`` ``None``: nothing to send (nc's ``-d``). Returns (datagrams sent, received).
    ``until_refused``: an ICMP port unreachable for our datagrams ends it (``ConnectionRefusedError``
    is raised), as socat and nc end a client whose peer is closed; otherwise it is passed over.
    ``deaf_after_eof``: once the source ends, read nothing more, only wait ``linger`` (nc's ``-q``).
    ``chunk``: the most bytes one read of the source takes, so the largest datagram (socat's ``-b``).
    ``peer``: ``sock`` is not connected; datagrams go to ``peer`` with ``sendto`` and replies are
    taken from it only (``only_peer``: socat's UDP-SENDTO) or from anyone (socat's UDP-DATAGRAM, for
    a group or a broadcast address, whose answers come from each host's own address).
    ``tap``: shown every datagram, ``True`` for what we send (socat's ``-v``/``-x``)."""
    size = MAX_DATAGRAM - 48 if chunk is None else min(chunk, MAX_DATAGRAM - 48)
    sent = received = 0
    source_open = source_fd is not None
    sock.setblocking(False)
    with select.epoll() as poller:
        poller.register(sock.fileno(), select.EPOLLIN)
        if source_fd is not None:
            try:
                poller.register(source_fd, select.EPOLLIN)
            except PermissionError:  # a regular file or /dev/null: always readable, so read it all now
                sent += _send_all(sock, source_fd, size, peer, tap)
                source_open = False
        last = closed_at = time.monotonic()
        while True:
            now = time.monotonic()
            limits = [] if source_open or linger is None else [closed_at + linger - now]
            if idle is not None:
                limits.append(last + idle - now)
            timeout = max(0.0, min(limits)) if limits else -1.0
            if limits and timeout <= 0:
                return sent, received
            for fd, _mask in poller.poll(timeout):
                if fd == source_fd and source_fd is not None:
                    data = os.read(source_fd, size)
                    if not data:
                        poller.unregister(source_fd)
                        source_open = False
                        closed_at = time.monotonic()
                        if deaf_after_eof:
                            poller.unregister(sock.fileno())
                            break
                        continue
                    try:
                        if peer is None:
                            sock.send(data)
                        else:
                            sock.sendto(data, peer)
                        sent += 1
                        if tap is not None:
                            tap(data, True)
                    except BlockingIOError:
                        pass
                    except ConnectionRefusedError:
                        if until_refused:
                            raise
                else:
                    while True:
                        try:
                            # -b: cut, as socat reads
                            reply, sender = sock.recvfrom(MAX_DATAGRAM if chunk is None else chunk)
                        except (BlockingIOError, InterruptedError):
                            break
                        except ConnectionRefusedError:
                            if until_refused:
                                raise
                            continue  # ICMP port unreachable for an earlier datagram
                        if peer is not None and only_peer and sender[:2] != peer[:2]:
                            continue  # UDP-SENDTO hears its peer only
                        received += 1
                        if tap is not None:
                            tap(reply, False)
                        sink.write(reply)
                        sink.flush()
                        if not source_open:
                            closed_at = time.monotonic()
                last = time.monotonic()


def _send_all(sock: socket.socket, source_fd: int, size: int, peer: tuple[Any, ...] | None,
              tap: Callable[[bytes, bool], None] | None) -> int:
    """Each read of a file that epoll cannot watch, as one datagram, to its end."""
    sent = 0
    while data := os.read(source_fd, size):
        try:
            if peer is None:
                sock.send(data)
            else:
                sock.sendto(data, peer)
            sent += 1
            if tap is not None:
                tap(data, True)
        except (BlockingIOError, ConnectionRefusedError):
            pass
    return sent
