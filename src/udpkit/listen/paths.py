"""Which receive path a listening socket takes: the one place that decides it.

Every path counts the same things; the cheaper ones skip what their case does not need (a datagram
object, ancillary data, an ``epoll`` wake-up). ``bench/listen_bench.py`` measured each.
"""

from __future__ import annotations

import ipaddress

__all__ = ["BLOCKING", "DISCARD", "GENERAL", "PLAIN", "RECORDING", "TIMED", "WILDCARD", "choose_path",
           "knows_destination"]

DISCARD = "discard"  # recvfrom_into into one buffer: count (and write raw) only
RECORDING = "recording"  # recvmsg with time and destination, straight to the sink
BLOCKING = "blocking"  # a blocking recvfrom/sendto loop without epoll
PLAIN = "plain"  # recvfrom/sendto under epoll
TIMED = "timed"  # recvmsg with the kernel's receive time, then sendto
WILDCARD = "wildcard"  # recvmsg with time and destination, answered from that destination
GENERAL = "general"  # recvmsg with time and destination, then routing: filters, sessions, replies


def knows_destination(ip: str) -> bool:
    """Does a socket bound to ``ip`` know every datagram's destination without asking? Only when
    bound to one unicast address: a wildcard or group address receives for many."""
    try:
        address = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return False
    return not (address.is_unspecified or address.is_multicast or str(address) == "255.255.255.255")


def choose_path(*, replies: bool, uses_time: bool, sink_format: str | None, routed: bool, bound_ip: str,
                sockets: int) -> str:
    """The receive path for one listening socket.

    ``routed``: sessions, a relay, an allow-list, socat's single peer or standard input — anything
    that must look at each datagram's sender before serving it.

    =========  ================  ==========  ======  ===============================  ===========
    replies    uses time         sink        routed  bound to                         path
    =========  ================  ==========  ======  ===============================  ===========
    no         —                 none, raw   no      anything                         DISCARD
    no         —                 formatted   no      anything                         RECORDING
    yes        no                none        no      one unicast address, one socket  BLOCKING
    yes        no                none        no      one unicast address              PLAIN
    yes        yes               none        no      one unicast address              TIMED
    yes        —                 none        no      a wildcard or group address      WILDCARD
    anything else                                                                     GENERAL
    =========  ================  ==========  ======  ===============================  ===========

    A replying socket bound to a wildcard (or group) address takes WILDCARD: it needs each
    datagram's destination, to answer from it and to leave multicast and broadcast unanswered
    (those go the GENERAL way, one by one).
    """
    if routed:
        return GENERAL
    if not replies:
        return DISCARD if sink_format in (None, "raw") else RECORDING
    if sink_format is not None:
        return GENERAL
    if not knows_destination(bound_ip):
        return WILDCARD
    if uses_time:
        return TIMED
    return BLOCKING if sockets == 1 else PLAIN
