"""The kernel's ICMP errors for our own datagrams, read without root from the error queue."""

from __future__ import annotations

import errno
import socket
import time

import pytest

from tests.integration.conftest import free_port
from udpkit.net import enable_errors, icmp_reason, read_errors



@pytest.mark.parametrize("family, host, expected", [
    (socket.AF_INET, "127.0.0.1", (3, 3)), (socket.AF_INET6, "::1", (1, 4)),
])
def test_a_closed_port_answers_with_port_unreachable_and_says_who_sent_it(
    family: int, host: str, expected: tuple[int, int]
) -> None:
    port = free_port(family, host)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        enable_errors(sock)
        sock.sendto(b"probe", (host, port))
        deadline = time.monotonic() + 2
        errors = read_errors(sock)
        while not errors and time.monotonic() < deadline:
            time.sleep(0.01)
            errors = read_errors(sock)
    assert len(errors) == 1
    (err,) = errors
    assert (err.type, err.code) == expected and err.errno == errno.ECONNREFUSED
    assert err.offender == host and err.destination == (host, port)
    assert icmp_reason(family, err.type, err.code) == "port-unreachable"


def test_an_empty_queue_is_an_empty_list() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        enable_errors(sock)
        assert read_errors(sock) == []


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_the_probers_socket_reads_the_same_errors_as_it_sends(family: int, host: str) -> None:
    """The one reader, where the prober uses it: after each datagram to a local address, and in batches."""
    from udpkit.net import ProbeSocket

    closed = [free_port(family, host) for _ in range(3)]
    with ProbeSocket(family) as sock:
        first = sock.send_take(b"probe", (host, closed[0]))
        assert first is not None and first.destination == (host, closed[0]) and first.offender == host
        for port in closed[1:]:
            sock.send(b"probe", (host, port))
        later = sock.errors()
        assert sorted(e.destination for e in later if e.destination) == sorted((host, p) for p in closed[1:])
        assert sock.errors() == [] and sock.send_take(b"x", (host, sock.port)) is None  # own port: no error
