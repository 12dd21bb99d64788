"""The prober's rules, without sockets or clocks: what to send when, and what each answer proves.

``ProbeMachine`` follows aioquic's shape: the driver asks ``sends(now)`` for the datagrams due, feeds
back ``on_reply``/``on_icmp`` as they arrive and sleeps until ``next_wakeup()``. The verdicts are the
honest ones: ``open`` only for an application reply from the probed port; ``closed`` for an ICMP
port unreachable (IPv4 3/3, IPv6 1/4); ``filtered`` for any other ICMP destination unreachable;
``open|filtered`` for silence after every try.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import NamedTuple

__all__ = ["CLOSED", "FILTERED", "OPEN", "OPEN_FILTERED", "PortResult", "ProbeMachine", "Target"]

OPEN, CLOSED, FILTERED, OPEN_FILTERED = "open", "closed", "filtered", "open|filtered"
_PORT_UNREACHABLE: dict[int, tuple[int, int]] = {socket.AF_INET: (3, 3), socket.AF_INET6: (1, 4)}
_DEST_UNREACHABLE: dict[int, int] = {socket.AF_INET: 3, socket.AF_INET6: 1}


class Target(NamedTuple):
    ip: str
    port: int
    family: int


class PortResult(NamedTuple):
    """A port's verdict and its evidence: the reply (bytes) or the ICMP error (type, code, sender)."""

    target: Target
    state: str
    reason: str
    tries: int
    rtt: float | None = None
    reply: bytes | None = None
    icmp: tuple[int, int, str | None] | None = None


class _Probe:
    __slots__ = ("deadline", "result", "sent_at", "tries")

    def __init__(self) -> None:
        self.tries = 0
        self.sent_at: float | None = None
        self.deadline: float | None = None
        self.result: PortResult | None = None


class ProbeMachine:
    """Probe ``targets`` with ``payload(target)``; ``retries`` more tries after the first, each waiting
    ``timeout * backoff**n`` seconds; at most ``rate`` datagrams a second (``None``: no limit)."""

    def __init__(
        self,
        targets: Sequence[Target],
        payload: Callable[[Target], bytes] = lambda target: b"",
        *,
        retries: int = 2,
        timeout: float = 1.0,
        backoff: float = 2.0,
        rate: float | None = None,
        reason_for: Callable[[int, int, int], str] | None = None,
    ) -> None:
        if retries < 0 or timeout <= 0 or backoff < 1 or (rate is not None and rate <= 0):
            raise ValueError("retries >= 0, timeout > 0, backoff >= 1 and rate > 0 are required")
        self.targets = list(dict.fromkeys(targets))
        self.payload = payload
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self.rate = rate
        self.reason_for = reason_for or (lambda family, t, c: f"icmp-{t}/{c}")
        self._probes = {target: _Probe() for target in self.targets}
        self._unsent = list(self.targets)  # first tries, in order
        self._tokens = 1.0
        self._refilled: float | None = None
        self._open = len(self.targets)  # probes without a verdict

    @property
    def done(self) -> bool:
        return self._open == 0

    def results(self) -> list[PortResult]:
        """Verdicts so far, in target order (ports still undecided are left out)."""
        return [p.result for p in self._probes.values() if p.result is not None]

    def _budget(self, now: float) -> int:
        if self.rate is None:
            return len(self.targets) + 1
        if self._refilled is None:
            self._refilled = now
        self._tokens = min(max(self.rate, 1.0), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        return int(self._tokens)

    def sends(self, now: float) -> list[tuple[Target, bytes]]:
        """The datagrams due at ``now``: expired tries get their verdict or a retry, then first tries."""
        due: list[Target] = []
        for target, probe in self._probes.items():
            if probe.result is None and probe.deadline is not None and now >= probe.deadline:
                if probe.tries > self.retries:
                    self._decide(probe, PortResult(target, OPEN_FILTERED, "no-response", probe.tries))
                else:
                    due.append(target)
        budget = self._budget(now)
        out: list[tuple[Target, bytes]] = []
        queue = due + self._unsent
        for target in queue[:budget]:
            probe = self._probes[target]
            probe.tries += 1
            probe.sent_at = now
            probe.deadline = now + self.timeout * self.backoff ** (probe.tries - 1)
            out.append((target, self.payload(target)))
        sent = {target for target, _payload in out}
        self._unsent = [t for t in self._unsent if t not in sent]
        if self.rate is not None:
            self._tokens -= len(out)
        return out

    def next_wakeup(self) -> float | None:
        """When ``sends`` will next have something to do (``None`` when done)."""
        if self.done:
            return None
        deadlines = [p.deadline for p in self._probes.values() if p.result is None and p.deadline is not None]
        if self._unsent:
            if self.rate is None or self._refilled is None:
                return 0.0  # first tries are due now
            deadlines.append(self._refilled + max(0.0, 1.0 - self._tokens) / self.rate)
        return min(deadlines) if deadlines else None

    def on_reply(self, family: int, ip: str, port: int, data: bytes, now: float) -> PortResult | None:
        """A datagram from ``ip:port``: proof that a service answered there."""
        target = Target(ip, port, family)
        probe = self._probes.get(target)
        if probe is None or probe.tries == 0:
            return None  # not a port we probed (or not yet): no evidence about anything
        if probe.result is not None and probe.result.state == OPEN:
            return None
        rtt = None if probe.sent_at is None else max(0.0, now - probe.sent_at)
        return self._decide(probe, PortResult(target, OPEN, "udp-response", probe.tries, rtt, data), force=True)

    def on_icmp(self, family: int, ip: str, port: int, icmp_type: int, code: int, sender: str | None,
                now: float) -> PortResult | None:
        """An ICMP error answering our datagram to ``ip:port`` (from the error queue)."""
        probe = self._probes.get(Target(ip, port, family))
        if probe is None or probe.tries == 0 or probe.result is not None:
            return None
        if icmp_type != _DEST_UNREACHABLE.get(family):
            return None  # time exceeded, parameter problem...: says nothing about the port
        state = CLOSED if (icmp_type, code) == _PORT_UNREACHABLE.get(family) else FILTERED
        rtt = None if probe.sent_at is None else max(0.0, now - probe.sent_at)
        reason = self.reason_for(family, icmp_type, code)
        return self._decide(probe, PortResult(Target(ip, port, family), state, reason, probe.tries, rtt,
                                              icmp=(icmp_type, code, sender)))

    def _decide(self, probe: _Probe, result: PortResult, *, force: bool = False) -> PortResult | None:
        if probe.result is None:
            self._open -= 1
        elif not force:
            return None
        probe.result = result
        probe.deadline = None
        return result
