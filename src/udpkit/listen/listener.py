"""The listener: bound UDP sockets served by a responder, a relay or a sink — the facade over the
rooms of ``listen/`` (config, reactor, receive paths, sessions, statistics).

Strategy: one ``epoll`` wait (:mod:`~udpkit.listen.reactor`), then up to 64 datagrams per ready
socket on the path :func:`~udpkit.listen.paths.choose_path` picked for it. Each datagram goes to
the responder (a pure ``services`` object), its replies go back from the address the datagram came
to, and the sink records it.

In the field: nothing a peer sends or provokes ends the loop. Datagrams to multicast or broadcast
addresses are recorded but never answered, opened a session for or relayed; an ICMP error that
surfaces on a socket is counted (and ends that session only); a reply the kernel refuses is
counted; a responder that fails on a datagram is counted; sessions are capped and expire by
default (:mod:`~udpkit.listen.config`); distinct peers are counted in bounded memory.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from itertools import chain
from typing import Any

from udpkit.addr import Endpoint
from udpkit.errors import UdpkitError
from udpkit.listen import paths
from udpkit.listen.config import DEFAULT_BUSY_POLL_US, ListenerConfig, Network
from udpkit.listen.reactor import Reactor
from udpkit.listen.sessions import Session, SessionKey, SessionTable
from udpkit.listen.streams import StreamTarget, StreamUpstream, reap
from udpkit.listen.sinks import BATCH_FORMATS, Sink
from udpkit.listen.stats import Counters, ListenerStats, PeerTally
from udpkit.net import (
    MAX_DATAGRAM,
    BindOptions,
    Datagram,
    bind_udp,
    count_and_forget,
    error_name,
    receive,
    send_reply,
    socket_drops,
)
from udpkit.net.loops import drain_plain, drain_timed, serve_beside_main, serve_blocking
from udpkit.net.mmsg import MSG_WAITFORONE, NTP_TIME_TRAILER, Batch, CtypesBatch, new_batch
from udpkit.services import Responder, responder
from udpkit.services.base import capabilities

__all__ = ["Listener", "ListenerStats"]

BATCH = 64
#: Rounds one blocking call gives one socket of several before the others are looked at (the epoll
#: path's 16 batches a wake-up): a flood on one family keeps the other waiting that long at most.
SET_ROUNDS = 16
_NO_PEER = object()
#: sendmmsg messages sent per fresh trailer: the transmit time's age bound (see _send_batch)
TRAILER_MESSAGES = 16


class Listener:
    """Serve UDP on ``endpoints`` with a responder (or relay to an upstream); a context manager,
    runnable in the calling thread (``serve``) or a background one (``start``/``stop``/``join``).

    ``fork``: a session per peer (see :mod:`~udpkit.listen.sessions`); ``idle_timeout`` ends quiet
    sessions (default 60 s; 0: never), ``max_peers`` bounds them (default: what the open-files limit
    allows; the least recently active goes first); ``allow``: only these networks may talk to us
    (socat's ``range=``); ``relay``: forward each peer's datagrams to this upstream through the
    peer's own socket and send the answers back (sessions are implied); ``single_peer``: socat's
    UDP-LISTEN without fork — the first peer's address is connected to the listening socket and
    everyone else is refused by the kernel; ``input_fd``: what can be read from this descriptor
    (standard input, for socat's STDIO) is sent to the latest peer, once there is one;
    ``answer_groups``: the responder also answers datagrams sent to a multicast or broadcast address
    (from a unicast address of ours, never through a session or a relay) — off by default;
    ``answer_multicast``/``answer_broadcast``: the same for one kind only (``--join``, ``--broadcast``);
    ``tap``: shown every datagram in and out (``True``: out) with its session's key (``None`` without
    sessions) — socat's ``-v``/``-x``; it takes every datagram through the general path;
    ``stream``: each session's datagrams go to a program or a TCP connection of its own, whose output
    comes back as datagrams (socat's ``EXEC:``, ``SYSTEM:``, ``TCP:``; see :mod:`~udpkit.listen.streams`);
    ``stop_after_session``: one session only (socat without ``fork``): other peers are refused while
    it lasts, and the listener stops when it ends; ``busy_poll_us``: how long a listener that answers
    on one socket polls for the next request before it sleeps (default 50; 0: never; see
    ``Batch.busy_poll_ns``).
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
        answer_groups: bool = False,
        answer_multicast: bool = False,
        answer_broadcast: bool = False,
        tap: Callable[[bytes, bool, object], None] | None = None,
        stream: StreamTarget | None = None,
        stop_after_session: bool = False,
        busy_poll_us: int = DEFAULT_BUSY_POLL_US,
        clock: Callable[[], float] = time.time,
        config: ListenerConfig | None = None,
    ) -> None:
        if config is None:
            config = ListenerConfig.checked(
                tuple(endpoints), bind=bind, count=count, duration=duration, fork=fork, idle_timeout=idle_timeout,
                max_sessions=max_peers, allow=tuple(allow) if allow else None, relay=relay,
                single_peer=single_peer, input_fd=input_fd, answer_groups=answer_groups,
                answer_multicast=answer_multicast, answer_broadcast=answer_broadcast, stream=stream,
                stop_after_session=stop_after_session, busy_poll_us=busy_poll_us)
        self.config = config
        self.responder = responder(respond) if isinstance(respond, str) else respond
        self.capabilities = capabilities(self.responder)
        self.sink = sink
        self.tap = tap
        self.clock = clock
        caps = self.capabilities
        self._silent = not caps.replies and config.relay is None and config.stream is None
        self._finished = False  # stop_after_session: the one session ended
        self._routed = (config.sessions or config.single_peer or config.allow is not None
                        or config.input_fd is not None or tap is not None)
        sink_format = None if sink is None else sink.format
        # Ask the kernel per datagram only for what is used: receive times for a recording or a
        # time service; destinations (per socket, see _options_for) to answer from the right address.
        self._timestamps = (sink_format not in (None, "raw")) or (caps.uses_time and not self._silent)
        bind_options = config.bind._replace(timestamps=self._timestamps, pktinfo=False)
        # Session sockets share the listening port: both sides need SO_REUSEADDR before binding.
        self.bind_options = bind_options._replace(reuseaddr=True) if config.sessions else bind_options
        self._sockets: list[socket.socket] = []
        self._paths: list[str] = []
        self._bound: list[Endpoint] = []
        # Every path reads a batch per system call (recvmmsg; sendmmsg for the plain, timed and
        # blocking paths' replies) when the C extension is built — see net.mmsg.chosen — into
        # this one batch, whose records are copies: each is used up before the next call. Without
        # it, the discard path reads into one buffer with recvfrom_into, the others one recvmsg each.
        self._batch: Batch | None = None
        try:
            self._batch = new_batch(BATCH, 65536, ancillary=True)
        except (OSError, MemoryError):
            pass
        # On one socket, the C batch's blocking waits poll a while for the next request before they
        # sleep (see Batch.busy_poll_ns); ctypes' waits do not
        self._busy_poll = self._batch is not None and hasattr(self._batch, "busy_poll_ns")
        if self._busy_poll:
            self._batch.busy_poll_ns = config.busy_poll_us * 1000  # type: ignore[union-attr]
        self._buffer: bytearray | Batch = self._batch if self._batch is not None else bytearray(65536)
        # a recording in raw, pcap or jsonl is formatted by the C batch as it reads (Sink.take_batch)
        self._record: Callable[..., tuple[int, int, list[Any]]] | None = (
            getattr(self._batch, "record", None) if sink_format in BATCH_FORMATS else None)
        self._reactor = Reactor()
        self.counts = Counters()
        self._peers = PeerTally()
        # the senders Batch.reflect and answer_ntp find, added to _peers after each call (stats counts them meanwhile)
        self._pending_peers: list[Any] = []
        self._drops: dict[int, int] = {}
        self._sessions = SessionTable(config.idle_timeout, config.max_sessions)
        self._session_drops = 0  # the open sessions' sockets, as of the last look
        self._ended_session_drops = 0
        self._strays: list[tuple[int, Datagram]] = []
        self._only_peer: tuple[Any, ...] | None = None
        self._waiting: tuple[socket.socket, ...] = ()  # the sockets whose blocking receives stop() wakes
        # An echo on several sockets: each socket's thread beyond the first, its batch and the senders its
        # calls find (see _reflect_each); what the calls leave to Python runs under this lock
        self._others: list[tuple[Batch, list[Any]]] = []
        self._lock = threading.Lock()
        self._answerers: dict[int, Callable[..., bool]] = {}  # per listening socket: _plain_answerer's
        self._latest: SessionKey | None = None  # the latest peer (and its listening socket), for input_fd
        # A relay's sessions forward whole batches in one call each (Batch.forward) when nothing
        # must see each datagram: no tap, recording, standard input or count to stop at.
        self._forwards = (self._batch is not None and config.relay is not None and tap is None and sink is None
                          and config.input_fd is None and config.count is None)

    # -- what the facade shows -------------------------------------------------------------------
    @property
    def endpoints(self) -> list[Endpoint]:
        return list(self.config.endpoints)

    @property
    def bound(self) -> list[Endpoint]:
        return list(self._bound)

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._sockets)

    @property
    def paths(self) -> list[str]:
        """The receive path of each listening socket (``--debug`` shows them)."""
        return list(self._paths)

    @property
    def stats(self) -> ListenerStats:
        self._read_drops()
        c = self.counts
        faults = dict(c.faults)
        if self.sink is not None and self.sink.not_recorded:
            faults["not_recorded"] = self.sink.not_recorded
        # What Batch.reflect echoed lives in the batches (up to date while their loops wait in C)
        reflected = [sum(totals) for totals in zip((0, 0, 0, 0), *(
            (b.reflected_in, b.reflected_in_bytes, b.reflected_out, b.reflected_out_bytes) for b in self._batches()))]
        return ListenerStats(
            datagrams_in=c.datagrams_in + reflected[0], bytes_in=c.bytes_in + reflected[1],
            datagrams_out=c.datagrams_out + reflected[2], bytes_out=c.bytes_out + reflected[3],
            peers=self._peers.count_with(chain(self._pending_peers, *(senders for _b, senders in self._others))),
            sessions_open=len(self._sessions),
            sessions_total=self._sessions.total,
            refused=c.refused, replies_dropped=sum(v for k, v in faults.items() if k.startswith("reply_failed")),
            truncated=c.truncated,
            kernel_drops=sum(self._drops.values()) + self._ended_session_drops + self._session_drops,
            peers_estimated=self._peers.estimated, faults=faults,
            responder=dict(self.capabilities.stats), responder_name=getattr(self.responder, "name", ""),
        )

    def busy_poll(self) -> tuple[int, int, int] | None:
        """What the one-socket wait's busy poll did (see ``Batch.busy_poll_ns``), when it can poll:
        (requests it caught awake, windows that ran out, polls cut short because the core was
        wanted); ``--debug`` shows them at the end."""
        if not self._busy_poll:
            return None
        caught, idle, preempted = zip(*((b.spin_caught, b.spin_idle, b.spin_preempted)  # type: ignore[attr-defined]
                                        for b in self._batches()))
        return sum(caught), sum(idle), sum(preempted)

    def _batches(self) -> list[Batch]:
        """The listening batch and those of an echo's other threads (see :meth:`_reflect_each`)."""
        return [b for b in (self._batch, *(b for b, _senders in self._others)) if b is not None]

    def session_peers(self) -> list[Endpoint]:
        """The peers that have a session open now, least recently active first."""
        return [s.peer for s in self._sessions]

    def twin(self, endpoints: Sequence[Endpoint]) -> Listener:
        """A listener like this one on ``endpoints`` (a ``--workers`` process's own), without the sink."""
        from dataclasses import replace

        return Listener((), respond=self.responder, clock=self.clock,
                        config=replace(self.config, endpoints=tuple(endpoints)))

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> list[Endpoint]:
        """Bind every endpoint (all or none) and return where we really listen (port 0 resolved)."""
        shared_port = 0
        sink_format = None if self.sink is None else self.sink.format
        try:
            for ep in self.config.endpoints:
                options = self._options_for(ep)
                sock = self._bind_same_port(ep, shared_port, options) if ep.port == 0 else bind_udp(ep, options)
                if ep.port == 0 and not shared_port:
                    shared_port = sock.getsockname()[1]
                self._sockets.append(sock)
                host, port = sock.getsockname()[:2]
                self._bound.append(Endpoint(host, port, ep.family, self.bind_options.device or ep.interface))
            for ep in self._bound:
                self._paths.append(paths.choose_path(
                    replies=not self._silent, uses_time=self.capabilities.uses_time, sink_format=sink_format,
                    routed=self._routed, bound_ip=ep.ip, sockets=len(self._bound)))
        except BaseException:
            self.close()
            raise
        self._reactor.open()
        return list(self._bound)

    def receive_paths(self) -> list[str]:
        """How each listening socket is read (after ``open``), e.g.
        ``udp 0.0.0.0:123: wildcard, recvmmsg x64 (C extension) and sendmmsg``."""
        kind = "ctypes" if isinstance(self._batch, CtypesBatch) else "C extension"
        batched = f"recvmmsg x{self._batch.count} ({kind})" if self._batch is not None else None
        plain = {paths.DISCARD: "recvfrom_into", paths.PLAIN: "recvfrom and sendto", paths.TIMED: "recvmsg and sendto",
                 paths.BLOCKING: "blocking recvfrom and sendto"}
        out = []
        for ep, path in zip(self._bound, self._paths):
            if batched is None:
                how = plain.get(path, "recvmsg")
            elif path in (paths.PLAIN, paths.BLOCKING, paths.WILDCARD) and self._reflect_from() is not None:
                how = batched + " echoed in the same call (reflect) with sendmmsg"
            elif path in (paths.PLAIN, paths.TIMED, paths.WILDCARD) and self._ntp_template() is not None:
                how = batched + " answered in the same call (answer_ntp) with sendmmsg"
            elif path in (paths.PLAIN, paths.TIMED, paths.BLOCKING, paths.WILDCARD) and \
                    self._kept_answers() is not None:
                fresh = " and the responder's answers for new requests" if len(self._kept_answers()) > 2 else ""
                how = batched + f" answered in the same call from kept answers{fresh} (answer_kept) with sendmmsg"
            elif path in (paths.DISCARD, paths.RECORDING) and self._record is not None:
                assert self.sink is not None
                how = batched + f" recorded as {self.sink.format} in the same call (record)"
            else:
                how = batched + (" and sendmmsg" if path in (paths.PLAIN, paths.TIMED, paths.BLOCKING, paths.WILDCARD)
                                 else "")
            if self._blocks() and self._busy_poll:
                if self._reflects_each():
                    how += ", a thread for each socket"
                elif len(self._paths) > 1:
                    how += f", one wait for all {len(self._paths)} sockets (epoll in C)"
                window = self.config.busy_poll_us
                how += f", polling {window} µs before each wait" if window else ", no busy poll"
            out.append(f"udp {ep}: {path}, {how}")
        if self.config.sessions:
            out.append(f"sessions: {batched or 'recvfrom_into when discarding, else recvmsg'}")
        return out

    def _options_for(self, ep: Endpoint) -> BindOptions:
        """A socket that receives for many addresses (a wildcard, a group) needs each datagram's
        destination: to answer from it, to leave multicast and broadcast unanswered, to record it,
        or to bind a session to it. A socket bound to one unicast address knows it."""
        if paths.knows_destination(ep.ip):
            return self.bind_options
        wanted = not self._silent or self.config.sessions or (self.sink is not None and self.sink.format != "raw")
        return self.bind_options._replace(pktinfo=wanted)

    def _bind_same_port(self, ep: Endpoint, port: int, options: BindOptions) -> socket.socket:
        """Port 0 on both families: give the second socket the port the kernel chose for the first,
        so ``udpkit listen`` prints one port; a port taken in the other family falls back to any."""
        if port:
            try:
                return bind_udp(ep._replace(port=port), options)
            except UdpkitError:
                pass
        return bind_udp(ep, options)

    def close(self) -> None:
        for session in self._sessions:
            self._end_session(session.key)
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        self._paths.clear()
        self._reactor.close()
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
        self._reactor.stop()
        for sock in self._waiting:
            try:
                sock.shutdown(socket.SHUT_RD)  # wakes a blocked recvfrom; reception goes on
            except OSError:
                pass

    def start(self) -> None:
        """Serve in a background thread (for in-process harnesses and tests)."""
        if not self._sockets:
            self.open()
        self._reactor.start(self.serve, "udpkit-listener")

    def join(self, timeout: float | None = 10.0) -> None:
        self._reactor.join(timeout)

    # -- the loop --------------------------------------------------------------------------------
    def serve(self) -> ListenerStats:
        """Run until ``stop()``, ``count`` datagrams, or ``duration`` seconds; return the statistics."""
        if not self._sockets:
            self.open()
        duration = self.config.duration
        deadline = None if duration is None else time.monotonic() + duration
        if self._blocks():
            if not self._reactor.stopping:
                self._serve_blocking(deadline)
            return self.stats
        reactor = self._reactor
        for index, sock in enumerate(self._sockets):
            reactor.watch(sock.fileno(), partial(self._from_listening, index))
        try:
            reactor.run(partial(self._step, deadline))
        finally:
            for sock in self._sockets:
                reactor.unwatch(sock.fileno())
        if self.sink is not None:
            self.sink.flush()
        return self.stats

    def _blocks(self) -> bool:
        """Whether the listening sockets are served by a blocking wait, not the reactor: one socket
        bound to one unicast address (BLOCKING); one bound to a wildcard when a batch reads each
        datagram's destination and no receive time is needed; or several such (:meth:`_waits_on_set`).
        A blocking wait in the C batch polls before it sleeps (``Batch.busy_poll_ns``)."""
        if self._paths == [paths.BLOCKING]:
            return True
        if self._batch is None or self.capabilities.uses_time:
            return False
        return self._paths == [paths.WILDCARD] or self._waits_on_set()

    def _waits_on_set(self) -> bool:
        """Several listening sockets that each answer without routing (PLAIN, WILDCARD: the two
        families of ``udpkit listen PORT``), served by one blocking loop whose receives wait on all
        of them at once: the C batch's ``wait_epoll`` (``_blocks`` has checked the batch and the
        service). The reactor's path instead pays a Python wake-up, a dispatch and a receive that
        finds nothing each time, and cannot poll: 0.74–0.91× ``sockperf server``'s echo round trips
        quiet, where this loop makes 2.37–2.75× (bench/listen_bench.py)."""
        return (len(self._paths) > 1 and all(path in (paths.PLAIN, paths.WILDCARD) for path in self._paths)
                and hasattr(self._batch, "wait_epoll"))

    def _step(self, deadline: float | None) -> tuple[bool, float]:
        """After each wake-up: write the recording when it is due, end idle sessions; whether the
        deadline passed, and how long the next wait may last."""
        now = time.monotonic()
        written_by = None if self.sink is None else self.sink.flush_if_due(now)
        self._peers.settle()
        if self._sessions.idle_timeout is not None and self._sessions:
            for key in self._sessions.expired(now):
                self._end_session(key)
        timeout = -1.0
        if self.config.stream is not None:
            if self._flush_streams() or reap():
                timeout = 0.05  # writes waiting for a stream, or programs still exiting: look again soon
            if self._finished:
                return True, 0.0
        if deadline is not None:
            if now >= deadline:
                return True, 0.0
            timeout = deadline - now
        for expiry in (self._sessions.next_expiry(), written_by):
            if expiry is not None:
                wait = max(0.0, expiry - now)
                timeout = wait if timeout < 0 else min(timeout, wait)
        return False, timeout

    def _flush_streams(self) -> bool:
        """Send what streams could not take before; whether any still waits."""
        waiting = False
        for session in self._sessions:
            up = session.up
            if isinstance(up, StreamUpstream) and up.pending:
                try:
                    up.flush()
                except OSError as exc:
                    self._session_failed(session.key, exc)
                    continue
                waiting = waiting or bool(up.pending)
        return waiting

    def _from_listening(self, index: int) -> bool:
        sock = self._sockets[index]
        path = self._paths[index]
        if path == paths.DISCARD:
            return self._drain_recording(index, sock) if self._record is not None else self._drain_discard(sock)
        if path in (paths.PLAIN, paths.TIMED, paths.WILDCARD) and self._batch is not None:
            return self._drain_batched(index, sock, timed=path == paths.TIMED or (
                path == paths.WILDCARD and self.capabilities.uses_time))
        if path == paths.PLAIN:
            return drain_plain(sock, self._plain_answerer(index, sock), BATCH, self._count_socket_error)
        if path == paths.TIMED:
            return drain_timed(sock, self._plain_answerer(index, sock), BATCH, self._count_socket_error)
        if path == paths.RECORDING:
            return self._drain_recording(index, sock)
        for dgram in receive(sock, BATCH, ancillary=True, on_error=self._count_socket_error, batch=self._batch):
            if self._route(index, dgram):
                return True
            while self._strays:  # other peers' datagrams a new session socket caught: route them too
                if self._route(*self._strays.pop(0)):
                    return True
        return False

    def _count_socket_error(self, exc: OSError) -> None:
        self.counts.faults[f"socket_error:{error_name(exc)}"] += 1

    def _route(self, index: int, dgram: Datagram) -> bool:
        """One datagram from a peer, as the listening socket ``index`` would take it: filter, count,
        find or open its session, answer. ``True`` once ``count`` datagrams have been handled."""
        sock = self._sockets[index]
        if self.config.allow is not None and not self.config.allows(dgram.peer[0]):
            self.counts.refused += 1
            return False
        if not dgram.unicast:  # to a group or a broadcast address: recorded, answered only if asked
            self.counts.faults["not_unicast"] += 1
            done = self._count_in(index, dgram)
            local = self._bound[index]
            to = local._replace(ip=dgram.local_ip or local.ip)
            if self.config.relay is None and self.config.answers(dgram.local_ip):
                self._handle(sock, None, dgram._replace(local_ip=None), to)  # the kernel picks a unicast source
            elif self.sink is not None:
                self.sink.write(self._when(dgram), self._peer(dgram, local), to, dgram.data)
            return done
        if self.config.single_peer:
            if self._only_peer is None:
                try:
                    sock.connect(dgram.peer)
                except OSError as exc:
                    self.counts.faults[f"no_session:{error_name(exc)}"] += 1
                    return False
                self._only_peer = dgram.peer
            elif dgram.peer != self._only_peer:
                self.counts.refused += 1  # queued before we connected to the first peer
                return False
        done = self._count_in(index, dgram)
        if self.config.input_fd is not None:
            first = self._latest is None
            self._latest = (index, dgram.peer)
            if first:
                try:
                    self._reactor.watch(self.config.input_fd, self._from_input)
                except PermissionError:  # a regular file or /dev/null, which epoll cannot watch: send it now
                    while self._from_input(watched=False):
                        pass
        session = None
        if self.config.sessions:
            session = self._sessions.get((index, dgram.peer)) or self._open_session(index, dgram)
            if session is None and self.config.relay is not None:
                return done  # no socket to the upstream could be made: counted in _open_session
        if session is not None:
            self._handle(session.down, session, dgram, session.local)
        else:
            local = self._bound[index]
            to = local if dgram.local_ip is None else local._replace(ip=dgram.local_ip)
            self._handle(sock, None, dgram, to)
        return done  # the count-th datagram is answered before we stop

    def _drain_recording(self, index: int, sock: socket.socket) -> bool:
        """Record each datagram and nothing more (a silent responder, no sessions or filters): the
        recording formats' path, a batch at a time (:meth:`Sink.write_records`), without the
        per-datagram routing of ``_route``."""
        assert self.sink is not None
        local = self._bound[index]
        counts, count = self.counts, self.config.count
        if self._record is not None:
            return self._record_batches(sock, local)
        got = receive(sock, BATCH, ancillary=True, on_error=self._count_socket_error, batch=self._batch)
        if count is not None and counts.datagrams_in + len(got) >= count:
            got = got[: max(0, count - counts.datagrams_in)]
        counts.datagrams_in += len(got)
        counts.bytes_in += sum([len(record[0]) for record in got])
        self._peers.update([record[1] for record in got])
        if got:
            self.sink.write_records(got, local.ip, local.port, self.clock())
        return count is not None and counts.datagrams_in >= count

    def _record_batches(self, sock: socket.socket, local: Endpoint) -> bool:
        """``_drain_recording`` with the C batch formatting the records (:meth:`Sink.take_batch`),
        up to 16 batches per wake-up, as many datagrams as the discard path reads; ``True`` once
        ``count`` is reached."""
        assert self.sink is not None and self._record is not None and self._batch is not None
        counts, count, fd = self.counts, self.config.count, sock.fileno()
        take, record = self.sink.take_batch, self._record
        for _ in range(16):
            most = self._batch.count if count is None else count - counts.datagrams_in
            try:
                n, nbytes, senders = take(record, fd, local.ip, local.port, most, self.clock())
            except OSError as exc:  # in place of a datagram, reported once: read on
                self._count_socket_error(exc)
                continue
            counts.datagrams_in += n
            counts.bytes_in += nbytes
            self._peers.update(senders)
            if count is not None and counts.datagrams_in >= count:
                return True
            if n < self._batch.count:
                return False
        return False

    def _drain_batched(self, index: int, sock: socket.socket, *, timed: bool) -> bool:
        """The plain, timed and wildcard paths a batch at a time (:meth:`_answer_batch`), up to
        ``BATCH`` batches per wake-up; ``True`` once ``count`` is reached."""
        assert self._batch is not None
        receive_batch, fd = self._batch.receive, sock.fileno()
        lowest = self._reflect_from()
        template = self._ntp_template()
        kept = self._kept_answers()
        for _ in range(BATCH):
            if lowest is not None:
                if self._reflect(index, sock, socket.MSG_DONTWAIT, lowest) < self._batch.count:
                    return False
                continue
            if template is not None:
                if self._answer_ntp(index, sock, template) < self._batch.count:
                    return False
                continue
            if kept is not None:
                if self._answer_kept(index, sock, kept, socket.MSG_DONTWAIT, timed) < self._batch.count:
                    return False
                continue
            try:
                got = receive_batch(fd)
            except OSError as exc:  # in place of a datagram, reported once: read on
                self._count_socket_error(exc)
                continue
            if not got:
                return False
            if self._answer_batch(index, sock, got, timed):
                return True
            if len(got) < self._batch.count:
                return False  # the queue is empty: no second call to learn it
        return False

    def _answer_batch(self, index: int, sock: socket.socket, got: list[Datagram], timed: bool,
                      batch: Batch | None = None) -> bool:
        """One batch's datagrams through the responder, then every reply in one ``sendmmsg`` (per
        ``BATCH``; with ``batch``, the calling thread's, else ``_batch``), each from the address its
        request came to when the socket is bound to a wildcard. Datagrams to a group or broadcast
        address go the general way, one by one. Each datagram's time is its kernel receive time when
        ``timed``; a time service's transmit stamps (``finish``, or ``trailer``) are written just
        before the send, microseconds before the replies leave. ``True`` once ``count`` is reached."""
        count, counts = self.config.count, self.counts
        if len(got) == 1 and self._paths[index] != paths.WILDCARD:
            # one request (a client that waits for each answer): a batch's set-up costs more than
            # it saves, so the one-per-call answerer takes it (1.6 µs less a round trip, measured)
            data, peer, _local, stamp = got[0][:4]
            if peer is None:  # a wake-up by stop()'s shutdown(SHUT_RD)
                return False
            answer = self._answerers.get(index)
            if answer is None:
                answer = self._answerers[index] = self._plain_answerer(index, sock)
            return answer(data, peer, stamp if timed else None)
        if self._paths[index] == paths.WILDCARD and not all([record[6] for record in got]):
            ours = []
            for record in got:
                if record[6]:
                    ours.append(record)
                elif self._route(index, record):
                    return True
            got = ours
        done = count is not None and counts.datagrams_in + len(got) >= count
        if done:
            assert count is not None
            got = got[: max(0, count - counts.datagrams_in)]
        family = self._bound[index].family
        caps, clock, faults, add = self.capabilities, self.clock, counts.faults, self._peers.add
        batch_time = clock()
        if caps.handle_batch is not None:
            senders = {record[1] for record in got}
            if None not in senders:  # (None: a wake-up by stop()'s shutdown(SHUT_RD) is in the batch)
                try:
                    answered = caps.handle_batch(got, batch_time)
                except Exception as exc:  # noqa: BLE001 - a datagram may not end the service
                    faults[f"responder_error:{type(exc).__name__}"] += 1
                    answered = []
                if answered is not None:
                    self._peers.update(senders)
                    counts.datagrams_in += len(got)
                    counts.bytes_in += sum([len(record[0]) for record in got])
                    if answered:
                        self._send_batch(sock, answered, caps.trailer, batch)
                    return done
        handle, finish = self.responder.handle, caps.finish
        replies: list[tuple[bytes, Any, str | None]] = []
        append = replies.append
        received = nbytes = 0
        last_peer: Any = _NO_PEER  # (not None: None marks a wake-up, below)
        endpoint = Endpoint("", 0, family)
        # Per datagram only what the service needs: the records unpacked as tuples (no attribute
        # lookups), the sender's Endpoint made once while it repeats, the counters added per batch.
        for data, peer, local, stamp, _drops, _cut, _unicast in got:
            if peer is not last_peer:  # the batch hands out one tuple while the sender repeats
                if peer is None:  # a wake-up by stop()'s shutdown(SHUT_RD), not a datagram
                    continue
                add(peer)
                endpoint = Endpoint(peer[0], peer[1], family)
                last_peer = peer
            received += 1
            nbytes += len(data)
            try:
                reply = handle(data, endpoint, stamp if timed and stamp is not None else batch_time)
            except Exception as exc:  # noqa: BLE001 - a datagram may not end the service
                faults[f"responder_error:{type(exc).__name__}"] += 1
                continue
            if reply is not None:
                if isinstance(reply, bytes):
                    append((reply, peer, local))
                else:
                    replies.extend((payload, peer, local) for payload in reply)
        counts.datagrams_in += received
        counts.bytes_in += nbytes
        if replies:
            if finish is not None:
                now = clock()
                replies = [(finish(payload, now), peer, local) for payload, peer, local in replies]
            self._send_batch(sock, replies, batch=batch)
        return done

    def _send_batch(self, sock: socket.socket, replies: list[Any],
                    trailer: Callable[[float], bytes] | None = None, batch: Batch | None = None) -> None:
        """``sendmmsg`` the replies — (payload, peer, source address or ``None``) — counted as
        ``send_reply``'s would be: a reply the kernel refuses (a full buffer, a pending ICMP error)
        is counted and skipped; one the batch cannot take (a peer or source given by name) goes by
        ``send_reply``. ``trailer(now)``: bytes every reply ends with, made just before each call."""
        batch = batch or self._batch
        assert batch is not None
        send_batch, fd, family = batch.send, sock.fileno(), sock.family
        counts, faults = self.counts, self.counts.faults
        read_in_call = trailer is not None and self.capabilities.trailer_clock == "ntp" and self.clock is time.time
        start, total = 0, len(replies)
        for _ in range(total):  # each round sends at least one reply or skips one
            if start >= total:
                break
            # the send time: read by the C call itself right before sendmmsg when it can be (the
            # real clock, an NTP timestamp), else here
            tail: bytes | int | None = None if trailer is None else (
                NTP_TIME_TRAILER if read_in_call else trailer(self.clock()))
            try:
                # with a trailer (a transmit time), at most TRAILER_MESSAGES system-call messages per
                # call: the kernel sends them in turn (~3 µs each on loopback). Measured with 64
                # replies to 64 peers (bench/ntp_bench.py --addresses): one call for all left the
                # last 190 µs after its stamp (p99); 16 a call, 51-61 µs, at 3% fewer replies a second
                sent = send_batch(fd, family, replies, start, tail, 0 if tail is None else TRAILER_MESSAGES)
            except OSError as exc:
                faults[f"reply_failed:{error_name(exc)}"] += 1
                start += 1
                continue
            if not sent:  # a name for an address: send_reply resolves it
                payload, peer = replies[start][0], replies[start][1]
                source = replies[start][2] if len(replies[start]) > 2 else None
                if trailer is not None:
                    payload += trailer(self.clock())
                failed = send_reply(sock, payload, peer, source)
                if failed is None:
                    counts.datagrams_out += 1
                    counts.bytes_out += len(payload)
                else:
                    faults[f"reply_failed:{failed}"] += 1
                start += 1
                continue
            counts.datagrams_out += sent
            counts.bytes_out += sum([len(reply[0]) for reply in replies[start : start + sent]])
            if tail is not None:
                counts.bytes_out += sent * (8 if isinstance(tail, int) else len(tail))
            start += sent

    def _reflect_from(self) -> int | None:
        """The lowest sender port an echo responder answers unchanged (see ``Batch.reflect``), when
        its datagrams may be echoed without a call per datagram: no ``count`` to stop at."""
        if self._batch is None or self.config.count is not None:
            return None
        return self.capabilities.reflect_from

    def _reflect(self, index: int, sock: socket.socket, flags: int, lowest: int, rounds: int = 1) -> int:
        """One ``Batch.reflect``: the waiting datagrams echoed in one call (``rounds``: and again,
        while only that happens): their datagrams and bytes are the batch's live ``reflected_*``
        totals (``stats`` adds them), their senders go to the peer tally as the call finds them;
        the ones it leaves (a low port, a group address) go through ``_answer_batch``. How many
        datagrams were read."""
        assert self._batch is not None
        echoed, _nbytes, _senders, _sent, _sent_bytes, failures, rest, error = self._batch.reflect(
            sock.fileno(), flags, lowest, rounds, self._pending_peers)
        # (the datagrams and bytes are the batch's reflected_* totals: see stats)
        if self._after_batch_call(index, sock, failures, rest, error, timed=False):
            return self._batch.count
        return echoed + len(rest)

    def _after_batch_call(self, index: int, sock: socket.socket, failures: list[int], rest: list[Any], error: int,
                          *, timed: bool, senders: list[Any] | None = None, batch: Batch | None = None) -> bool:
        """What a call that answered a batch in C (reflect, answer_ntp) leaves to Python: the new
        senders (``_pending_peers``, or the call's own list) into the peer tally, each refused
        reply's errno counted, the datagrams it did not answer through ``_answer_batch`` (with
        ``batch``, the call's own, else ``_batch``), the error reported in place of a datagram (an
        ICMP error for an earlier reply) counted. Whether there was one: read on, the queue may
        hold more."""
        if senders is None:
            senders = self._pending_peers
        if senders:
            self._peers.update(senders)
            senders.clear()
        for code in failures:
            self.counts.faults[f"reply_failed:{errno.errorcode.get(code, str(code))}"] += 1
        if rest:
            self._answer_batch(index, sock, rest, timed, batch)
        if error:
            self._count_socket_error(OSError(error, os.strerror(error)))
            return True
        return False

    def _ntp_template(self) -> Any:
        """A time service's ``ntp_template`` (see ``Batch.answer_ntp``), when its requests may be
        answered without a call per request: the C batch, the real clock, no ``count`` to stop at."""
        if self._batch is None or self.config.count is not None or self.clock is not time.time:
            return None
        if getattr(self._batch, "answer_ntp", None) is None:
            return None
        return self.capabilities.ntp_template

    def _kept_answers(self) -> Any:
        """A responder's ``kept_answers`` (see ``Batch.answer_kept``), when they may be given without
        a call per datagram: the C batch, no ``count`` to stop at."""
        if self._batch is None or self.config.count is not None or getattr(self._batch, "answer_kept", None) is None:
            return None
        return self.capabilities.kept_answers

    def _answer_kept(self, index: int, sock: socket.socket, kept: Any, flags: int, timed: bool) -> int:
        """One ``Batch.answer_kept``: the waiting datagrams the responder answered before answered
        again in one call, counted as ``_answer_batch`` counts them; the rest (new questions, a
        group address) go through ``_answer_batch``, which asks the responder. How many datagrams
        were read."""
        table, count, *more = kept  # (and, if the responder has one, the function for new requests)
        assert self._batch is not None
        hits: list[Any] = []  # each given answer's outcome, for the responder to count
        done = self._answering_call(self._batch.answer_kept,  # type: ignore[attr-defined]
                                    sock.fileno(), flags, table, hits, self._pending_peers, *more[:1])
        if done is None:
            return 0
        answered, _nbytes, _sent, _sent_bytes, failures, rest, error = done
        if hits:
            try:
                count(hits)
            except Exception as exc:  # noqa: BLE001 - a responder's counting may not end the service
                self.counts.faults[f"responder_error:{type(exc).__name__}"] += 1
        if self._after_batch_call(index, sock, failures, rest, error, timed=timed):
            return self._batch.count
        return int(answered) + len(rest)

    def _answering_call(self, call: Callable[..., Any], *args: Any) -> Any:
        """A batch call that reads and answers in C (answer_kept, answer_ntp): its result, with the
        datagrams and bytes it read and sent counted; ``None`` when it raised — a responder's table,
        function or start time the call could not use loses that batch, not the service."""
        counts = self.counts
        try:
            done = call(*args)
        except Exception as exc:  # noqa: BLE001 - see above
            counts.faults[f"responder_error:{type(exc).__name__}"] += 1
            return None
        answered, nbytes, sent, sent_bytes = done[:4]
        counts.datagrams_in += answered
        counts.bytes_in += nbytes
        counts.datagrams_out += sent
        counts.bytes_out += sent_bytes
        return done

    def _answer_ntp(self, index: int, sock: socket.socket, template: Any) -> int:
        """One ``Batch.answer_ntp``: the waiting requests answered in one call, counted as
        ``_answer_batch`` counts them; the datagrams it leaves (short, another mode or version, a
        group address) go through ``_answer_batch``. How many datagrams were read."""
        accept, start_for, count_answered = template
        assert self._batch is not None
        done = self._answering_call(self._batch.answer_ntp,  # type: ignore[attr-defined]
                                    sock.fileno(), socket.MSG_DONTWAIT, accept, start_for, TRAILER_MESSAGES,
                                    self._pending_peers)
        if done is None:
            return 0
        answered, _nbytes, _sent, _sent_bytes, failures, rest, error = done
        count_answered(answered)
        if self._after_batch_call(index, sock, failures, rest, error, timed=True):
            return self._batch.count
        return int(answered) + len(rest)

    def _plain_answerer(self, index: int, sock: socket.socket) -> Callable[..., bool]:
        """The per-datagram work of the plain paths: count, answer with ``sendto``; the function
        returns ``True`` once ``count`` datagrams have been handled."""
        sendto, handle = sock.sendto, self.responder.handle
        family = self._bound[index].family
        counts, faults, tally, clock, count = self.counts, self.counts.faults, self._peers, self.clock, self.config.count
        finish = self.capabilities.finish

        last_peer: Any = _NO_PEER
        endpoint = Endpoint("", 0, family)

        def answer(data: bytes, peer: Any, now: float | None = None) -> bool:
            nonlocal last_peer, endpoint
            counts.datagrams_in += 1
            counts.bytes_in += len(data)
            if peer != last_peer:  # a client that waits for each answer is the same peer again
                tally.add(peer)
                endpoint = Endpoint(peer[0], peer[1], family)
                last_peer = peer
            try:
                reply = handle(data, endpoint, clock() if now is None else now)
            except Exception as exc:  # noqa: BLE001 - a datagram may not end the service
                faults[f"responder_error:{type(exc).__name__}"] += 1
                reply = None
            if reply is not None:
                for payload in [reply] if isinstance(reply, bytes) else reply:
                    if finish is not None:
                        payload = finish(payload, clock())
                    try:
                        sendto(payload, peer)
                        counts.datagrams_out += 1
                        counts.bytes_out += len(payload)
                    except OSError as exc:
                        faults[f"reply_failed:{error_name(exc)}"] += 1
            return count is not None and counts.datagrams_in >= count

        return answer

    def _serve_blocking(self, deadline: float | None) -> None:
        """The one socket answered datagram by datagram (:func:`~udpkit.net.loops.serve_blocking`),
        or a batch at a time with a blocking ``recvmmsg`` (``MSG_WAITFORONE``: wait for the first,
        take what else is queued) and ``sendmmsg``. ``stop()`` interrupts the wait with
        ``shutdown(SHUT_RD)`` on the sockets in ``_waiting``. Several sockets: an echo's
        :meth:`_reflect_each`, else :meth:`_serve_blocking_set`."""
        sock = self._sockets[0]
        # (several: stop() wakes the set's wait through the reactor's pipe, or each echo thread's socket)
        self._waiting = (sock,) if len(self._sockets) == 1 else ()

        def serve() -> None:
            if self._reflects_each() and self._other_batches():
                self._reflect_each(deadline)
            elif len(self._sockets) > 1:
                self._serve_blocking_set(deadline)
            elif self._batch is not None:
                self._serve_blocking_batched(sock, deadline)
            else:
                serve_blocking(sock, self._plain_answerer(0, sock), deadline=deadline,
                               stopping=lambda: self._reactor.stopping, on_error=self._count_socket_error,
                               every_1024=self._peers.settle)

        try:
            if deadline is None:  # waits with no timeout: signals must still reach a handler at once
                serve_beside_main(serve, self.stop)
            else:
                serve()
        finally:
            self._waiting = ()

    def _serve_blocking_batched(self, sock: socket.socket, deadline: float | None) -> None:
        assert self._batch is not None
        reactor = self._reactor
        lowest = self._reflect_from()
        kept = self._kept_answers()
        with _blocking(sock, deadline):
            while not reactor.stopping:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if self._blocking_call(0, sock, lowest, kept, _rounds(deadline)):
                    break
                self._peers.settle()

    def _reflects_each(self) -> bool:
        """Whether several sockets are an echo answered in C, a thread each (:meth:`_reflect_each`)."""
        return len(self._sockets) > 1 and self._waits_on_set() and self._reflect_from() is not None

    def _reflect_each(self, deadline: float | None) -> None:
        """An echo on several sockets (``udpkit listen PORT``: one a family), each socket in a
        blocking loop of its own on a thread of its own, with a batch of its own.

        One wait for all of them (:meth:`_serve_blocking_set`) pays an ``epoll_wait`` and epoll's
        wake-up on each round trip of a client that waits for each answer, where a socket alone
        sleeps in its ``recvfrom``: 0.84× ``sockperf server``'s round trips with the other core busy,
        where one wildcard socket alone made 0.91× (bench/listen_bench.py). ``Batch.reflect`` runs no
        Python code, so the loops share nothing while they wait and echo; what a call leaves to
        Python (senders, refused replies, datagrams it does not echo) is handled under ``_lock``,
        with that thread's batch (another thread's may be in a call). A flood on one family no
        longer takes turns with the other. The other services' sets stay on one thread: their calls
        run the responder's code. ``stop()`` wakes each loop with ``shutdown(SHUT_RD)``; a loop that
        fails stops the others, and its exception is raised here."""
        batch, lowest, sockets, others = self._batch, self._reflect_from(), self._sockets, self._others
        assert batch is not None and lowest is not None and len(others) == len(sockets) - 1
        self._waiting = tuple(sockets)
        failed: list[BaseException] = []

        def serve(index: int, own: Batch, senders: list[Any]) -> None:
            try:
                self._reflect_loop(index, own, senders, lowest, deadline)
            except BaseException as exc:  # raised again below, after every loop ended
                failed.append(exc)
                self.stop()

        started: list[threading.Thread] = []
        try:
            for index in range(1, len(sockets)):
                thread = threading.Thread(target=serve, args=(index, *others[index - 1]),
                                          name=f"udpkit-echo-{index}", daemon=True)
                thread.start()
                started.append(thread)
            serve(0, batch, self._pending_peers)
        except BaseException:  # (a thread that could not start): the others end too
            self.stop()
            raise
        finally:
            for thread in started:
                thread.join()  # (each ends at stop() or at the deadline, within its 250 ms wait)
        if failed:
            raise failed[0]

    def _other_batches(self) -> bool:
        """Whether :meth:`_reflect_each` has a batch for each socket beyond the first (made once, so
        that their totals stay in ``stats``); else the set's single loop serves them."""
        wanted = len(self._sockets) - 1
        try:
            while len(self._others) < wanted:
                other = new_batch(BATCH, 65536, ancillary=True, kind="c")
                if other is None:
                    return False
                other.busy_poll_ns = self._batch.busy_poll_ns  # type: ignore[union-attr,attr-defined]
                self._others.append((other, []))
        except (OSError, MemoryError):
            return False
        return True

    def _reflect_loop(self, index: int, batch: Batch, senders: list[Any], lowest: int,
                      deadline: float | None) -> None:
        """One socket's echo loop of :meth:`_reflect_each`: blocking ``Batch.reflect`` calls on its
        own batch, and after each, under the lock, what the call left (``_after_batch_call``)."""
        sock, reactor, lock = self._sockets[index], self._reactor, self._lock
        reflect, fd, rounds = batch.reflect, sock.fileno(), _rounds(deadline)
        with _blocking(sock, deadline):
            while not reactor.stopping:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                _echoed, _nbytes, _senders, _sent, _sent_bytes, failures, rest, error = reflect(
                    fd, MSG_WAITFORONE, lowest, rounds, senders)
                with lock:
                    self._after_batch_call(index, sock, failures, rest, error, timed=False, senders=senders,
                                           batch=batch)
                    self._peers.settle()

    def _serve_blocking_set(self, deadline: float | None) -> None:
        """Several sockets in one blocking loop (see :meth:`_waits_on_set`). Each call serves one
        socket; its blocking receives wait, in C, on an epoll set of every socket and the reactor's
        wake-up pipe (so ``stop()`` needs no ``shutdown``), polling first as one socket's do. A wait
        that another socket ends returns at once, naming it (``wait_ready``), and that one is served
        next; a call gives one socket ``SET_ROUNDS`` rounds at most. The sockets stay non-blocking:
        each receive follows a wait that found it readable."""
        batch = self._batch
        assert batch is not None
        reactor = self._reactor
        reactor.open()
        sockets = self._sockets
        index_of = {sock.fileno(): index for index, sock in enumerate(sockets)}
        lowest = self._reflect_from()
        kept = self._kept_answers()
        index = 0
        with select.epoll() as waits:
            for fd in index_of:
                waits.register(fd, select.EPOLLIN)
            waits.register(reactor.wake_fd, select.EPOLLIN)
            batch.wait_epoll = waits.fileno()  # type: ignore[attr-defined]
            batch.wait_ms = -1 if deadline is None else 250  # type: ignore[attr-defined]
            try:
                while not reactor.stopping:
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    if self._blocking_call(index, sockets[index], lowest, kept, SET_ROUNDS if deadline is None else 1):
                        break
                    self._peers.settle()
                    index = index_of.get(batch.wait_ready, index)  # type: ignore[attr-defined]
            finally:
                batch.wait_epoll = batch.wait_ms = -1  # type: ignore[attr-defined]

    def _blocking_call(self, index: int, sock: socket.socket, lowest: int | None, kept: Any, rounds: int) -> bool:
        """One call of the blocking loop on socket ``index``: it waits for the first datagram, then
        answers what is queued (``MSG_WAITFORONE``). An echo is answered in C for up to ``rounds``
        rounds (reflect); answers given before, in C (answer_kept); else a batch through the
        responder. ``True`` once ``count`` is reached."""
        assert self._batch is not None
        if lowest is not None:
            self._reflect(index, sock, MSG_WAITFORONE, lowest, rounds)
            return False
        if kept is not None:
            self._answer_kept(index, sock, kept, MSG_WAITFORONE, False)
            return False
        try:
            got = self._batch.receive(sock.fileno(), MSG_WAITFORONE)
        except OSError as exc:
            self._count_socket_error(exc)
            return False
        return bool(got) and self._answer_batch(index, sock, got, False)

    def _drain_discard(self, sock: socket.socket, session: Session | None = None) -> bool:
        """Read without a per-datagram object (see ``paths.DISCARD``); ``True`` once ``count`` is reached.

        On a session's socket, datagrams from anyone but its peer (queued before its ``connect()``)
        are routed like the listening socket's, so no session handles another peer's datagram.
        """
        counts, count = self.counts, self.config.count
        limit = BATCH * 16 if count is None else min(BATCH * 16, count - counts.datagrams_in)
        sink = self.sink
        write = None if sink is None else sink.write_raw
        strays: list[tuple[bytes, tuple[Any, ...]]] = []
        expect = None if session is None else session.key[1]
        errors: list[OSError] = []
        n, nbytes = count_and_forget(sock, limit, self._buffer, self._peers.add, write, expect, strays,
                                     errors.append if session is not None else self._count_socket_error)
        if sink is not None:
            sink.wrote(n)
        counts.datagrams_in += n
        counts.bytes_in += nbytes
        done = count is not None and counts.datagrams_in >= count
        for data, peer in strays:
            assert session is not None
            done = self._route(session.key[0], Datagram(data, peer, session.local.ip, None, None)) or done
        if errors and session is not None:
            self._session_failed(session.key, errors[0])
        return done

    def _from_session(self, key: SessionKey) -> bool:
        session = self._sessions.get(key)
        if session is None:
            return False
        if (self._silent and (self.sink is None or self.sink.format == "raw") and self.config.input_fd is None
                and self.tap is None):
            self._touch(key)
            return self._drain_discard(session.down, session)
        if self._forwards and isinstance(session.up, socket.socket):
            self._forward(key, session, session.down, session.up, upstream=True)
            return False
        errors: list[OSError] = []
        done = False
        outbox: list[tuple[socket.socket, bytes, bool]] = []  # sent after the batch, a sendmmsg per socket
        for dgram in receive(session.down, BATCH, ancillary=self._timestamps, on_error=errors.append,
                             batch=self._batch):
            if dgram.peer != key[1]:  # queued here before connect(): route it by its real sender
                if self._route(key[0], dgram._replace(local_ip=session.local.ip)):
                    done = True
                    break
                continue
            done = self._count_in(key[0], dgram)
            self._handle(session.down, session, dgram, session.local, outbox)
            if done:
                break
        self._send_outbox(outbox, session)
        if errors and self._sessions.get(key) is session:
            self._session_failed(key, errors[0])
        return done

    def _from_upstream(self, key: SessionKey) -> bool:
        session = self._sessions.get(key)
        if session is None or session.up is None:
            return False
        if isinstance(session.up, StreamUpstream):
            return self._from_stream(key, session, session.up)
        if self._forwards:
            self._forward(key, session, session.up, session.down, upstream=False)
            return False
        errors: list[OSError] = []
        got = receive(session.up, BATCH, ancillary=False, on_error=errors.append, batch=self._batch)
        if got:
            self._touch(key)
            if self.tap is not None:
                for dgram in got:
                    self.tap(dgram.data, True, key)
            self._send_all(session.down, [dgram.data for dgram in got], session=session)
        if errors and self._sessions.get(key) is session:
            self._session_failed(key, errors[0])
        return False

    def _from_stream(self, key: SessionKey, session: Session, up: StreamUpstream) -> bool:
        """What the program printed or the TCP peer sent: each read back to the peer as one datagram;
        the end of the stream ends the session (socat's child ends with its program)."""
        for _ in range(BATCH):
            try:
                data = up.read()
            except OSError as exc:
                self._session_failed(key, exc)
                return False
            if data is None:
                return False
            if not data:
                self._end_session(key)
                return False
            self._touch(key)
            if self.tap is not None:
                self.tap(data, True, key)
            self._send(session.down, data, session=session)
        return False

    def _session_failed(self, key: SessionKey, exc: OSError) -> None:
        """A session's socket reported an error (an ICMP error for what it sent): that session ends,
        nothing else does."""
        self.counts.faults[f"session_error:{error_name(exc)}"] += 1
        self._end_session(key)

    def _count_in(self, index: int, dgram: Datagram) -> bool:
        """Statistics for one datagram from a peer; ``True`` once ``count`` is reached."""
        counts = self.counts
        counts.datagrams_in += 1
        counts.bytes_in += len(dgram.data)
        if dgram.truncated:
            counts.truncated += 1
        if dgram.drops is not None:
            self._drops[index] = max(self._drops.get(index, 0), dgram.drops)
        self._peers.add(dgram.peer)
        count = self.config.count
        return count is not None and counts.datagrams_in >= count

    def _when(self, dgram: Datagram) -> float:
        return dgram.timestamp if dgram.timestamp is not None else self.clock()

    @staticmethod
    def _peer(dgram: Datagram, local: Endpoint) -> Endpoint:
        return Endpoint(dgram.peer[0], dgram.peer[1], local.family)

    def _handle(self, sock: socket.socket, session: Session | None, dgram: Datagram, local: Endpoint,
                outbox: list[tuple[socket.socket, bytes, bool]] | None = None) -> None:
        """One datagram: recorded, then relayed, streamed or answered. ``outbox``: a session's
        datagrams to send are queued there — (socket, payload, whether counted out) — for the
        caller to send a batch at a time, instead of one ``send`` each."""
        now = self._when(dgram)
        peer = self._peer(dgram, local)
        tap = self.tap
        if tap is not None:
            tap(dgram.data, False, None if session is None else session.key)
        if self.sink is not None:
            self.sink.write(now, peer, local, dgram.data)
        if session is not None:
            self._touch(session.key)
            if isinstance(session.up, StreamUpstream):
                try:
                    session.up.write(dgram.data)
                except OSError as exc:
                    self._session_failed(session.key, exc)
                return
            if session.up is not None:
                if outbox is not None:
                    outbox.append((session.up, dgram.data, False))
                else:
                    self._send(session.up, dgram.data, session=session, count=False)
                return
        try:
            reply = self.responder.handle(dgram.data, peer, now)
        except Exception as exc:  # noqa: BLE001 - a datagram may not end the service
            self.counts.faults[f"responder_error:{type(exc).__name__}"] += 1
            return
        if reply is None:
            return
        finish = self.capabilities.finish  # NTP's transmit timestamp, read at the last moment
        for payload in [reply] if isinstance(reply, bytes) else reply:
            if finish is not None:
                payload = finish(payload, self.clock())
            if tap is not None:
                tap(payload, True, None if session is None else session.key)
            if session is not None and outbox is not None:
                outbox.append((sock, payload, True))
            elif session is not None:
                self._send(sock, payload, session=session)
            else:
                self._reply(sock, payload, dgram.peer, dgram.local_ip)

    def _reply(self, sock: socket.socket, payload: bytes, peer: tuple[Any, ...], source: str | None) -> None:
        """Answer from the listening socket, from the address the datagram came to."""
        failed = send_reply(sock, payload, peer, source)
        if failed is None:
            self.counts.datagrams_out += 1
            self.counts.bytes_out += len(payload)
        else:
            self.counts.faults[f"reply_failed:{failed}"] += 1

    def _forward(self, key: SessionKey, session: Session, source: socket.socket, to: socket.socket, *,
                 upstream: bool) -> None:
        """A relay session's hop, a batch at a time in one call each (``Batch.forward``: no Python
        object per datagram), counted as the datagram-by-datagram path counts: what the peer sent
        is in, what goes back to it is out. An error ends the session as there; a full buffer
        costs the datagram (``reply_failed:EAGAIN``)."""
        assert self._batch is not None
        forward, counts = self._batch.forward, self.counts
        for _ in range(16):  # up to 16 full batches a wake-up; epoll wakes again for the rest
            got, nbytes, sent, sent_bytes, failures, error = forward(source.fileno(), to.fileno())
            if got:
                self._touch(key)
                if upstream:
                    counts.datagrams_in += got
                    counts.bytes_in += nbytes
                else:
                    counts.datagrams_out += sent
                    counts.bytes_out += sent_bytes
            for code in failures:
                if code not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    self._session_failed(key, OSError(code, os.strerror(code)))
                    return
                counts.faults[f"reply_failed:{errno.errorcode[code]}"] += 1
            if error:
                self._session_failed(key, OSError(error, os.strerror(error)))
                return
            if got < self._batch.count:
                return

    def _send_outbox(self, outbox: list[tuple[socket.socket, bytes, bool]], session: Session) -> None:
        """What ``_handle`` queued for ``session``'s sockets, in order: each run to one socket in one
        ``sendmmsg`` (``_send_all``); nothing more once a send has ended the session."""
        at = 0
        while at < len(outbox) and self._sessions.get(session.key) is session:
            sock, _payload, count = outbox[at]
            end = at + 1
            while end < len(outbox) and outbox[end][0] is sock and outbox[end][2] == count:
                end += 1
            self._send_all(sock, [entry[1] for entry in outbox[at:end]], session=session, count=count)
            at = end

    def _send_all(self, sock: socket.socket, payloads: list[bytes], *, session: Session | None = None,
                  count: bool = True) -> None:
        """``_send`` for many payloads on one connected socket: a ``sendmmsg`` takes as many as the
        kernel will (the relay's and the sessions' hot path), the errors handled as ``_send``'s: a
        full buffer costs that datagram, any other error ends the session and its sends."""
        batch = self._batch
        if batch is None or len(payloads) == 1:
            for payload in payloads:
                self._send(sock, payload, session=session, count=count)
            return
        counts, fd, family = self.counts, sock.fileno(), sock.family
        messages: list[tuple[bytes, None]] = [(payload, None) for payload in payloads]
        start, total = 0, len(messages)
        for _ in range(total):  # each round sends at least one or gives one up
            if start >= total:
                break
            try:
                sent = batch.send(fd, family, messages, start)
            except (BlockingIOError, InterruptedError) as exc:
                counts.faults[f"reply_failed:{error_name(exc)}"] += 1
                start += 1
                continue
            except OSError as exc:
                if session is not None and self._sessions.get(session.key) is session:
                    self._session_failed(session.key, exc)
                    return
                counts.faults[f"reply_failed:{error_name(exc)}"] += 1
                start += 1
                continue
            if not sent:  # (not expected: every peer is None) the one-by-one way
                self._send(sock, payloads[start], session=session, count=count)
                start += 1
                continue
            if count:
                counts.datagrams_out += sent
                counts.bytes_out += sum([len(payload) for payload in payloads[start : start + sent]])
            start += sent

    def _send(self, sock: socket.socket, payload: bytes, *, session: Session | None = None,
              count: bool = True) -> None:
        """Send on a connected socket (a session's, or socat's single peer's); an error that is not
        a full buffer ends the session it belongs to."""
        try:
            sock.send(payload)
        except (BlockingIOError, InterruptedError) as exc:
            self.counts.faults[f"reply_failed:{error_name(exc)}"] += 1
            return
        except OSError as exc:
            if session is not None and self._sessions.get(session.key) is session:
                self._session_failed(session.key, exc)
            else:
                self.counts.faults[f"reply_failed:{error_name(exc)}"] += 1
            return
        if count:
            self.counts.datagrams_out += 1
            self.counts.bytes_out += len(payload)

    def _from_input(self, watched: bool = True) -> bool:
        """Send what ``input_fd`` has for us to the latest peer: socat's STDIO, the typing direction.
        Unwatched (a file epoll cannot watch): ``True`` while there is more to read."""
        fd = self.config.input_fd
        assert fd is not None and self._latest is not None
        data = os.read(fd, MAX_DATAGRAM - 28)
        if not data:  # end of input: stop watching it, keep serving
            if watched:
                self._reactor.unwatch(fd)
            return False
        index, peer = self._latest
        session = self._sessions.get(self._latest)
        if self.tap is not None:
            self.tap(data, True, None if session is None else session.key)
        if session is not None:
            self._send(session.down, data, session=session)
        elif self.config.single_peer:
            self._send(self._sockets[index], data)  # connected to the peer
        else:
            self._reply(self._sockets[index], data, peer, None)
        return not watched

    # -- sessions --------------------------------------------------------------------------------
    def _open_session(self, index: int, dgram: Datagram) -> Session | None:
        """A socket of the peer's own; ``None`` if the kernel refuses one (counted), and the datagram
        is then answered from the listening socket."""
        if self._sessions.full():
            if self.config.stop_after_session:
                self.counts.refused += 1  # socat without fork: the first peer only
                return None
            oldest = self._sessions.oldest()
            if oldest is not None:
                self._end_session(oldest.key)  # the least recently active makes room
        listening = self._bound[index]
        local = listening if dgram.local_ip is None else listening._replace(ip=dgram.local_ip)
        key = (index, dgram.peer)
        try:
            session, strays = Session.open(key, local, self._peer(dgram, listening), self.bind_options,
                                           self.config.relay, self.config.stream)
        except (UdpkitError, OSError) as exc:
            cause = exc if isinstance(exc, OSError) else exc.__context__  # bind_udp's one-line error hides it
            self.counts.faults[f"no_session:{error_name(cause) if isinstance(cause, OSError) else 'other'}"] += 1
            return None
        self._strays.extend((index, stray) for stray in strays)
        self._sessions.add(session, time.monotonic())
        self._reactor.watch(session.down.fileno(), partial(self._from_session, key))
        if session.up is not None:
            self._reactor.watch(session.up.fileno(), partial(self._from_upstream, key))
        return session

    def _touch(self, key: SessionKey) -> None:
        self._sessions.touch(key, time.monotonic())

    def _end_session(self, key: SessionKey) -> None:
        session = self._sessions.pop(key)
        if session is None:
            return
        self._reactor.unwatch(session.down.fileno())
        if session.up is not None:
            self._reactor.unwatch(session.up.fileno())
        self._ended_session_drops += session.close()
        if isinstance(session.up, StreamUpstream) and session.up.dropped:
            self.counts.faults["stream_full"] += session.up.dropped
        if self.config.stop_after_session:
            self._finished = True

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


def _rounds(deadline: float | None) -> int:
    """The ``recvmmsg`` rounds a blocking echo call may take (a client waiting for each answer: 64
    round trips a round): 64, or with a deadline one — 64 round trips at most between two looks at
    the clock, however slowly a client sends them."""
    return BATCH if deadline is None else 1


@contextmanager
def _blocking(sock: socket.socket, deadline: float | None) -> Iterator[None]:
    """``sock`` blocking while a loop waits in its receives; with a deadline, each wait ends after
    250 ms (``SO_RCVTIMEO``) to look at it. Without, no timeout: it would arm a timer each time the
    socket sleeps (2 % of an echo round trip), and ``stop()`` wakes the wait with
    ``shutdown(SHUT_RD)`` (see ``serve_beside_main`` for signals)."""
    sock.setblocking(True)
    if deadline is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, 250_000))
    try:
        yield
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, 0))
        sock.setblocking(False)
