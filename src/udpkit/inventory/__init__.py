"""Examining UDP sockets: what ``ss -u`` shows, as typed records.

``list_udp_sockets()`` reads the kernel's socket table over netlink sock_diag (falling back to
``/proc/net/udp``), optionally with owning processes and an ``ss`` filter expression;
``scan_udp_sockets()`` returns the same as a columnar :class:`SocketTable` for bulk work.
"""

from udpkit.inventory._listing import Backend, list_udp_sockets, scan_udp_sockets
from udpkit.inventory._system import cgroup_path_for_id, service_name
from udpkit.inventory._records import Process, SkMem, SocketState, UdpSocket
from udpkit.inventory._table import SocketTable

__all__ = [
    "Backend",
    "Process",
    "SkMem",
    "SocketState",
    "SocketTable",
    "UdpSocket",
    "cgroup_path_for_id",
    "list_udp_sockets",
    "scan_udp_sockets",
    "service_name",
]
