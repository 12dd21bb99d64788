"""Examining UDP (and TCP) sockets: what ``ss -u`` and ``ss -t`` show, as typed records.

``list_udp_sockets()`` reads the kernel's socket table over netlink sock_diag (falling back to
``/proc/net/udp``), optionally with owning processes and an ``ss`` filter expression;
``scan_udp_sockets()`` returns the same as a columnar :class:`SocketTable` for bulk work.

:class:`SocketState` is imported on first use (PEP 562): its ``enum`` costs ``udpkit ss`` ~5 ms a
start, and the listing works on the kernel's state numbers.
"""

from udpkit.inventory._listing import Backend, list_tcp_sockets, list_udp_sockets, scan_tcp_sockets, scan_udp_sockets
from udpkit.inventory._owners import socket_owners
from udpkit.inventory._system import cgroup_path_for_id, service_name
from udpkit.inventory._records import CongestionInfo, Process, SkMem, TcpInfo, TcpSocket, UdpSocket
from udpkit.inventory._table import SocketTable

TYPE_CHECKING = False  # typing is not imported at run time: see udpkit._typing
if TYPE_CHECKING:
    from udpkit.inventory._state import SocketState

__all__ = [
    "Backend",
    "CongestionInfo",
    "Process",
    "SkMem",
    "SocketState",
    "SocketTable",
    "TcpInfo",
    "TcpSocket",
    "UdpSocket",
    "cgroup_path_for_id",
    "list_tcp_sockets",
    "list_udp_sockets",
    "scan_tcp_sockets",
    "scan_udp_sockets",
    "service_name",
    "socket_owners",
]


def __getattr__(name: str) -> object:
    if name == "SocketState":
        from udpkit.inventory._state import SocketState

        globals()[name] = SocketState
        return SocketState
    raise AttributeError(f"module 'udpkit.inventory' has no attribute {name!r}")
