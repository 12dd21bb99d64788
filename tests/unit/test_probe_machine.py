"""The prober's verdict rules on a fake clock: no sockets, every branch of the evidence."""

from __future__ import annotations

import socket

import pytest

from udpkit.net.errqueue import icmp_reason
from udpkit.probe import CLOSED, FILTERED, OPEN, OPEN_FILTERED, ProbeMachine, Target

V4 = socket.AF_INET
V6 = socket.AF_INET6


def machine(*targets: Target, **kwargs: object) -> ProbeMachine:
    return ProbeMachine(list(targets), lambda t: b"hello", reason_for=icmp_reason, **kwargs)  # type: ignore[arg-type]


def test_a_reply_from_the_port_is_open_and_nothing_else_is() -> None:
    t = Target("127.0.0.1", 123, V4)
    m = machine(t)
    assert m.sends(0.0) == [(t, b"hello")]
    assert m.on_reply(V4, "127.0.0.1", 124, b"x", 0.1) is None  # another port's reply proves nothing here
    result = m.on_reply(V4, "127.0.0.1", 123, b"pong", 0.25)
    assert result is not None and (result.state, result.reason, result.reply, result.rtt) == (OPEN, "udp-response", b"pong", 0.25)
    assert m.done and m.next_wakeup() is None


@pytest.mark.parametrize(
    "family, ip, icmp, state, reason",
    [
        (V4, "127.0.0.1", (3, 3), CLOSED, "port-unreachable"),
        (V6, "::1", (1, 4), CLOSED, "port-unreachable"),
        (V4, "10.9.9.9", (3, 13), FILTERED, "admin-prohibited"),
        (V4, "10.9.9.9", (3, 1), FILTERED, "host-unreachable"),
        (V6, "fd00::9", (1, 1), FILTERED, "admin-prohibited"),
    ],
)
def test_icmp_destination_unreachable_is_closed_or_filtered_with_its_sender(
    family: int, ip: str, icmp: tuple[int, int], state: str, reason: str
) -> None:
    t = Target(ip, 53, family)
    m = machine(t)
    m.sends(0.0)
    result = m.on_icmp(family, ip, 53, icmp[0], icmp[1], "192.0.2.1", 0.01)
    assert result is not None and (result.state, result.reason, result.icmp) == (state, reason, (*icmp, "192.0.2.1"))


def test_other_icmp_messages_prove_nothing() -> None:
    t = Target("127.0.0.1", 7, V4)
    m = machine(t)
    m.sends(0.0)
    assert m.on_icmp(V4, "127.0.0.1", 7, 11, 0, "192.0.2.1", 0.1) is None  # time exceeded
    assert not m.done


def test_silence_after_every_try_is_open_filtered_with_backoff() -> None:
    t = Target("127.0.0.1", 9, V4)
    m = machine(t, retries=2, timeout=1.0, backoff=2.0)
    assert len(m.sends(0.0)) == 1 and m.next_wakeup() == 1.0
    assert m.sends(0.5) == []
    assert len(m.sends(1.0)) == 1 and m.next_wakeup() == 3.0  # second try waits twice as long
    assert len(m.sends(3.0)) == 1 and m.next_wakeup() == 7.0
    assert m.sends(7.0) == [] and m.done
    (result,) = m.results()
    assert (result.state, result.reason, result.tries) == (OPEN_FILTERED, "no-response", 3)


def test_a_late_reply_still_proves_the_port_open() -> None:
    t = Target("127.0.0.1", 9, V4)
    m = machine(t, retries=0, timeout=1.0)
    m.sends(0.0)
    m.sends(1.5)
    assert m.results()[0].state == OPEN_FILTERED
    result = m.on_reply(V4, "127.0.0.1", 9, b"late", 1.7)
    assert result is not None and result.state == OPEN and m.results()[0].state == OPEN


def test_the_rate_limit_spreads_first_tries() -> None:
    targets = [Target("127.0.0.1", p, V4) for p in range(1, 11)]
    m = machine(*targets, rate=4.0)
    assert len(m.sends(0.0)) == 1  # the bucket starts with one token
    assert len(m.sends(0.5)) == 2
    assert len(m.sends(1.5)) == 4  # at most one second's worth at once
    assert m.next_wakeup() is not None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        ProbeMachine([], retries=-1)
