"""The scanner on loopback: one socket per family, verdicts backed by a reply or the kernel's ICMP error."""

from __future__ import annotations

import socket

from tests.integration.conftest import free_port
from udpkit.addr import Endpoint
from udpkit.listen import Listener
from udpkit.probe import CLOSED, OPEN, OPEN_FILTERED, Target, scan




def test_open_closed_and_silent_ports_on_both_families() -> None:
    v4, v6 = Endpoint("127.0.0.1", 0, socket.AF_INET), Endpoint("::1", 0, socket.AF_INET6)
    with Listener([v4, v6], respond="echo") as echo, Listener([v4], respond="discard") as discard:
        echo.start()
        discard.start()
        targets = [
            Target("127.0.0.1", echo.bound[0].port, socket.AF_INET),
            Target("::1", echo.bound[1].port, socket.AF_INET6),
            Target("127.0.0.1", discard.bound[0].port, socket.AF_INET),
            Target("127.0.0.1", free_port(socket.AF_INET, "127.0.0.1"), socket.AF_INET),
            Target("::1", free_port(socket.AF_INET6, "::1"), socket.AF_INET6),
        ]
        results = {r.target: r for r in scan(targets, lambda t: b"are you there", timeout=0.3, retries=1)}
    states = [results[t].state for t in targets]
    assert states == [OPEN, OPEN, OPEN_FILTERED, CLOSED, CLOSED]
    assert results[targets[0]].reply == b"are you there"  # the echo service's answer is the evidence
    assert results[targets[3]].icmp == (3, 3, "127.0.0.1") and results[targets[4]].icmp == (1, 4, "::1")
    assert results[targets[2]].tries == 2 and results[targets[2]].reason == "no-response"


def test_the_probers_port_is_drawn_at_random_for_every_scan() -> None:
    """An off-path forger must guess the port: the kernel draws it at random from the ephemeral
    range for each new socket (a sequential allocator would make it guessable from one scan)."""
    from udpkit.net import ProbeSocket

    ports = []
    for _ in range(12):
        with ProbeSocket(socket.AF_INET) as sock:
            ports.append(sock.port)
    steps = {b - a for a, b in zip(ports, ports[1:])}
    assert len(set(ports)) == len(ports) and len(steps) > 6, ports
