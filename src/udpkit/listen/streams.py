"""A session's byte-stream upstream: a program (socat's ``EXEC:``/``SYSTEM:``) or a TCP connection
(``TCP:HOST:PORT``, the UDP-to-TCP bridge). Each datagram from the peer is written to the stream as
it is; each read from the stream (up to ``READ_SIZE`` bytes, socat's default block) goes back to the
peer as one datagram. Framing (DNS over TCP's length prefix, say) is the user's business, as in socat.

Writes never block the event loop: what the stream cannot take yet waits in a buffer of at most
``MAX_PENDING`` bytes (beyond, datagrams are dropped and counted), flushed on later wake-ups.
Programs are ended with SIGTERM when their session ends and reaped without waiting (:func:`reap`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from typing import NamedTuple

from udpkit.net import tcp_upstream

__all__ = ["MAX_PENDING", "READ_SIZE", "StreamTarget", "StreamUpstream", "open_stream", "reap"]

READ_SIZE = 8192
MAX_PENDING = 1 << 16


class StreamTarget(NamedTuple):
    """Where a session's stream goes: ``argv`` (a program) or ``address`` (TCP, of ``family``)."""

    argv: tuple[str, ...] | None = None
    family: int = socket.AF_INET
    address: tuple[object, ...] | None = None

    def __str__(self) -> str:
        if self.argv is not None:
            return " ".join(self.argv)
        assert self.address is not None
        host, port = self.address[0], self.address[1]
        return f"tcp [{host}]:{port}" if self.family == socket.AF_INET6 else f"tcp {host}:{port}"


class StreamUpstream:
    """One session's stream: ``read_fd`` to watch, ``write`` datagrams in, ``read`` answers out."""

    def __init__(self, read_fd: int, write_fd: int, sock: socket.socket | None = None,
                 process: subprocess.Popen[bytes] | None = None) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self.sock, self.process = sock, process
        self.pending = b""
        self.dropped = 0

    def fileno(self) -> int:
        return self.read_fd

    def write(self, data: bytes) -> None:
        """Queue ``data`` and send what the stream takes now; ``OSError`` when it is gone (the program
        exited, the connection was refused or reset): the session then ends."""
        if len(self.pending) + len(data) > MAX_PENDING:
            self.dropped += 1
            return
        self.pending += data
        self.flush()

    def flush(self) -> None:
        while self.pending:
            try:
                sent = self.sock.send(self.pending) if self.sock is not None else os.write(self.write_fd, self.pending)
            except (BlockingIOError, InterruptedError):
                return
            self.pending = self.pending[sent:]

    def read(self) -> bytes | None:
        """Up to ``READ_SIZE`` bytes; ``b""`` at the end of the stream, ``None`` when nothing is there yet."""
        try:
            if self.sock is not None:
                return self.sock.recv(READ_SIZE)
            return os.read(self.read_fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            return
        for fd in {self.read_fd, self.write_fd}:
            try:
                os.close(fd)
            except OSError:
                pass
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            _ENDING.append(self.process)


_ENDING: list[subprocess.Popen[bytes]] = []


def reap() -> int:
    """Collect the programs of ended sessions that have exited since; the number still running."""
    _ENDING[:] = [p for p in _ENDING if p.poll() is None]
    return len(_ENDING)


def open_stream(target: StreamTarget) -> StreamUpstream:
    """Start the program or the connection; ``OSError`` when the kernel refuses (no such program, no
    descriptor left, no route)."""
    if target.argv is not None:
        process = subprocess.Popen(list(target.argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                                   close_fds=True)
        assert process.stdin is not None and process.stdout is not None
        read_fd, write_fd = os.dup(process.stdout.fileno()), os.dup(process.stdin.fileno())
        process.stdin.close()
        process.stdout.close()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        return StreamUpstream(read_fd, write_fd, process=process)
    assert target.address is not None
    sock = tcp_upstream(target.family, target.address)
    return StreamUpstream(sock.fileno(), sock.fileno(), sock=sock)
