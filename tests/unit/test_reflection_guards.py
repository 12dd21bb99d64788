"""The classic services' guards against reflection loops: no answer to another service's port, and
a per-peer reply budget that kills a ping-pong between two services within a second."""

from __future__ import annotations

import socket

import pytest

from udpkit.addr import Endpoint
from udpkit.services.classic import DEFAULT_RATE_LIMIT, Daytime, Echo, Time
from udpkit.services.ratelimit import ClientLimiter, ResponseRateLimiter

A = Endpoint("192.0.2.1", 7300, socket.AF_INET)
B = Endpoint("192.0.2.2", 7301, socket.AF_INET)


@pytest.mark.parametrize("port", [7, 9, 13, 19, 37, 53, 123, 1023])
def test_a_service_port_as_source_is_not_answered(port: int) -> None:
    for service in (Echo(), Daytime(), Time()):
        assert service.handle(b"x", A._replace(port=port), 0.0) is None
        assert service.stats["service_port"] == 1
    assert Echo(low_ports=True).handle(b"x", A._replace(port=7), 0.0) == b"x"


@pytest.mark.parametrize("left,right", [(Echo, Echo), (Daytime, Echo), (Time, Echo), (Daytime, Daytime)])
def test_a_forged_ping_pong_between_two_services_dies_within_a_second(left: type[Echo], right: type[Echo]) -> None:
    """Simulated: each answer arrives at the other side 40 µs later, as on a LAN."""
    one, other = left(), right()
    datagram, now, bounces = b"forged", 0.0, 0
    sides = [(one, B), (other, A)]  # (service, who it hears from)
    while datagram is not None and bounces < 1_000_000:
        service, sender = sides[bounces % 2]
        reply = service.handle(datagram, sender, now)
        datagram = reply if isinstance(reply, bytes) or reply is None else reply[0]
        now += 40e-6
        bounces += 1
    assert now < 1.0 and bounces <= 2 * (2 * DEFAULT_RATE_LIMIT + 2)


def test_a_legitimate_client_within_the_budget_is_always_answered() -> None:
    echo = Echo()
    assert all(echo.handle(b"ping", B, i / 50) == b"ping" for i in range(1000))  # 50 a second
    assert Echo(rate_limit=0).handle(b"x", B, 0.0) == b"x"


def test_the_limiter_tables_stay_bounded_under_a_spoofed_flood() -> None:
    limiter, rrl = ClientLimiter(10), ResponseRateLimiter(10)
    for i in range(70_000):
        ip = f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"
        limiter.admit(ip, 0.0)
        rrl.decide(ip, 0.0)
    assert len(limiter._table) == len(rrl._table) == 16384
