"""sock_extended_err as the kernel queues it for our datagrams: pure parsing, captured bytes."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpkit.errors import ParseError
from udpkit.net.errqueue import icmp_reason, parse_extended_err

# Captured on this project's machine: ICMP port unreachable answering a datagram to 127.0.0.1:9 ...
V4_PORT_UNREACHABLE = bytes.fromhex("6f000000020303000000000000000000020000007f0000010000000000000000")
# ... and ICMPv6 port unreachable (type 1, code 4) answering one to [::1]:9.
V6_PORT_UNREACHABLE = bytes.fromhex(
    "6f0000000301040000000000000000000a000000000000000000000000000000000000000000000100000000"
)


def test_ipv4_port_unreachable_from_loopback() -> None:
    assert parse_extended_err(V4_PORT_UNREACHABLE) == (111, 2, 3, 3, 0, "127.0.0.1")


def test_ipv6_port_unreachable_from_loopback() -> None:
    assert parse_extended_err(V6_PORT_UNREACHABLE) == (111, 3, 1, 4, 0, "::1")


def test_no_offender_and_short_input() -> None:
    assert parse_extended_err(V4_PORT_UNREACHABLE[:16])[5] is None
    with pytest.raises(ParseError):
        parse_extended_err(b"\x6f\x00")


@pytest.mark.parametrize(
    "family, icmp_type, code, name",
    [(socket.AF_INET, 3, 3, "port-unreachable"), (socket.AF_INET, 3, 13, "admin-prohibited"),
     (socket.AF_INET, 3, 10, "host-prohibited"), (socket.AF_INET6, 1, 4, "port-unreachable"),
     (socket.AF_INET6, 1, 1, "admin-prohibited"), (socket.AF_INET, 11, 0, "icmp-11/0"),
     (socket.AF_INET6, 3, 0, "icmp6-3/0")],
)
def test_reasons_name_the_icmp_error(family: int, icmp_type: int, code: int, name: str) -> None:
    assert icmp_reason(family, icmp_type, code) == name


@given(st.binary(max_size=80))
def test_random_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    try:
        parse_extended_err(data)
    except ParseError:
        pass
