"""A UDP client on two file descriptors: what is read from one goes out as datagrams, the replies go
to the other (socat's ``- UDP4:HOST:PORT``, nc's ``-u`` without ``-z``)."""

from __future__ import annotations

import os
import select
import socket
import time
from typing import BinaryIO

from udpkit.net.rx import MAX_DATAGRAM

__all__ = ["pump"]


def pump(sock: socket.socket, source_fd: int, sink: BinaryIO, *, linger: float = 0.5,
         idle: float | None = None) -> tuple[int, int]:
    """Send each read from ``source_fd`` as one datagram on the connected ``sock`` and write every
    reply to ``sink``, until ``source_fd`` ends and ``linger`` seconds pass without a reply (socat's
    ``-t``), or nothing moves for ``idle`` seconds (``-T``). Returns (datagrams sent, received)."""
    sent = received = 0
    source_open = True
    sock.setblocking(False)
    with select.epoll() as poller:
        poller.register(sock.fileno(), select.EPOLLIN)
        poller.register(source_fd, select.EPOLLIN)
        last = closed_at = time.monotonic()
        while True:
            now = time.monotonic()
            limits = [] if source_open else [closed_at + linger - now]
            if idle is not None:
                limits.append(last + idle - now)
            timeout = max(0.0, min(limits)) if limits else -1.0
            if limits and timeout <= 0:
                return sent, received
            for fd, _mask in poller.poll(timeout):
                if fd == source_fd:
                    data = os.read(source_fd, MAX_DATAGRAM - 48)
                    if not data:
                        poller.unregister(source_fd)
                        source_open = False
                        closed_at = time.monotonic()
                        continue
                    try:
                        sock.send(data)
                        sent += 1
                    except (BlockingIOError, ConnectionRefusedError):
                        pass
                else:
                    while True:
                        try:
                            reply = sock.recv(MAX_DATAGRAM)
                        except (BlockingIOError, InterruptedError):
                            break
                        except ConnectionRefusedError:
                            continue  # ICMP port unreachable for an earlier datagram
                        received += 1
                        sink.write(reply)
                        sink.flush()
                        if not source_open:
                            closed_at = time.monotonic()
                last = time.monotonic()
