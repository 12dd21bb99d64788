"""The socket a prober sends from: unconnected, so one socket reaches every port of every host of a
family, with ``IP_RECVERR``/``IPV6_RECVERR`` so that ICMP errors come back as evidence.

Two kernel details shape it. Every ICMP error both joins the error queue and sets the socket's
pending error, which the next ``sendto`` or ``recvfrom`` reports (``ECONNREFUSED``,
``EHOSTUNREACH``, ``EACCES``...) instead of doing its work: reading
the error queue clears it, so a caller that drains after each send (``send_take``) never meets
it, and ``send`` retries once when it does. And the error queue shares the receive buffer: a
burst of thousands of errors that nobody reads is silently cut short, so the buffer is enlarged
and callers should drain as they go.
"""

from __future__ import annotations

import socket

from udpkit.net.errqueue import IcmpError, enable_errors, read_error, read_errors
from udpkit.net.mmsg import Batch, chosen, new_batch

__all__ = ["ProbeSocket", "is_local"]

_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # linux/in.h; it applies to IPv6 sockets as well
_RCVBUF = 8 << 20  # the kernel caps it at net.core.rmem_max for unprivileged users


class ProbeSocket:
    """A non-blocking UDP socket of ``family`` bound to ``source`` (default: any address, a free port)."""

    def __init__(self, family: int, source: tuple[str, int] | None = None, *, device: str | None = None,
                 freebind: bool = False) -> None:
        sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            enable_errors(sock)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            except OSError:
                pass
            if device:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
            if freebind:  # a source from a prefix routed to this host (AnyIP), not assigned address by address
                sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
            sock.bind(source or ("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        except BaseException:
            sock.close()
            raise
        self.family = family
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self._senders: dict[bytes, str | None] = {}  # raw SO_EE_OFFENDER -> address text
        # Quoted payload to read with each error: one byte more than the longest datagram sent, so
        # that a quote longer than anything we sent shows as one.
        self.quote = 1
        # replies() reads a batch per call once replies have come (made then: a scan of closed
        # ports never needs its 2 MiB)
        self._batch: Batch | None = None
        self._batch_kind = chosen()

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ProbeSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes, address: tuple[str, int]) -> bool:
        """Send one datagram; ``False`` when it could not leave (full buffer, no route)."""
        if len(data) >= self.quote:
            self.quote = len(data) + 1
        for _ in range(2):
            try:
                self.sock.sendto(data, address)
                return True
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                continue  # most likely an earlier datagram's ICMP error reported here (it is queued too)
        return False

    def send_take(self, data: bytes, address: tuple[str, int]) -> IcmpError | None:
        """``send``, then the error it drew: the fast path for this host's own addresses, whose ICMP
        errors are queued before ``sendto`` returns."""
        if len(data) >= self.quote:
            self.quote = len(data) + 1
        try:
            self.sock.sendto(data, address)
        except OSError:
            if not self.send(data, address):
                return None
        return read_error(self.sock, self._senders, self.quote)

    def errors(self, limit: int = 256) -> list[IcmpError]:
        """Up to ``limit`` queued ICMP errors (:func:`~udpkit.net.errqueue.read_errors`); never blocks."""
        return read_errors(self.sock, limit, self._senders, self.quote)

    def replies(self, limit: int = 256) -> list[tuple[bytes, str, int]]:
        """Up to ``limit`` datagrams that arrived, as ``(data, source ip, source port)``; never blocks.

        A batch per ``recvmmsg`` where the C extension is built (:mod:`udpkit.net.mmsg`), else one
        ``recvfrom`` each. An error reported in place of a datagram is skipped either way: it is
        read from the error queue, where it carries its sender."""
        if self._batch is not None:
            return self._replies_batched(self._batch, limit)
        found = []
        recvfrom = self.sock.recvfrom
        for _ in range(limit):
            try:
                data, peer = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # the pending error of a queued ICMP message, read from the error queue instead
            found.append((data, peer[0], peer[1]))
        if found and self._batch_kind is not None:  # replies come: read them in batches from now on
            self._batch, self._batch_kind = new_batch(32, 65536, False, kind=self._batch_kind), None
        return found

    def _replies_batched(self, batch: Batch, limit: int) -> list[tuple[bytes, str, int]]:
        found: list[tuple[bytes, str, int]] = []
        fd = self.sock.fileno()
        for _ in range(-(-limit // batch.count)):
            try:
                got = batch.receive(fd)
            except OSError:
                continue  # as in replies()
            found += [(record[0], record[1][0], record[1][1]) for record in got]
            if len(got) < batch.count:
                break
        return found



def is_local(ip: str) -> bool:
    """Whether ``ip`` is an address of this host (loopback included): its ICMP errors come back
    within the ``sendto`` call and are never rate-limited, so a prober reads them as it goes."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((ip, 0))
    except OSError:
        return False
    return True
