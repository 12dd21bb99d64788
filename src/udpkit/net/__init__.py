"""The only code in udpkit that makes sockets: binding with the options a UDP service needs, and
receiving datagrams together with what the kernel says about them (arrival time, destination
address, receive-queue drops)."""

from udpkit.net.bind import BindOptions, bind_udp
from udpkit.net.rx import Datagram, receive, send_reply

__all__ = ["BindOptions", "Datagram", "bind_udp", "receive", "send_reply"]
