"""The prober's verdict rules on a fake clock: no sockets, every branch of the evidence."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpkit.net.errqueue import icmp_reason
from udpkit.probe import CLOSED, CONFLICT, FILTERED, OPEN, OPEN_FILTERED, ProbeMachine, Target

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
    sender = ip if state == CLOSED else "192.0.2.1"  # a port unreachable comes from the target itself
    result = m.on_icmp(family, ip, 53, icmp[0], icmp[1], sender, 0.01)
    assert result is not None and (result.state, result.reason, result.icmp) == (state, reason, (*icmp, sender))


@pytest.mark.parametrize("sender", ["10.9.0.3", None])
def test_a_port_unreachable_from_another_host_is_filtered_never_closed(sender: str | None) -> None:
    """A router rejecting for the target, or a third host forging the error: only the target can
    say its port is closed."""
    t = Target("10.9.0.1", 9999, V4)
    m = machine(t)
    m.sends(0.0)
    result = m.on_icmp(V4, "10.9.0.1", 9999, 3, 3, sender, 0.01)
    assert result is not None and (result.state, result.reason) == (FILTERED, "port-unreachable-from-another-host")
    assert result.icmp == (3, 3, sender)


def test_a_reply_after_the_targets_port_unreachable_is_a_conflict_not_an_overwrite() -> None:
    t = Target("10.9.0.1", 9998, V4)
    m = machine(t)
    m.sends(0.0)
    closed = m.on_icmp(V4, "10.9.0.1", 9998, 3, 3, "10.9.0.1", 0.01)
    assert closed is not None and closed.state == CLOSED
    late = m.on_reply(V4, "10.9.0.1", 9998, b"forged?", 0.02)
    assert late is not None and (late.state, late.reason) == (CONFLICT, "udp-response-after-port-unreachable")
    assert late.icmp == (3, 3, "10.9.0.1") and late.reply == b"forged?"
    assert m.on_reply(V4, "10.9.0.1", 9998, b"again", 0.03) is None  # reported once


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


def test_once_a_host_has_answered_its_round_trip_sets_the_wait() -> None:
    a, b = Target("127.0.0.1", 1, V4), Target("127.0.0.1", 2, V4)
    m = machine(a, b, timeout=1.0, min_timeout=0.05)
    m.sends(0.0, limit=1)
    m.on_icmp(V4, "127.0.0.1", 1, 3, 3, "127.0.0.1", 0.0001)
    m.sends(0.001)
    assert m.next_wakeup() == pytest.approx(0.051)  # not the one-second guess


def test_the_probers_own_port_is_reported_without_a_probe() -> None:
    own = Target("127.0.0.1", 40000, V4)
    m = ProbeMachine([own, Target("127.0.0.1", 1, V4)], own=[own])
    assert [t for t, _ in m.sends(0.0)] == [Target("127.0.0.1", 1, V4)]
    assert m.results()[0][:4] == (own, OPEN, "own-socket", 0)


def limited_host(ports: int, per_second: float, burst: int, silent: set[int], *, retries: int = 2) -> list[str]:
    """Drive a machine against a simulated remote host whose ICMP errors follow Linux's token bucket."""
    targets = [Target("192.0.2.7", p, V4) for p in range(1, ports + 1)]
    m = ProbeMachine(targets, retries=retries, timeout=1.0, min_timeout=0.05)
    tokens, last, now = float(burst), 0.0, 0.0
    for _ in range(100_000):
        if m.done:
            break
        for target, _data in m.sends(now):
            tokens = min(float(burst), tokens + (now - last) * per_second)
            last = now
            if target.port in silent or tokens < 1:
                continue
            tokens -= 1
            m.on_icmp(V4, target.ip, target.port, 3, 3, target.ip, now + 0.001)
        wake = m.next_wakeup()
        now = max(now + 0.001, wake if wake is not None else now)
    assert m.done
    return [r.state for r in m.results()]


def test_a_host_that_rate_limits_its_icmp_errors_is_paced_not_misjudged() -> None:
    states = limited_host(40, per_second=10, burst=6, silent={7, 30})
    assert states.count(CLOSED) == 38
    assert [i + 1 for i, s in enumerate(states) if s == OPEN_FILTERED] == [7, 30]


def test_a_host_that_drops_almost_everything_is_not_paced_for_ever() -> None:
    states = limited_host(60, per_second=1000, burst=1000, silent=set(range(3, 61)))
    assert states.count(OPEN_FILTERED) == 58 and states.count(CLOSED) == 2


def test_loopback_is_never_paced() -> None:
    targets = [Target("127.0.0.1", p, V4) for p in (1, 2)]
    m = ProbeMachine(targets, retries=0, timeout=0.5)
    m.sends(0.0)
    m.on_icmp(V4, "127.0.0.1", 1, 3, 3, "127.0.0.1", 0.001)
    m.sends(0.6)
    assert [r.state for r in m.results()] == [CLOSED, OPEN_FILTERED]


events = st.lists(
    st.tuples(st.sampled_from(["reply", "icmp", "tick"]), st.integers(1, 4), st.integers(0, 255), st.integers(0, 255)),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(events=events, family=st.sampled_from([V4, V6]))
def test_every_verdict_follows_from_its_evidence(events: list[tuple[str, int, int, int]], family: int) -> None:
    ip = "192.0.2.1" if family == V4 else "2001:db8::1"
    targets = [Target(ip, p, family) for p in range(1, 5)]
    m = ProbeMachine(targets, retries=1, timeout=0.5, reason_for=icmp_reason)
    now, replied, icmp_first = 0.0, set(), {}
    asked = {t.port for t, _ in m.sends(now)}  # a reply to a port not yet asked is no evidence
    for kind, port, icmp_type, code in events:
        now += 0.2
        if kind == "reply":
            m.on_reply(family, ip, port, b"x", now)
            if port in asked:
                replied.add(port)
        elif kind == "icmp":
            result = m.on_icmp(family, ip, port, icmp_type, code, ip, now)
            if result is not None:
                icmp_first.setdefault(port, (icmp_type, code))
        asked |= {t.port for t, _ in m.sends(now)}
    for result in m.results():
        port = result.target.port
        if result.state == OPEN:
            assert port in replied and result.reply == b"x"
        elif result.state in (CLOSED, FILTERED):
            assert port not in replied and result.icmp is not None
            unreachable = 3 if family == V4 else 1
            assert result.icmp[0] == unreachable and icmp_first[port] == result.icmp[:2]
            assert (result.state == CLOSED) == (result.icmp[1] == (3 if family == V4 else 4))
        elif result.state == CONFLICT and result.reason.endswith("unverified-during-forgery"):
            assert m.forgeries()  # a reply from a port not yet asked: somebody forges, bare replies prove nothing
        elif result.state == CONFLICT:  # an ICMP error, then a reply: both kept
            assert port in replied and port in icmp_first and result.reply == b"x"
            assert result.icmp is not None and result.icmp[:2] == icmp_first[port]
        else:  # under forgery a bare reply proves nothing: silence it stays
            assert result.state == OPEN_FILTERED and (port not in replied or m.forgeries()) and port not in icmp_first


# -- forgery: what a host off the path can send, and what it cannot move ----------------------------

REMOTE = "192.0.2.50"


def run_out(m: ProbeMachine, now: float) -> None:
    """Let the machine's clock run until every verdict is in (bounded)."""
    for _ in range(1000):
        wake = m.next_wakeup()
        if wake is None:
            return
        now = max(now + 0.001, wake)
        m.sends(now)
    raise AssertionError("not done")


def nonce_machine(*ports: int, **kwargs: object) -> ProbeMachine:
    payloads = iter(range(1, 1_000_000))
    return ProbeMachine([Target(REMOTE, p, V4) for p in ports], lambda t: next(payloads).to_bytes(8, "big"),
                        reason_for=icmp_reason, **kwargs)  # type: ignore[arg-type]


def test_an_error_quoting_what_we_never_sent_moves_nothing() -> None:
    m = nonce_machine(9999)
    (target, sent), = m.sends(0.0)
    assert m.on_icmp(V4, REMOTE, 9999, 3, 3, REMOTE, 0.01, quote=b"\0" * 8) is None  # forged 3/3
    assert m.on_icmp(V4, REMOTE, 9999, 3, 13, "10.9.0.3", 0.01, quote=b"") is None  # forged 3/13
    assert m.forgeries() == {REMOTE: 2} and not m.done
    result = m.on_icmp(V4, REMOTE, 9999, 3, 3, REMOTE, 0.02, quote=sent)  # the real one
    assert result is not None and result.state == CLOSED


def test_a_quote_cut_short_still_counts_if_it_keeps_our_nonce() -> None:
    m = ProbeMachine([Target(REMOTE, 53, V4)], lambda t: b"N" * 8 + b"rest of a long query", reason_for=icmp_reason)
    m.sends(0.0)
    result = m.on_icmp(V4, REMOTE, 53, 3, 3, REMOTE, 0.01, quote=b"N" * 8 + b"rest")
    assert result is not None and result.state == CLOSED


def test_a_datagram_from_a_port_we_never_probed_marks_the_host_forged() -> None:
    """The sweep arrives "from" target:9998 while we probed 9999 only: from then on a reply that
    does not carry our nonce proves nothing there, and ends as conflicting evidence, never open."""
    m = nonce_machine(9999, retries=0, timeout=0.5)
    m.sends(0.0)
    assert m.on_reply(V4, REMOTE, 9998, b"forged", 0.01) is None
    assert m.on_reply(V4, REMOTE, 9999, b"forged", 0.02) is None
    run_out(m, 0.02)
    (result,) = m.results()
    assert (result.state, result.reason, result.reply) == (CONFLICT, "udp-response-unverified-during-forgery", b"forged")


def test_a_reply_echoing_our_nonce_is_open_even_under_forgery() -> None:
    m = nonce_machine(7)
    (_t, sent), = m.sends(0.0)
    m.on_forgery(REMOTE, V4)
    result = m.on_reply(V4, REMOTE, 7, sent, 0.01)  # an echo service sends our bytes back
    assert result is not None and result.state == OPEN


def test_forgery_noticed_later_turns_earlier_bare_verdicts_into_conflicts() -> None:
    m = nonce_machine(1, 2, 3)
    sent = dict(m.sends(0.0))
    m.on_reply(V4, REMOTE, 1, b"bare", 0.01)  # proves nothing of ours
    m.on_reply(V4, REMOTE, 2, b"xx" + sent[Target(REMOTE, 2, V4)], 0.01)  # echoes our nonce
    m.on_icmp(V4, REMOTE, 3, 3, 3, REMOTE, 0.01, quote=sent[Target(REMOTE, 3, V4)])
    assert m.take_decided() == []
    m.on_forgery(REMOTE, V4)  # e.g. a canary port caught a sweep
    (changed,) = m.take_decided()
    assert (changed.target.port, changed.state, changed.reason) == (1, CONFLICT, "udp-response-unverified-during-forgery")
    assert [r.state for r in m.results()] == [CONFLICT, OPEN, CLOSED]


def test_with_a_service_probe_only_a_recognised_reply_is_open() -> None:
    from udpkit.probe import Reading
    from udpkit.services.base import Evidence

    def read(target: Target, reply: bytes) -> Reading:
        return Reading(Evidence("ntp", {}), True) if reply == b"ours" else Reading(None, False)

    m = ProbeMachine([Target(REMOTE, 123, V4), Target(REMOTE, 124, V4)], retries=0, timeout=0.5, classify=read)
    m.sends(0.0)
    assert m.on_reply(V4, REMOTE, 123, b"not an answer to us", 0.01) is None
    result = m.on_reply(V4, REMOTE, 124, b"ours", 0.01)
    assert result is not None and (result.state, result.reason) == (OPEN, "ntp")
    run_out(m, 0.01)
    assert [(r.state, r.reason) for r in m.results()] == [(CONFLICT, "unmatched-reply"), (OPEN, "ntp")]
