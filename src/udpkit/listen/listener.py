"""The listener: bound UDP sockets driven by a plain non-blocking loop over ``epoll``.

Strategy: one ``epoll`` wait, then up to 64 ``recvmsg`` per ready socket before waiting again —
no asyncio (nor ``selectors``' per-event objects) on the receive path (DESIGN.md §3 measured asyncio's datagram protocol keeping 16 % of
a stream that a plain loop keeps 99.8 % of). Each datagram goes to the responder (a pure
``services`` object), its replies go back from the address the datagram came to, and the sink
records it. ``stop()`` may be called from any thread or a signal handler: it writes one byte to a
wake-up pipe the loop also watches.

Sessions (socat's ``fork``, done in-process): the first datagram from a new peer opens a socket
bound to the same local address and port and connected to that peer, so the kernel delivers that
peer's later datagrams to it (a connected socket is the better match) and ``ss`` shows it ESTAB.
The listening socket never closes, so there is no moment when the port is unbound; datagrams
the peer sent before its session existed are still read from the listening socket and handed
to the right session by the peer's address.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from udpkit.addr import Endpoint
from udpkit.errors import UdpkitError, UsageError
from udpkit.listen.sessions import Session, SessionKey, SessionTable
from udpkit.listen.sinks import Sink
from udpkit.net import (
    MAX_DATAGRAM,
    TIMESTAMP_SPACE,
    BindOptions,
    Datagram,
    bind_udp,
    count_and_forget,
    kernel_time,
    receive,
    send_reply,
    socket_drops,
)
from udpkit.services import Responder, responder

__all__ = ["Listener", "ListenerStats"]

BATCH = 64
_GONE = ("gone", None)
_IN, _BYTES_IN, _OUT, _BYTES_OUT, _REPLY_DROPS, _TRUNCATED, _REFUSED = range(7)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ListenerStats(NamedTuple):
    """What a listener has seen: datagrams and bytes in and out, distinct peers, sessions open now and
    in all, datagrams refused by ``allow``, replies the kernel would not take, datagrams cut short,
    and datagrams the kernel dropped because a receive queue was full (``SO_RXQ_OVFL``)."""

    datagrams_in: int = 0
    bytes_in: int = 0
    datagrams_out: int = 0
    bytes_out: int = 0
    peers: int = 0
    sessions_open: int = 0
    sessions_total: int = 0
    refused: int = 0
    replies_dropped: int = 0
    truncated: int = 0
    kernel_drops: int = 0

    def summary(self) -> str:
        text = (
            f"{self.datagrams_in} datagrams ({self.bytes_in} bytes) in, {self.datagrams_out} ({self.bytes_out} bytes)"
            f" out, {self.peers} peer{'s' if self.peers != 1 else ''}, {self.kernel_drops} dropped by the kernel"
        )
        if self.sessions_total:
            text += f", {self.sessions_total} sessions ({self.sessions_open} open)"
        if self.refused:
            text += f", {self.refused} refused"
        return text


class Listener:
    """Serve UDP on ``endpoints`` with a responder (or relay to an upstream); a context manager,
    runnable in the calling thread (``serve``) or a background one (``start``/``stop``/``join``).

    ``fork``: a session per peer (see the module docstring); ``idle_timeout`` ends quiet sessions,
    ``max_peers`` bounds them (the least recently active goes first); ``allow``: only these networks
    may talk to us (socat's ``range=``); ``relay``: forward each peer's datagrams to this upstream
    through the peer's own socket and send the answers back (sessions are implied);
    ``single_peer``: socat's UDP-LISTEN without fork — the first peer's address is connected to the
    listening socket and everyone else is refused by the kernel; ``input_fd``: what can be read
    from this descriptor (standard input, for socat's STDIO) is sent to the latest peer, once
    there is one.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        respond: str | Responder = "discard",
        bind: BindOptions = BindOptions(),
        sink: Sink | None = None,
        count: int | None = None,
        duration: float | None = None,
        fork: bool = False,
        idle_timeout: float | None = None,
        max_peers: int | None = None,
        allow: Sequence[Network] | None = None,
        relay: tuple[socket.AddressFamily, tuple[str, int]] | None = None,
        single_peer: bool = False,
        input_fd: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not endpoints:
            raise UsageError("nothing to listen on")
        if count is not None and count < 1:
            raise UsageError("--count must be at least 1")
        if duration is not None and duration <= 0:
            raise UsageError("--duration must be positive")
        if idle_timeout is not None and idle_timeout <= 0:
            raise UsageError("--idle-timeout must be positive")
        if max_peers is not None and max_peers < 1:
            raise UsageError("--max-peers must be at least 1")
        self.endpoints = list(endpoints)
        self.responder = responder(respond) if isinstance(respond, str) else respond
        self.sessions_on = fork or relay is not None
        # Session sockets share the listening port: both sides need SO_REUSEADDR before binding.
        self.bind_options = bind._replace(reuseaddr=True) if self.sessions_on else bind
        # Nothing to answer or route, and at most the raw bytes to record: read datagrams without
        # building an object for each (the listening sockets without sessions; the session sockets).
        silent = not getattr(self.responder, "replies", True) and relay is None
        raw_only = sink is None or sink.format == "raw"
        self.input_fd = input_fd
        self._fast_sessions = silent and raw_only and input_fd is None
        self._fast_listening = self._fast_sessions and not self.sessions_on and not single_peer and allow is None
        self._recording_only = (silent and sink is not None and sink.format != "raw" and not self.sessions_on
                                and not single_peer and allow is None)
        # Ask the kernel per datagram only for what is used: receive times for a recording or a
        # time service, destination addresses to answer a wildcard-bound peer from the right one.
        needs_time = (sink is not None and sink.format != "raw") or getattr(self.responder, "uses_time", True)
        needs_local = sink is not None and sink.format != "raw"
        self._timestamps = needs_time and not self._fast_listening
        self._pktinfo_needed = needs_local or not silent
        self.bind_options = self.bind_options._replace(timestamps=self._timestamps, pktinfo=False)
        self._buffer = bytearray(65536)
        self.sink = sink
        self.count = count
        self.duration = duration
        self.idle_timeout = idle_timeout
        self.max_peers = max_peers
        self.allow = list(allow) if allow else None
        self.relay = relay
        self.single_peer = single_peer
        self._only_peer: tuple[str, int] | None = None
        self.clock = clock
        self._sockets: list[socket.socket] = []
        self._plain: list[bool] = []  # per listening socket: may it take the recvfrom/sendto path?
        self._timed: list[bool] = []  # ... or the same with the kernel's receive time (NTP)
        self._strays: list[tuple[int, Datagram]] = []
        self._bound: list[Endpoint] = []
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._counts = [0] * 7
        self._peers: set[tuple[str, int]] = set()
        self._drops: dict[int, int] = {}
        self._sessions = SessionTable(idle_timeout, max_peers)
        self._poller: select.epoll | None = None
        self._handlers: dict[int, tuple[str, Any]] = {}
        self._session_drops = 0  # the open sessions' sockets, as of the last look
        self._single: socket.socket | None = None  # the socket _serve_one is blocked on
        self._latest: SessionKey | None = None  # the latest peer (and its listening socket), for input_fd
        self._stopping = False
        self._ended_session_drops = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> list[Endpoint]:
        """Bind every endpoint (all or none) and return where we really listen (port 0 resolved)."""
        shared_port = 0
        try:
            for ep in self.endpoints:
                options = self._options_for(ep)
                sock = self._bind_same_port(ep, shared_port, options) if ep.port == 0 else bind_udp(ep, options)
                if ep.port == 0 and not shared_port:
                    shared_port = sock.getsockname()[1]
                self._sockets.append(sock)
                simple = not (options.pktinfo or self.sessions_on or self.single_peer or self.sink is not None
                              or self.allow is not None or self.input_fd is not None)
                self._plain.append(simple and not options.timestamps)
                self._timed.append(simple and options.timestamps)
                host, port = sock.getsockname()[:2]
                self._bound.append(Endpoint(host, port, ep.family, self.bind_options.device or ep.interface))
        except BaseException:
            self.close()
            raise
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        return list(self._bound)

    def _options_for(self, ep: Endpoint) -> BindOptions:
        """A wildcard-bound socket needs each datagram's destination address (to answer from it,
        or to record it, or to bind a session to it); a socket bound to one address knows it."""
        wildcard = ep.ip in ("0.0.0.0", "::")
        return self.bind_options._replace(pktinfo=wildcard and (self._pktinfo_needed or self.sessions_on))

    def _bind_same_port(self, ep: Endpoint, port: int, options: BindOptions) -> socket.socket:
        """Port 0 on both families: give the second socket the port the kernel chose for the first,
        so ``udpkit listen`` prints one port; a port taken in the other family falls back to any."""
        if port:
            try:
                return bind_udp(ep._replace(port=port), options)
            except UdpkitError:
                pass
        return bind_udp(ep, options)

    @property
    def bound(self) -> list[Endpoint]:
        return list(self._bound)

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._sockets)

    def close(self) -> None:
        for session in self._sessions:
            self._end_session(session.key)
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        self._plain.clear()
        self._timed.clear()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self.sink is not None:
            self.sink.flush()

    def __enter__(self) -> Listener:
        if not self._sockets:
            self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join()
        self.close()

    def stop(self) -> None:
        """Ask the loop to finish (safe from another thread or a signal handler)."""
        self._stopping = True
        single = self._single
        if single is not None:
            try:
                single.shutdown(socket.SHUT_RD)  # wakes a blocked recvfrom; reception goes on
            except OSError:
                pass
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def start(self) -> None:
        """Serve in a background thread (for in-process harnesses and tests)."""
        if not self._sockets:
            self.open()
        self._thread = threading.Thread(target=self._serve_in_thread, name="udpkit-listener", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = 10.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _serve_in_thread(self) -> None:
        try:
            self.serve()
        except BaseException as exc:  # surfaced by join()
            self._error = exc

    def _read_drops(self) -> None:
        """Ask the kernel for each listening socket's drop count (``SO_MEMINFO``): exact even for
        drops after the last datagram, which ``SO_RXQ_OVFL`` only reports with a later datagram."""
        for index, sock in enumerate(self._sockets):
            if sock.fileno() < 0:
                continue
            drops = socket_drops(sock)
            if drops is not None:
                self._drops[index] = max(self._drops.get(index, 0), drops)
        self._session_drops = sum(socket_drops(s.down) or 0 for s in self._sessions)

    @property
    def stats(self) -> ListenerStats:
        self._read_drops()
        c = self._counts
        return ListenerStats(
            datagrams_in=c[_IN], bytes_in=c[_BYTES_IN], datagrams_out=c[_OUT], bytes_out=c[_BYTES_OUT],
            peers=len(self._peers), sessions_open=len(self._sessions), sessions_total=self._sessions.total,
            refused=c[_REFUSED], replies_dropped=c[_REPLY_DROPS], truncated=c[_TRUNCATED],
            kernel_drops=sum(self._drops.values()) + self._ended_session_drops + self._session_drops,
        )

    def session_peers(self) -> list[Endpoint]:
        """The peers that have a session open now, least recently active first."""
        return [s.peer for s in self._sessions]

    # -- the loop --------------------------------------------------------------------------------
    def serve(self) -> ListenerStats:
        """Run until ``stop()``, ``count`` datagrams, or ``duration`` seconds; return the statistics."""
        if not self._sockets:
            self.open()
        deadline = None if self.duration is None else time.monotonic() + self.duration
        if len(self._sockets) == 1 and self._plain[0] and not self._stopping:
            return self._serve_one(deadline)
        # epoll itself rather than ``selectors``: its wrapper costs a few µs per wake-up, a third of
        # an echo round trip's Python time (``bench/listen_bench.py``).
        with select.epoll() as poller:
            self._poller = poller
            for index, sock in enumerate(self._sockets):
                self._watch(sock, ("listen", index))
            poller.register(self._wake_r, select.EPOLLIN)
            self._handlers[self._wake_r] = ("wake", None)
            try:
                while not self._step(poller, deadline):
                    pass
            finally:
                self._poller = None
                self._handlers.clear()
        if self.sink is not None:
            self.sink.flush()
        return self.stats

    def _serve_one(self, deadline: float | None) -> ListenerStats:
        """One socket answered datagram by datagram (echo, daytime, time on one address): a blocking
        ``recvfrom`` needs no ``epoll`` wake-up and no failed read per request — an echo round trip
        costs what a bare Python loop's does. ``stop()`` wakes the call with ``shutdown(SHUT_RD)``,
        which on an unconnected UDP socket only interrupts the wait (it returns ``(b"", None)``)."""
        sock = self._sockets[0]
        recvfrom, answer = sock.recvfrom, self._plain_answerer(0, sock)
        self._single = sock
        try:
            while not self._stopping:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    sock.settimeout(left)
                else:
                    sock.settimeout(None)
                try:
                    data, peer = recvfrom(MAX_DATAGRAM)
                except TimeoutError:
                    continue
                except (ConnectionRefusedError, InterruptedError):
                    continue
                if peer is None:  # woken by stop()
                    continue
                if answer(data, peer):
                    break
        finally:
            self._single = None
            sock.setblocking(False)
        return self.stats

    def _watch(self, sock: socket.socket, tag: tuple[str, Any]) -> None:
        self._watch_fd(sock.fileno(), tag)

    def _watch_fd(self, fd: int, tag: tuple[str, Any]) -> None:
        if self._poller is not None:
            self._poller.register(fd, select.EPOLLIN)
            self._handlers[fd] = tag

    def _from_input(self) -> None:
        """Send what ``input_fd`` has for us to the latest peer: socat's STDIO, the typing direction."""
        assert self.input_fd is not None and self._latest is not None
        data = os.read(self.input_fd, MAX_DATAGRAM - 28)
        if not data:  # end of input: stop watching it, keep serving
            if self._poller is not None:
                self._poller.unregister(self.input_fd)
            self._handlers.pop(self.input_fd, None)
            return
        index, peer = self._latest
        session = self._sessions.get(self._latest)
        if session is not None:
            self._send(session.down, data, None, None)
        elif self.single_peer:
            self._send(self._sockets[index], data, None, None)  # connected to the peer
        else:
            self._send(self._sockets[index], data, peer, None)

    def _unwatch(self, sock: socket.socket) -> None:
        if self._poller is not None and self._handlers.pop(sock.fileno(), None) is not None:
            self._poller.unregister(sock.fileno())

    def _step(self, poller: select.epoll, deadline: float | None) -> bool:
        """Wait once and handle what is ready; ``True`` when the loop should end."""
        timeout = -1.0
        if deadline is not None or self._sessions:
            now = time.monotonic()
            if deadline is not None:
                timeout = max(0.0, deadline - now)
            expiry = self._sessions.next_expiry()
            if expiry is not None:
                timeout = max(0.0, expiry - now) if timeout < 0 else min(timeout, max(0.0, expiry - now))
        events = poller.poll(timeout)
        done = False
        handlers = self._handlers
        for fd, _mask in events:
            tag = handlers.get(fd, _GONE)  # gone: a session ended by an earlier event in this batch
            if tag[0] == "wake":
                os.read(self._wake_r, 4096)
                done = True
            elif tag[0] == "listen":
                done = self._from_listening(tag[1]) or done
            elif tag[0] == "down":
                done = self._from_session(tag[1]) or done
            elif tag[0] == "up":
                self._from_upstream(tag[1])
            elif tag[0] == "input":
                self._from_input()
        if events and self.sink is not None:
            self.sink.flush()  # once per wake-up, not per datagram: a reader sees data promptly, cheaply
        if self.idle_timeout is not None and self._sessions:
            for key in self._sessions.expired(time.monotonic()):
                self._end_session(key)
        return done or (deadline is not None and time.monotonic() >= deadline)

    def _from_listening(self, index: int) -> bool:
        sock = self._sockets[index]
        if self._fast_listening:
            return self._drain_fast(sock)
        if self._plain[index]:
            return self._drain_plain(index, sock)
        if self._timed[index]:
            return self._drain_timed(index, sock)
        if self._recording_only:
            return self._drain_recording(index, sock)
        for dgram in receive(sock, BATCH, ancillary=self._timestamps or self._pktinfo_needed or self.sessions_on):
            if self._route(index, dgram):
                return True
            while self._strays:  # other peers' datagrams a new session socket caught: route them too
                if self._route(*self._strays.pop(0)):
                    return True
        return False

    def _route(self, index: int, dgram: Datagram) -> bool:
        """One datagram from a peer, as the listening socket ``index`` would take it: filter, count,
        find or open its session, answer. ``True`` once ``count`` datagrams have been handled."""
        sock = self._sockets[index]
        if self.allow is not None and not self._allowed(dgram.peer[0]):
            self._counts[_REFUSED] += 1
            return False
        if self.single_peer:
            if self._only_peer is None:
                sock.connect(dgram.peer)
                self._only_peer = dgram.peer
            elif dgram.peer != self._only_peer:
                self._counts[_REFUSED] += 1  # queued before we connected to the first peer
                return False
        done = self._count_in(index, dgram)
        if self.input_fd is not None:
            if self._latest is None:
                self._watch_fd(self.input_fd, ("input", None))
            self._latest = (index, dgram.peer)
        session = None
        if self.sessions_on:
            session = self._sessions.get((index, dgram.peer)) or self._open_session(index, dgram)
        if session is not None:
            self._handle(session.down, session, dgram, session.local)
        else:
            local = self._bound[index]
            to = local if dgram.local_ip is None else local._replace(ip=dgram.local_ip)
            self._handle(sock, None, dgram, to)
        return done  # the count-th datagram is answered before we stop

    def _drain_recording(self, index: int, sock: socket.socket) -> bool:
        """Record each datagram and nothing more (a silent responder, no sessions or filters): the
        recording formats' path, without the per-datagram routing of ``_route``."""
        assert self.sink is not None
        write, clock = self.sink.write_fields, self.clock
        local = self._bound[index]
        counts, add = self._counts, self._peers.add
        for dgram in receive(sock, BATCH, ancillary=True):
            data = dgram.data
            counts[_IN] += 1
            counts[_BYTES_IN] += len(data)
            add(dgram.peer)
            when = dgram.timestamp if dgram.timestamp is not None else clock()
            write(when, dgram.peer[0], dgram.peer[1], dgram.local_ip or local.ip, local.port, data)
            if self.count is not None and counts[_IN] >= self.count:
                return True
        return False

    def _drain_plain(self, index: int, sock: socket.socket) -> bool:
        """Answer each datagram with ``recvfrom``/``sendto`` and nothing else: the path of a responder
        that needs neither receive times nor destination addresses (echo on a bound address)."""
        recvfrom, answer = sock.recvfrom, self._plain_answerer(index, sock)
        for _ in range(BATCH):
            try:
                data, peer = recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                continue
            if answer(data, peer):
                return True
        return False

    def _drain_timed(self, index: int, sock: socket.socket) -> bool:
        """The plain path with each datagram's kernel receive time (``SO_TIMESTAMPNS``), for a time
        service on a socket bound to one address: ``recvmsg``, the responder, ``sendto``."""
        recvmsg, answer = sock.recvmsg, self._plain_answerer(index, sock)
        space = TIMESTAMP_SPACE
        for _ in range(BATCH):
            try:
                data, ancillary, _flags, peer = recvmsg(MAX_DATAGRAM, space)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                continue
            if answer(data, peer, kernel_time(ancillary)):
                return True
        return False

    def _plain_answerer(self, index: int, sock: socket.socket) -> Callable[..., bool]:
        """The per-datagram work of the plain paths: count, answer with ``sendto``; the function
        returns ``True`` once ``count`` datagrams have been handled."""
        sendto, handle = sock.sendto, self.responder.handle
        family = self._bound[index].family
        counts, add, clock, count = self._counts, self._peers.add, self.clock, self.count
        finish = getattr(self.responder, "finish", None)

        def answer(data: bytes, peer: Any, now: float | None = None) -> bool:
            counts[_IN] += 1
            counts[_BYTES_IN] += len(data)
            add(peer[:2])
            reply = handle(data, Endpoint(peer[0], peer[1], family), clock() if now is None else now)
            for payload in () if reply is None else [reply] if isinstance(reply, bytes) else reply:
                if finish is not None:
                    payload = finish(payload, clock())
                try:
                    sendto(payload, peer)
                    counts[_OUT] += 1
                    counts[_BYTES_OUT] += len(payload)
                except OSError:
                    counts[_REPLY_DROPS] += 1
            return count is not None and counts[_IN] >= count

        return answer

    def _drain_fast(self, sock: socket.socket, session: Session | None = None) -> bool:
        """Read without a per-datagram object (see ``_fast_listening``); ``True`` once ``count`` is reached.

        On a session's socket, datagrams from anyone but its peer (queued before its ``connect()``)
        are routed like the listening socket's, so no session handles another peer's datagram.
        """
        limit = BATCH * 16 if self.count is None else min(BATCH * 16, self.count - self._counts[_IN])
        write = None if self.sink is None else self.sink.stream.write
        strays: list[tuple[bytes, tuple[str, int]]] = []
        expect = None if session is None else session.key[1]
        n, nbytes = count_and_forget(sock, limit, self._buffer, self._peers, write, expect, strays)
        self._counts[_IN] += n
        self._counts[_BYTES_IN] += nbytes
        done = self.count is not None and self._counts[_IN] >= self.count
        for data, peer in strays:
            assert session is not None
            done = self._route(session.key[0], Datagram(data, peer, session.local.ip, None, None)) or done
        return done

    def _from_session(self, key: SessionKey) -> bool:
        session = self._sessions.get(key)
        if session is None:
            return False
        if self._fast_sessions:
            self._touch(key)
            return self._drain_fast(session.down, session)
        for dgram in receive(session.down, BATCH, ancillary=self._timestamps):
            if dgram.peer != key[1]:  # queued here before connect(): route it by its real sender
                if self._route(key[0], dgram._replace(local_ip=session.local.ip)):
                    return True
                continue
            done = self._count_in(key[0], dgram)
            self._handle(session.down, session, dgram, session.local)
            if done:
                return True
        return False

    def _from_upstream(self, key: SessionKey) -> None:
        session = self._sessions.get(key)
        if session is None or session.up is None:
            return
        for dgram in receive(session.up, BATCH, ancillary=False):
            self._touch(key)
            self._send(session.down, dgram.data, None, None)

    def _count_in(self, index: int, dgram: Datagram) -> bool:
        """Statistics for one datagram from a peer; ``True`` once ``count`` is reached."""
        counts = self._counts
        counts[_IN] += 1
        counts[_BYTES_IN] += len(dgram.data)
        if dgram.truncated:
            counts[_TRUNCATED] += 1
        if dgram.drops is not None:
            self._drops[index] = max(self._drops.get(index, 0), dgram.drops)
        self._peers.add(dgram.peer)
        return self.count is not None and counts[_IN] >= self.count

    def _handle(self, sock: socket.socket, session: Session | None, dgram: Datagram, local: Endpoint) -> None:
        now = dgram.timestamp if dgram.timestamp is not None else self.clock()
        peer = Endpoint(dgram.peer[0], dgram.peer[1], local.family)
        if self.sink is not None:
            self.sink.write(now, peer, local, dgram.data)
        if session is not None:
            self._touch(session.key)
            if session.up is not None:
                self._send(session.up, dgram.data, None, None, count=False)
                return
        reply = self.responder.handle(dgram.data, peer, now)
        if reply is None:
            return
        finish = getattr(self.responder, "finish", None)  # NTP's transmit timestamp, read at the last moment
        for payload in [reply] if isinstance(reply, bytes) else reply:
            if finish is not None:
                payload = finish(payload, self.clock())
            if session is not None:
                self._send(sock, payload, None, None)
            else:
                self._send(sock, payload, dgram.peer, dgram.local_ip)

    def _send(self, sock: socket.socket, payload: bytes, peer: tuple[str, int] | None, source: str | None,
              *, count: bool = True) -> None:
        if peer is None:
            try:
                sock.send(payload)
                sent = True
            except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                sent = False
            except OSError:
                sent = False
        else:
            sent = send_reply(sock, payload, peer, source)
        if not count:
            return
        if sent:
            self._counts[_OUT] += 1
            self._counts[_BYTES_OUT] += len(payload)
        else:
            self._counts[_REPLY_DROPS] += 1

    def _allowed(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        return any(address in net or (mapped is not None and mapped in net) for net in self.allow or ())

    # -- sessions --------------------------------------------------------------------------------
    def _open_session(self, index: int, dgram: Datagram) -> Session | None:
        """A socket of the peer's own (bound to our address and port, connected to the peer); ``None``
        if the kernel refuses one, and the datagram is then answered from the listening socket."""
        oldest = self._sessions.oldest()
        if self._sessions.full() and oldest is not None:
            self._end_session(oldest.key)  # the least recently active
        listening = self._bound[index]
        local = listening if dgram.local_ip is None else listening._replace(ip=dgram.local_ip)
        try:
            down = bind_udp(local, self.bind_options._replace(reuseaddr=True, pktinfo=False))
        except UdpkitError:
            return None
        up = None
        try:
            down.connect(dgram.peer)
            # Between bind() and connect() the new socket was an unconnected twin of the listening
            # one and may have caught other peers' datagrams: they go back to routing, by their
            # real sender, so none is handled by the wrong session.
            self._strays.extend((index, stray._replace(local_ip=local.ip))
                                for stray in receive(down, 1 << 16, ancillary=False))
            if self.relay is not None:
                up = socket.socket(self.relay[0], socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
                up.connect(self.relay[1])
        except OSError:
            down.close()
            if up is not None:
                up.close()
            return None
        key = (index, dgram.peer)
        session = Session(key, down, up, local, Endpoint(dgram.peer[0], dgram.peer[1], listening.family))
        self._sessions.add(session, time.monotonic())
        self._watch(down, ("down", key))
        if up is not None:
            self._watch(up, ("up", key))
        return session

    def _touch(self, key: SessionKey) -> None:
        self._sessions.touch(key, time.monotonic())

    def _end_session(self, key: SessionKey) -> None:
        session = self._sessions.pop(key)
        if session is None:
            return
        self._ended_session_drops += socket_drops(session.down) or 0
        for sock in (session.down, session.up):
            if sock is None:
                continue
            self._unwatch(sock)
            sock.close()
