"""The prober's rules, without sockets or clocks: what to send when, and what each answer proves.

``ProbeMachine`` follows aioquic's shape: the driver asks ``sends(now)`` for the datagrams due, feeds
back ``on_reply``/``on_icmp`` as they arrive and sleeps until ``next_wakeup()``. The verdicts are the
honest ones: ``open`` only for an application reply from the probed port; ``closed`` for an ICMP
port unreachable (IPv4 3/3, IPv6 1/4) sent by the target itself — a port unreachable from any other
host (a router's reject, or a forgery) is ``filtered``, with that sender; ``filtered`` for any other
ICMP destination unreachable; ``open|filtered`` for silence after every try; and ``conflict`` when
the evidence disagrees (the target's port unreachable, then a reply from that port): reported with
both, never silently overwritten.

Timing follows the evidence. Until a host has answered, a try waits ``timeout * backoff**n``; once it
has, tries wait a retransmission timeout computed from the measured round trips (RFC 6298's
``srtt + 4 * rttvar``, at least ``min_timeout``), so a scan of loopback is not held up by a
one-second guess. Remote Linux hosts send about one ICMP error per second per peer, so a host that
has answered some ports with ICMP and then falls silent is *paced* (see ``_Host``).
"""

from __future__ import annotations

import heapq
import ipaddress
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

from udpkit.services.base import Evidence

__all__ = ["CLOSED", "CONFLICT", "FILTERED", "OPEN", "OPEN_FILTERED", "PortResult", "ProbeMachine", "Target"]

OPEN, CLOSED, FILTERED, OPEN_FILTERED, CONFLICT = "open", "closed", "filtered", "open|filtered", "conflict"
#: The reason of a port unreachable that the target did not send.
NOT_FROM_TARGET = "port-unreachable-from-another-host"
_PORT_UNREACHABLE: dict[int, tuple[int, int]] = {socket.AF_INET: (3, 3), socket.AF_INET6: (1, 4)}
_DEST_UNREACHABLE: dict[int, int] = {socket.AF_INET: 3, socket.AF_INET6: 1}

#: Pacing: probes judged together, the share that must be answered for the pace to count as kept,
#: the first gap between probes and the slowest pace tried (Linux's default is one error a second).
_WINDOW, _KEPT, _FIRST_GAP, _MAX_GAP = 8, 0.75, 0.02, 1.0
#: Linux lets a burst of six errors through before its per-peer limit applies
#: (``XRLIM_BURST_FACTOR``): a host that has sent fewer has not been limited yet.
_BURST = 6


class Target(NamedTuple):
    ip: str
    port: int
    family: int


class PortResult(NamedTuple):
    """A port's verdict and its evidence: the reply (bytes, and what a service probe read in it) or
    the ICMP error (type, code, sender)."""

    target: Target
    state: str
    reason: str
    tries: int
    rtt: float | None = None
    reply: bytes | None = None
    icmp: tuple[int, int, str | None] | None = None
    evidence: Evidence | None = None


class _Probe:
    __slots__ = ("host", "paced", "result", "sent_at", "target", "tries")

    def __init__(self, target: Target, host: _Host) -> None:
        self.target = target
        self.host = host
        self.tries = 0
        self.sent_at = 0.0
        self.paced = False  # the current try was sent at the host's pace
        self.result: PortResult | None = None


class _Host:
    """Round-trip estimate and ICMP pacing for one address.

    Strategy: a host that has sent a burst of ICMP errors for some ports but is silent for others
    may be rate-limiting its errors rather than hiding services. Its silent ports are sent again one at a
    time, ``gap`` seconds apart, and judged in windows of ``_WINDOW`` probes: while under ``_KEPT`` of
    a window is answered the gap doubles (up to ``_MAX_GAP``) and silence is not held against the
    ports; once the host keeps pace, silence counts as a try again. A host still mostly silent at
    the slowest pace is dropping, not limiting: pacing ends. Loopback is never limited by Linux.
    """

    __slots__ = ("answered", "exempt", "gap", "icmp", "kept", "next_send", "paced", "queue", "rttvar",
                 "samples", "srtt", "tried_pacing", "window")

    def __init__(self, exempt: bool) -> None:
        self.exempt = exempt
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.samples = 0
        self.icmp = 0
        self.paced = False
        self.tried_pacing = False
        self.kept = False
        self.gap = 0.0
        self.next_send = 0.0
        self.window = 0
        self.answered = 0
        self.queue: deque[_Probe] = deque()

    def sample(self, rtt: float) -> None:
        self.samples += 1
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def judge(self, answered: bool) -> None:
        """One paced probe resolved; every ``_WINDOW`` of them decide the pace."""
        self.window += 1
        self.answered += answered
        if self.window < _WINDOW:
            return
        share = self.answered / self.window
        self.window = self.answered = 0
        if share >= _KEPT:
            self.kept = True
        elif self.gap < _MAX_GAP:
            self.gap = min(_MAX_GAP, self.gap * 2)
            self.kept = False
        elif share < 0.25:
            self.paced = False  # silent even at the slowest pace: a firewall, not a limiter
        else:
            self.kept = True


class ProbeMachine:
    """Probe ``targets`` with ``payload(target)``; ``retries`` more tries after the first.

    ``timeout`` is the wait before a host has answered anything (doubling by ``backoff`` per try) and
    the longest wait after; ``min_timeout`` the shortest. ``rate``: at most that many datagrams a
    second in all (``None``: no limit). ``exempt(ip)``: hosts whose ICMP errors are never rate-limited
    (default: loopback addresses), which are therefore never paced. ``own``: the prober's own
    sockets; such a target is not sent to (the datagram would only reach us) but reported ``open``
    with the reason ``own-socket``. ``classify(target, reply)``: a service probe's reading of a reply; when it recognises the protocol, the reason is the protocol's name instead of
    ``udp-response``.
    """

    def __init__(
        self,
        targets: Sequence[Target],
        payload: Callable[[Target], bytes] = lambda target: b"",
        *,
        retries: int = 2,
        timeout: float = 1.0,
        min_timeout: float = 0.05,
        backoff: float = 2.0,
        rate: float | None = None,
        reason_for: Callable[[int, int, int], str] | None = None,
        exempt: Callable[[str], bool] | None = None,
        own: Sequence[Target] = (),
        classify: Callable[[Target, bytes], Evidence | None] | None = None,
    ) -> None:
        if retries < 0 or timeout <= 0 or min_timeout <= 0 or backoff < 1 or (rate is not None and rate <= 0):
            raise ValueError("retries >= 0, timeouts > 0, backoff >= 1 and rate > 0 are required")
        self.targets = list(dict.fromkeys(targets))
        self.payload = payload
        self.classify = classify
        self.retries = retries
        self.timeout = timeout
        self.min_timeout = min(min_timeout, timeout)
        self.backoff = backoff
        self.rate = rate
        self.reason_for = reason_for or (lambda family, t, c: f"icmp-{t}/{c}")
        is_exempt = exempt or _is_loopback
        self._hosts = {ip: _Host(is_exempt(ip)) for ip in dict.fromkeys(t.ip for t in self.targets)}
        self._probes = {t: _Probe(t, self._hosts[t.ip]) for t in self.targets}
        self._fresh: deque[_Probe] = deque(self._probes.values())  # first tries, in order
        self._retry: deque[_Probe] = deque()
        self._timers: list[tuple[float, int, _Probe, int]] = []  # (deadline, seq, probe, its try)
        self._unarmed: list[tuple[float, _Probe, int]] = []  # sent since the timers were last armed
        self._reasons: dict[tuple[int, int, int], tuple[str, str]] = {}  # (family, type, code) -> verdict
        self._seq = 0
        self._tokens = 1.0
        self._refilled: float | None = None
        self._open = len(self.targets)  # probes without a verdict
        self._decided: list[PortResult] = []  # verdicts the machine reached by itself, not yet taken
        for target in own:
            probe = self._probes.get(target)
            if probe is not None:
                self._decided.append(PortResult(target, OPEN, "own-socket", 0))
                self._decide(probe, self._decided[-1])

    @property
    def done(self) -> bool:
        return self._open == 0

    def results(self) -> list[PortResult]:
        """Verdicts so far, in target order (ports still undecided are left out)."""
        return [p.result for p in self._probes.values() if p.result is not None]

    def take_decided(self) -> list[PortResult]:
        """The verdicts reached without an arrival (silence after the last try, the prober's own
        ports) since the last call, so that a driver can report every verdict as it is reached."""
        decided, self._decided = self._decided, []
        return decided

    def _budget(self, now: float) -> int:
        if self.rate is None:
            return len(self.targets) + 1
        if self._refilled is None:
            self._refilled = now
        self._tokens = min(max(self.rate, 1.0), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        return int(self._tokens)

    def _wait(self, probe: _Probe) -> float:
        host = probe.host
        if host.srtt is None:
            return self.timeout * self.backoff ** (probe.tries - 1)
        rto = max(self.min_timeout, min(self.timeout, host.srtt + 4 * host.rttvar))
        return max(rto, host.gap) if host.paced else rto

    def _arm(self) -> None:
        """Start the timers of the probes sent since the last call that are still unanswered.

        Strategy: a local closed port answers before the driver even asks again, so most probes
        of a loopback scan never need a timer; arming late spares a heap push and pop for each.
        """
        timers = self._timers
        for deadline, probe, tries in self._unarmed:
            if probe.result is None and probe.tries == tries:
                self._seq += 1
                heapq.heappush(timers, (deadline, self._seq, probe, tries))
        self._unarmed.clear()

    def _judge(self, host: _Host, answered: bool) -> None:
        host.judge(answered)
        if not host.paced and host.queue:
            self._retry.extend(host.queue)  # pacing ended: its waiting probes go back to the common queue
            host.queue.clear()

    def _expire(self, now: float) -> None:
        self._arm()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _deadline, _seq, probe, tries = heapq.heappop(timers)
            if probe.result is not None or probe.tries != tries:
                continue
            self._silence(probe)

    def _silence(self, probe: _Probe) -> None:
        """A try went unanswered: retry it, pace its host, or give the verdict."""
        host = probe.host
        if probe.paced:
            self._judge(host, False)
        if not host.paced and not host.tried_pacing and not host.exempt and host.icmp >= _BURST:
            host.paced = host.tried_pacing = True  # it answers closed ports: silence may be its limiter
            host.gap = _FIRST_GAP
        if host.paced and not (probe.paced and host.kept):
            probe.tries -= 1  # silence the limiter may explain is not held against the port
        if probe.tries > self.retries:
            self._decided.append(PortResult(probe.target, OPEN_FILTERED, "no-response", probe.tries))
            self._decide(probe, self._decided[-1])
        elif host.paced:
            host.queue.append(probe)
        else:
            self._retry.append(probe)

    def sends(self, now: float, limit: int | None = None) -> list[tuple[Target, bytes]]:
        """The datagrams due at ``now`` (at most ``limit``): retries first, then first tries."""
        self._expire(now)
        budget = self._budget(now)
        if limit is not None:
            budget = min(budget, limit)
        chosen: list[_Probe] = []
        for host in self._hosts.values():
            if host.paced and host.queue and now >= host.next_send and len(chosen) < budget:
                probe = host.queue.popleft()
                if probe.result is None:
                    chosen.append(probe)
                    probe.paced = True
                    host.next_send = now + host.gap
        for queue in (self._retry, self._fresh):
            while queue and len(chosen) < budget:
                probe = queue.popleft()
                if probe.result is not None:
                    continue
                if probe.host.paced:
                    probe.host.queue.append(probe)
                    continue
                probe.paced = False
                chosen.append(probe)
        out: list[tuple[Target, bytes]] = []
        unarmed = self._unarmed
        payload = self.payload
        deadlines: dict[_Host, float] = {}  # once a host has a round trip, its waits do not depend on the try
        for probe in chosen:
            probe.tries += 1
            probe.sent_at = now
            host = probe.host
            deadline = deadlines.get(host)
            if deadline is None:
                deadline = now + self._wait(probe)
                if host.srtt is not None:
                    deadlines[host] = deadline
            unarmed.append((deadline, probe, probe.tries))
            out.append((probe.target, payload(probe.target)))
        if self.rate is not None:
            self._tokens -= len(out)
        return out

    def next_wakeup(self) -> float | None:
        """When ``sends`` will next have something to do (``None`` when done)."""
        if self.done:
            return None
        times: list[float] = []
        if self._fresh or self._retry:
            if self.rate is None or self._refilled is None:
                return 0.0
            times.append(self._refilled + max(0.0, 1.0 - self._tokens) / self.rate)
        times.extend(h.next_send for h in self._hosts.values() if h.paced and h.queue)
        self._arm()
        timers = self._timers
        while timers and (timers[0][2].result is not None or timers[0][2].tries != timers[0][3]):
            heapq.heappop(timers)  # stale: answered or sent again since
        if timers:
            times.append(timers[0][0])
        return min(times) if times else None

    def _answered(self, probe: _Probe, now: float) -> float:
        rtt = now - probe.sent_at
        host = probe.host
        if probe.tries == 1 and (host.samples < 64 or not host.samples & 15):
            host.sample(rtt)  # Karn: a retried probe's round trip is ambiguous
        if probe.paced and probe.result is None:
            self._judge(host, True)
        return rtt

    def on_reply(self, family: int, ip: str, port: int, data: bytes, now: float) -> PortResult | None:
        """A datagram from ``ip:port``: proof that a service answered there."""
        probe = self._probes.get((ip, port, family))  # type: ignore[call-overload]
        if probe is None or probe.tries == 0:
            return None  # not a port we probed (or not yet): no evidence about anything
        earlier = probe.result
        if earlier is not None and earlier.state in (OPEN, CONFLICT):
            return None
        rtt = self._answered(probe, now)
        evidence = None if self.classify is None else self.classify(probe.target, data)
        reason = "udp-response" if evidence is None else evidence.protocol
        if earlier is not None and earlier.state in (CLOSED, FILTERED):
            # Strategy: two pieces of evidence that cannot both be true (one of them forged, or the
            # path changing under us): say so, with both, rather than keep whichever came last.
            return self._decide(probe, PortResult(probe.target, CONFLICT, f"{reason}-after-{earlier.reason}",
                                                  probe.tries, rtt, data, earlier.icmp, evidence), force=True)
        return self._decide(probe, PortResult(probe.target, OPEN, reason, probe.tries, rtt, data, None, evidence),
                            force=True)

    def on_icmp(self, family: int, ip: str, port: int, icmp_type: int, code: int, sender: str | None,
                now: float) -> PortResult | None:
        """An ICMP error answering our datagram to ``ip:port`` (from the error queue)."""
        probe = self._probes.get((ip, port, family))  # type: ignore[call-overload]
        if probe is None or probe.tries == 0 or probe.result is not None:
            return None
        if icmp_type != _DEST_UNREACHABLE.get(family):
            return None  # time exceeded, parameter problem...: says nothing about the port
        probe.host.icmp += 1
        rtt = self._answered(probe, now)
        key = (family, icmp_type, code)
        verdict = self._reasons.get(key)
        if verdict is None:
            state = CLOSED if (icmp_type, code) == _PORT_UNREACHABLE.get(family) else FILTERED
            verdict = self._reasons[key] = (state, self.reason_for(family, icmp_type, code))
        if verdict[0] == CLOSED and sender != ip.partition("%")[0]:
            verdict = (FILTERED, NOT_FROM_TARGET)  # only the target can say its port is closed
        result = PortResult(probe.target, verdict[0], verdict[1], probe.tries, rtt, None, (icmp_type, code, sender))
        probe.result = result
        self._open -= 1
        return result

    def _decide(self, probe: _Probe, result: PortResult, *, force: bool = False) -> PortResult | None:
        if probe.result is None:
            self._open -= 1
        elif not force:
            return None
        probe.result = result
        return result


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
