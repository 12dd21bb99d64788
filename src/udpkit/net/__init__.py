"""The only code in udpkit that makes sockets: binding with the options a UDP service needs, and
receiving datagrams together with what the kernel says about them (arrival time, destination
address, receive-queue drops)."""

from udpkit.net.bind import BindOptions, bind_udp, free_port_pair, upstream_socket
from udpkit.net.connect import HostNotFound, accept_first, bind_passive, connect_udp, tcp_upstream
from udpkit.net.errqueue import IcmpError, enable_errors, icmp_reason, read_errors
from udpkit.net.interfaces import Interface, interface, interfaces
from udpkit.net.multicast import Membership, MulticastSend, discovery_listener, discovery_socket, parse_membership
from udpkit.net.probing import ProbeSocket, is_local
from udpkit.net.pump import pump
from udpkit.net.rx import (
    MAX_DATAGRAM,
    TIMESTAMP_SPACE,
    Datagram,
    OnError,
    count_and_forget,
    error_name,
    kernel_time,
    receive,
    send_reply,
    socket_drops,
)

__all__ = [
    "BindOptions",
    "Datagram",
    "HostNotFound",
    "IcmpError",
    "Interface",
    "MAX_DATAGRAM",
    "Membership",
    "MulticastSend",
    "OnError",
    "ProbeSocket",
    "TIMESTAMP_SPACE",
    "accept_first",
    "bind_passive",
    "bind_udp",
    "connect_udp",
    "count_and_forget",
    "discovery_listener",
    "discovery_socket",
    "enable_errors",
    "error_name",
    "free_port_pair",
    "icmp_reason",
    "interface",
    "interfaces",
    "is_local",
    "kernel_time",
    "parse_membership",
    "pump",
    "read_errors",
    "receive",
    "send_reply",
    "socket_drops",
    "tcp_upstream",
    "upstream_socket",
]
