"""The typed records of the socket inventory: one :class:`UdpSocket` per kernel UDP socket.

Records are NamedTuples, not dataclasses: a listing of 50,000 sockets builds them with
``map(UdpSocket._make, zip(*columns))`` at C speed, where a frozen dataclass costs ~1 µs each and
its import pulls in ``inspect`` (DESIGN.md §3 asks ``udpkit ss`` to start lean).
"""

from __future__ import annotations

import socket
from enum import IntEnum
from typing import Any, NamedTuple

from udpkit.addr import Endpoint

__all__ = ["Process", "SkMem", "SocketState", "UdpSocket"]


class SocketState(IntEnum):
    """The kernel's ``sk_state`` (``include/net/tcp_states.h``); UDP uses only ESTABLISHED and CLOSE."""

    UNKNOWN = 0
    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT1 = 4
    FIN_WAIT2 = 5
    TIME_WAIT = 6
    CLOSE = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11

    @property
    def label(self) -> str:
        """The name ``ss`` prints: ``ESTAB`` for a connected UDP socket, ``UNCONN`` for an unconnected one."""
        return _LABELS[self]


_LABELS = {
    SocketState.UNKNOWN: "UNKNOWN",
    SocketState.ESTABLISHED: "ESTAB",
    SocketState.SYN_SENT: "SYN-SENT",
    SocketState.SYN_RECV: "SYN-RECV",
    SocketState.FIN_WAIT1: "FIN-WAIT-1",
    SocketState.FIN_WAIT2: "FIN-WAIT-2",
    SocketState.TIME_WAIT: "TIME-WAIT",
    SocketState.CLOSE: "UNCONN",
    SocketState.CLOSE_WAIT: "CLOSE-WAIT",
    SocketState.LAST_ACK: "LAST-ACK",
    SocketState.LISTEN: "LISTEN",
    SocketState.CLOSING: "CLOSING",
}


class Process(NamedTuple):
    """A process holding a socket open: its command name (``/proc/PID/stat``), pid and file descriptor."""

    name: str
    pid: int
    fd: int


class SkMem(NamedTuple):
    """``SK_MEMINFO_*`` from ``INET_DIAG_SKMEMINFO``, as ``ss -m`` prints them (``skmem:(r…,rb…,…,d…)``).

    ``backlog`` and ``drops`` are ``None`` on kernels too old to report them.
    """

    rmem_alloc: int
    rcvbuf: int
    wmem_alloc: int
    sndbuf: int
    fwd_alloc: int
    wmem_queued: int
    optmem: int
    backlog: int | None = None
    drops: int | None = None


class UdpSocket(NamedTuple):
    """One UDP socket as the kernel reports it.

    Fields the chosen backend cannot know are ``None``: ``/proc/net/udp`` has no device binding,
    no ``IPV6_V6ONLY`` and no socket cookie; ``skmem`` is only filled when memory was asked for.
    """

    family: socket.AddressFamily
    state: SocketState
    recv_q: int
    send_q: int
    local_ip: str
    local_port: int
    peer_ip: str
    peer_port: int
    interface: str | None
    inode: int
    uid: int
    cookie: int | None
    ipv6only: bool | None
    drops: int | None
    skmem: SkMem | None
    cgroup_id: int | None
    mark: int | None
    shutdown: int | None
    processes: tuple[Process, ...]

    @property
    def local(self) -> Endpoint:
        """The bound address, with the device for ``SO_BINDTODEVICE`` sockets."""
        return Endpoint(self.local_ip, self.local_port, self.family, self.interface)

    @property
    def peer(self) -> Endpoint:
        """The connected-to address; the wildcard with port 0 for an unconnected socket."""
        return Endpoint(self.peer_ip, self.peer_port, self.family)

    @property
    def connected(self) -> bool:
        return self.state == SocketState.ESTABLISHED

    def to_json(self) -> dict[str, Any]:
        """The object ``udpkit ss --json`` prints (DESIGN.md §2)."""
        return {
            "netid": "udp",
            "family": "inet" if self.family == socket.AF_INET else "inet6",
            "state": self.state.label,
            "recv_q": self.recv_q,
            "send_q": self.send_q,
            "local": {"address": self.local_ip, "port": self.local_port, "interface": self.interface},
            "peer": {"address": self.peer_ip, "port": self.peer_port},
            "inode": self.inode,
            "uid": self.uid,
            "cookie": self.cookie,
            "ipv6only": self.ipv6only,
            "drops": self.drops,
            "skmem": self.skmem._asdict() if self.skmem is not None else None,
            "processes": [p._asdict() for p in self.processes],
        }
