"""The typed records of the socket inventory: one :class:`UdpSocket` per kernel UDP socket, one
:class:`TcpSocket` per TCP socket (``udpkit ss -t`` lists both, as ``ss -tu`` does).

Records are NamedTuples, not dataclasses: a listing of 50,000 sockets builds them with
``map(UdpSocket._make, zip(*columns))`` at C speed, where a frozen dataclass costs ~1 µs each and
its import pulls in ``inspect`` (DESIGN.md §3 asks ``udpkit ss`` to start lean).
"""

from __future__ import annotations

import struct
from _socket import AF_INET

TYPE_CHECKING = False  # typing is not imported at run time: see udpkit._typing
if TYPE_CHECKING:
    from socket import AddressFamily
    from typing import Any, NamedTuple
    from udpkit.addr import Endpoint
    from udpkit.inventory._state import SocketState
else:
    from udpkit._typing import NamedTuple

__all__ = ["CongestionInfo", "Process", "STATE_LABELS", "SkMem", "TcpInfo", "TcpSocket", "UdpSocket", "state_label"]

# The kernel's sk_state numbers (include/net/tcp_states.h) as plain ints, and ss's name for each.
# The listing and ``udpkit ss`` work on these: neither imports ``socket`` or ``enum`` (9 ms of a
# 27 ms start, measured), and a record's ``family`` and ``state`` become ``AddressFamily`` and
# :class:`~udpkit.inventory.SocketState` members only when a caller builds records.
(UNKNOWN, ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN,
 CLOSING) = range(12)
STATE_LABELS = ("UNKNOWN", "ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT", "UNCONN",
                "CLOSE-WAIT", "LAST-ACK", "LISTEN", "CLOSING")


def state_label(state: int | None) -> str:
    """The name ``ss`` prints for ``state``: ``ESTAB`` for a connected UDP socket, ``UNCONN`` for an
    unconnected one, ``UNKNOWN`` for a number this table does not know (a newer kernel's) or none."""
    return STATE_LABELS[state] if state is not None and 0 <= state < len(STATE_LABELS) else "UNKNOWN"


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

    family: AddressFamily
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
        from udpkit.addr import Endpoint

        return Endpoint(self.local_ip, self.local_port, self.family, self.interface)

    @property
    def peer(self) -> Endpoint:
        """The connected-to address; the wildcard with port 0 for an unconnected socket."""
        from udpkit.addr import Endpoint

        return Endpoint(self.peer_ip, self.peer_port, self.family)

    @property
    def connected(self) -> bool:
        return self.state == ESTABLISHED

    def to_json(self) -> dict[str, Any]:
        """The object ``udpkit ss --json`` prints (DESIGN.md §2)."""
        return {
            "netid": "udp",
            "family": "inet" if self.family == AF_INET else "inet6",
            "state": state_label(self.state),
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


class TcpInfo(NamedTuple):
    """The kernel's ``struct tcp_info`` (``linux/tcp.h``) without the ``tcpi_`` prefix: what ``ss -i`` prints.

    Times are in microseconds (``rtt``, ``rto``…) or milliseconds (``last_data_sent``…), rates in
    bytes per second, as the kernel reports them. A shorter block from an older kernel reads as
    zeros past its end, as ss does; fields newer kernels append are not read.
    """

    state: int
    ca_state: int
    retransmits: int
    probes: int
    backoff: int
    options: int
    wscale: int  # snd_wscale in the low 4 bits, rcv_wscale in the high 4
    flags: int  # bit 0: delivery_rate_app_limited
    rto: int
    ato: int
    snd_mss: int
    rcv_mss: int
    unacked: int
    sacked: int
    lost: int
    retrans: int
    fackets: int
    last_data_sent: int
    last_ack_sent: int
    last_data_recv: int
    last_ack_recv: int
    pmtu: int
    rcv_ssthresh: int
    rtt: int
    rttvar: int
    snd_ssthresh: int
    snd_cwnd: int
    advmss: int
    reordering: int
    rcv_rtt: int
    rcv_space: int
    total_retrans: int
    pacing_rate: int
    max_pacing_rate: int
    bytes_acked: int
    bytes_received: int
    segs_out: int
    segs_in: int
    notsent_bytes: int
    min_rtt: int
    data_segs_in: int
    data_segs_out: int
    delivery_rate: int
    busy_time: int
    rwnd_limited: int
    sndbuf_limited: int
    delivered: int
    delivered_ce: int
    bytes_sent: int
    bytes_retrans: int
    dsack_dups: int
    reord_seen: int
    rcv_ooopack: int
    snd_wnd: int

    @classmethod
    def decode(cls, data: bytes) -> TcpInfo:
        """``INET_DIAG_INFO``'s payload -> TcpInfo; short blocks are padded with zeros."""
        return cls._make(_TCP_INFO.unpack(bytes(data[: _TCP_INFO.size]).ljust(_TCP_INFO.size, b"\0")))

    @property
    def snd_wscale(self) -> int:
        return self.wscale & 0xF

    @property
    def rcv_wscale(self) -> int:
        return self.wscale >> 4

    @property
    def app_limited(self) -> bool:
        return bool(self.flags & 1)


_TCP_INFO = struct.Struct("=8B24I4Q6IQ3Q2I2Q2I2I")


class CongestionInfo(NamedTuple):
    """A congestion control's own block, as ``ss -i`` shows it: ``kind`` is ``"bbr"``, ``"vegas"`` or ``"dctcp"``.

    bbr: ``(bw_lo, bw_hi, min_rtt, pacing_gain, cwnd_gain)``; vegas: ``(enabled, rttcnt, rtt, minrtt)``;
    dctcp: ``(enabled, ce_state, alpha, ab_ecn, ab_tot)`` — the kernel's structs, field by field.
    """

    kind: str
    values: tuple[int, ...]

    @classmethod
    def decode(cls, kind: str, data: bytes) -> CongestionInfo | None:
        layout = _CC_LAYOUTS[kind]
        if kind == "bbr":  # ss copies what there is and zero-fills the rest
            data = bytes(data[: layout.size]).ljust(layout.size, b"\0")
        if len(data) < layout.size:
            return None
        return cls(kind, layout.unpack_from(data))


_CC_LAYOUTS = {"bbr": struct.Struct("=5I"), "vegas": struct.Struct("=4I"), "dctcp": struct.Struct("=HHIII")}


class TcpSocket(NamedTuple):
    """One TCP socket as the kernel reports it: :class:`UdpSocket`'s fields, then TCP's own.

    ``timer`` is the kernel's ``idiag_timer`` (0 off, 1 retransmit, 2 keepalive, 3 TIME-WAIT, 4 zero
    window probe), ``expires`` its milliseconds left and ``retrans`` its count; ``info`` and
    ``congestion``/``cc_info`` are filled only when ``tcp_info`` was asked for. A TIME-WAIT or SYN-RECV
    entry is not a full socket: it has no inode, owner, memory or info.
    """

    family: AddressFamily
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
    timer: int
    retrans: int
    expires: int
    info: TcpInfo | None
    congestion: str | None
    cc_info: CongestionInfo | None

    @property
    def local(self) -> Endpoint:
        from udpkit.addr import Endpoint

        return Endpoint(self.local_ip, self.local_port, self.family, self.interface)

    @property
    def peer(self) -> Endpoint:
        from udpkit.addr import Endpoint

        return Endpoint(self.peer_ip, self.peer_port, self.family)

    def to_json(self) -> dict[str, Any]:
        """UdpSocket's object with ``netid`` ``tcp`` and the timer, congestion control and ``tcp_info``."""
        obj = UdpSocket.to_json(self)  # type: ignore[arg-type]
        obj["netid"] = "tcp"
        obj["timer"] = {"kind": self.timer, "expires_ms": self.expires, "retrans": self.retrans}
        obj["congestion"] = self.congestion
        obj["tcp_info"] = self.info._asdict() if self.info is not None else None
        return obj
