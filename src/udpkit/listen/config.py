"""A listener's configuration, checked once and frozen, and the defaults that bound its resources.

Sessions (socat's ``fork``) cost a file descriptor each (two when relaying), so without a cap a flood
of distinct source ports takes the process to its open-files limit and ends it. The default cap
leaves room for the rest of the process (:func:`session_cap`), and quiet sessions end after
:data:`DEFAULT_IDLE_TIMEOUT` seconds; when the cap is reached the least recently active session
makes room for the new peer.
"""

from __future__ import annotations

import ipaddress
import math
import resource
import socket
from dataclasses import dataclass

from udpkit.addr import Endpoint
from udpkit.errors import UsageError
from udpkit.listen.streams import StreamTarget
from udpkit.net import BindOptions

__all__ = ["DEFAULT_BUSY_POLL_US", "DEFAULT_IDLE_TIMEOUT", "ListenerConfig", "MAX_BUSY_POLL_US", "MAX_PROGRAMS",
           "Network", "session_cap"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Seconds without traffic after which a session ends, unless told otherwise (0: never).
DEFAULT_IDLE_TIMEOUT = 60.0
#: Descriptors kept for everything but sessions: listening sockets, epoll, pipes, files, imports.
_RESERVED_FDS = 64
#: The largest finite number of seconds an option takes (about 31 years): beyond, it is a typo.
MAX_SECONDS = 1e9
#: Sessions that each run a program (socat's EXEC/SYSTEM with fork), unless asked for more.
MAX_PROGRAMS = 64
#: Microseconds a listener answering on one socket polls for the next request before it sleeps (see
#: ``Batch.busy_poll_ns``): the kernel's own suggestion for SO_BUSY_POLL, and on this project's
#: machines longer than a round trip with the server awake (20 µs), shorter than one asleep (50 µs).
DEFAULT_BUSY_POLL_US = 50
#: The longest window asked for: past a millisecond, polling costs more than any wake-up it saves.
MAX_BUSY_POLL_US = 1000


def session_cap(fds_per_session: int = 1) -> int:
    """The most sessions the open-files limit allows: ``RLIMIT_NOFILE`` less a margin (64, and a
    sixteenth of the limit), shared by sessions of ``fds_per_session`` descriptors each.
    With ``ulimit -n 1024``: 896 sessions; 2048: 1856; 20000: 18686."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > 1 << 20:
        soft = 1 << 20
    return max(1, (soft - _RESERVED_FDS - soft // 16) // fds_per_session)


def _seconds(name: str, value: float | None, *, zero: bool = False) -> float | None:
    if value is None:
        return None
    if not (math.isfinite(value) and (value >= 0 if zero else value > 0) and value <= MAX_SECONDS):
        raise UsageError(f"{name} must be a {'non-negative' if zero else 'positive'} number of seconds"
                         f" up to {MAX_SECONDS:.0f}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """Everything a :class:`~udpkit.listen.Listener` is told, checked (see ``Listener`` for the meaning).

    ``idle_timeout`` and ``max_sessions`` are resolved: with sessions on, ``None`` becomes the
    default, ``idle_timeout=0`` means never; ``max_sessions`` may not exceed :func:`session_cap`.
    """

    endpoints: tuple[Endpoint, ...]
    bind: BindOptions = BindOptions()
    count: int | None = None
    duration: float | None = None
    fork: bool = False
    idle_timeout: float | None = None
    max_sessions: int | None = None
    allow: tuple[Network, ...] | None = None
    relay: tuple[socket.AddressFamily, tuple[str, int]] | None = None
    single_peer: bool = False
    input_fd: int | None = None
    answer_groups: bool = False
    answer_multicast: bool = False
    answer_broadcast: bool = False
    stream: StreamTarget | None = None
    stop_after_session: bool = False
    busy_poll_us: int = DEFAULT_BUSY_POLL_US

    def answers(self, local_ip: str | None) -> bool:
        """Is a datagram sent to ``local_ip`` — a group or a broadcast address — answered?"""
        if self.answer_groups:
            return True
        return self.answer_multicast if _is_multicast(local_ip) else self.answer_broadcast

    @property
    def sessions(self) -> bool:
        return self.fork or self.relay is not None or self.stream is not None

    def allows(self, ip: str) -> bool:
        """May a peer at ``ip`` talk to us (socat's ``range=``)? An IPv4-mapped IPv6 peer (dual-stack)
        counts as its IPv4 address; a scoped one (``fe80::1%eth0``) as its address."""
        try:
            address = ipaddress.ip_address(ip.partition("%")[0])
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        return any(address in net or (mapped is not None and mapped in net) for net in self.allow or ())

    @classmethod
    def checked(cls, endpoints: tuple[Endpoint, ...], *, bind: BindOptions = BindOptions(), count: int | None = None,
                duration: float | None = None, fork: bool = False, idle_timeout: float | None = None,
                max_sessions: int | None = None, allow: tuple[Network, ...] | None = None,
                relay: tuple[socket.AddressFamily, tuple[str, int]] | None = None, single_peer: bool = False,
                input_fd: int | None = None, answer_groups: bool = False, answer_multicast: bool = False,
                answer_broadcast: bool = False, stream: StreamTarget | None = None,
                stop_after_session: bool = False, busy_poll_us: int = DEFAULT_BUSY_POLL_US) -> ListenerConfig:
        if not endpoints:
            raise UsageError("nothing to listen on")
        if count is not None and count < 1:
            raise UsageError("--count must be at least 1")
        duration = _seconds("--duration", duration)
        idle_timeout = _seconds("--idle-timeout", idle_timeout, zero=True)
        if max_sessions is not None and max_sessions < 1:
            raise UsageError("--max-peers must be at least 1")
        if bind.rcvbuf is not None and not 0 < bind.rcvbuf < 1 << 31:  # (the kernel takes a C int)
            raise UsageError("--rcvbuf must be from 1 to 2147483647 bytes")
        if not 0 <= busy_poll_us <= MAX_BUSY_POLL_US:
            raise UsageError(f"--busy-poll must be from 0 to {MAX_BUSY_POLL_US} microseconds, got {busy_poll_us}")
        sessions = fork or relay is not None or stream is not None
        if stream is not None and relay is not None:
            raise UsageError("a session goes to one upstream: a relay or a stream, not both")
        if sessions:
            cap = session_cap(2 if relay is not None or stream is not None else 1)
            if stop_after_session:
                max_sessions = 1
            if max_sessions is None:
                # a process per peer: by default a flood of peers is not a flood of processes
                max_sessions = min(cap, MAX_PROGRAMS) if stream is not None and stream.argv is not None else cap
            elif max_sessions > cap:
                raise UsageError(f"--max-peers {max_sessions} is more sessions than the open-files limit allows"
                                 f" ({cap}); raise it (ulimit -n) or ask for fewer")
            if idle_timeout is None:
                idle_timeout = DEFAULT_IDLE_TIMEOUT
        if idle_timeout == 0:
            idle_timeout = None
        return cls(tuple(endpoints), bind, count, duration, fork, idle_timeout, max_sessions,
                   tuple(allow) if allow else None, relay, single_peer, input_fd, answer_groups, answer_multicast,
                   answer_broadcast, stream, stop_after_session, busy_poll_us)


def _is_multicast(ip: str | None) -> bool:
    """224.0.0.0/4, ff00::/8 or an IPv4-mapped group (a dual-stack socket's view of an IPv4 one)."""
    if not ip:
        return False
    ip = ip.partition("%")[0]
    if ip.lower().startswith("ff"):
        return True
    v4 = ip.rpartition(":")[2]
    head = v4.partition(".")[0]
    return "." in v4 and head.isdigit() and 224 <= int(head) < 240
