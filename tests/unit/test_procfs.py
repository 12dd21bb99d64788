"""/proc/net/udp{,6} lines into socket rows: the fallback backend's parser."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpkit.errors import ParseError
from udpkit.inventory._procfs import decode_address, parse_proc_net_udp
from udpkit.inventory._table import SocketTable
from udpkit.inventory._netlink import RawBatch

HEADER = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"
V4 = HEADER + "  123: 0100007F:9CBB 00000000:0000 07 00000010:000009C0 00:00000000 00000000  1000        0 4585 2 0000000000000000 5\n"
V6 = HEADER + (
    "  200: 00000000000000000000000001000000:9CBD 00000000000000000000000000000000:0000 07 "
    "00000000:00000000 00:00000000 00000000     0        0 4587 2 0000000000000000 0\n"
    "  201: 0000000000000000FFFF00000100007F:D20C 0000000000000000FFFF00000100007F:0035 01 "
    "00000000:00000000 00:00000000 00000000     0        0 4591 2 0000000000000000 0\n"
)


def table(text: str, family: int) -> SocketTable:
    rows = list(parse_proc_net_udp(text.splitlines(keepends=True), family))
    names = set().union(*rows)
    return SocketTable([RawBatch(len(rows), {n: [r.get(n) for r in rows] for n in names})])


def test_decode_address_reads_host_order_words() -> None:
    assert decode_address("0100007F:0035") == (b"\x7f\x00\x00\x01", 53)
    assert decode_address("00000000000000000000000001000000:007B")[0] == socket.inet_pton(socket.AF_INET6, "::1")


def test_ipv4_line() -> None:
    (sock,) = table(V4, socket.AF_INET)
    assert (sock.local_ip, sock.local_port, sock.peer_ip, sock.peer_port) == ("127.0.0.1", 40123, "0.0.0.0", 0)
    assert (sock.send_q, sock.recv_q, sock.uid, sock.inode, sock.drops) == (16, 2496, 1000, 4585, 5)
    assert sock.state.label == "UNCONN"
    assert sock.interface is None and sock.ipv6only is None and sock.cookie is None  # /proc does not say


def test_ipv6_lines_including_a_mapped_peer() -> None:
    a, b = table(V6, socket.AF_INET6)
    assert (a.local_ip, a.local_port) == ("::1", 40125)
    assert (b.local_ip, b.peer_ip, b.peer_port, b.state.label) == ("::ffff:127.0.0.1", "::ffff:127.0.0.1", 53, "ESTAB")


@pytest.mark.parametrize("line", ["  1: 0100007F:9CBB", "  1: 0100007G:9CBB 00000000:0000 07 0:0 0:0 0 0 0 1 2 0 0",
                                  "  1: 0100007F 00000000:0000 07 0:0 0:0 0 0 0 1 2 0 0",
                                  "  1: 0100007F:9CBB 00000000:0000 07 0:0 0:0 0 x 0 1 2 0 0"])
def test_malformed_lines_are_parse_errors(line: str) -> None:
    with pytest.raises(ParseError):
        list(parse_proc_net_udp([HEADER, line], socket.AF_INET))


@given(st.lists(st.text(max_size=120), max_size=5), st.sampled_from([socket.AF_INET, socket.AF_INET6]))
def test_random_text_never_crashes_the_parser(lines: list[str], family: int) -> None:
    try:
        list(parse_proc_net_udp([HEADER, *lines], family))
    except ParseError:
        pass
