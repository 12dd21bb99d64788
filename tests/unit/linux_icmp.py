"""A simulated remote Linux host for the prober's machine: the kernel's ICMP error limits
(``inet_peer_xrlim_allow``: per destination, a burst of six then one per interval;
``icmp_global_allow``: 1000/s with a burst of 50), a one-way delay, and ports that answer, drop or
are closed. No sockets: ``run`` drives a ``ProbeMachine`` on a simulated clock."""

from __future__ import annotations

import heapq
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from udpkit.probe import ProbeMachine, Target
from udpkit.probe.machine import PortResult, lane

BURST = 6


@dataclass
class Kernel:
    """One kernel's ICMP budget towards the prober (``interval`` 0: only the global limit)."""

    interval: float
    global_rate: float = 1000.0
    global_burst: float = 50.0
    spent: bool = False  # the per-destination budget was used up just before the scan
    credit: float = 0.0
    credit_last: float = 0.0
    errors: int = 0
    buckets: dict[int, list[float]] = field(default_factory=dict)  # per prober source: [tokens, last]

    def __post_init__(self) -> None:
        self.credit = self.global_burst

    def allow(self, now: float, source: int = 0) -> bool:
        self.credit = min(self.global_burst, self.credit + (now - self.credit_last) * self.global_rate)
        self.credit_last = now
        if self.credit < 1:
            return False
        if self.interval > 0:
            bucket = self.buckets.setdefault(source, [0.0 if self.spent else BURST * self.interval, 0.0])
            bucket[0] = min(BURST * self.interval, bucket[0] + now - bucket[1])
            bucket[1] = now
            if bucket[0] < self.interval - 1e-12:
                return False
            bucket[0] -= self.interval
        self.credit -= 1
        self.errors += 1
        return True


@dataclass
class Host:
    ip: str
    kernel: Kernel
    open: set[int] = field(default_factory=set)  # answer every datagram
    dropped: set[int] = field(default_factory=set)  # a firewall drops them
    family: int = socket.AF_INET
    resolve: float = 0.0  # a cold neighbour cache: seconds from the first datagram until it is resolved
    qlen: int = 3  # the kernel's unres_qlen: datagrams it keeps while resolving (the rest are lost)
    resolved_at: float | None = None
    queued: int = 0
    lost: int = 0  # datagrams dropped while the neighbour was unresolved

    def closed(self, ports: Iterable[int]) -> int:
        return sum(1 for p in ports if p not in self.open and p not in self.dropped)


def run(machine: ProbeMachine, hosts: Iterable[Host], *, delay: float = 0.0002, limit: float = 600.0,
        lanes: dict[int, int] | None = None) -> tuple[list[PortResult], float]:
    """Drive ``machine`` against ``hosts`` until done; returns its results and the simulated time."""
    by_ip = {h.ip: h for h in hosts}
    events: list[tuple[float, int, str, Target, bytes]] = []
    seq = 0
    now = 0.0
    for _ in range(5_000_000):
        if machine.done or now > limit:
            break
        for target, data in machine.sends(now):
            host = by_ip[target.ip]
            when = now
            if host.resolve:
                if host.resolved_at is None:
                    host.resolved_at = now + host.resolve
                if now < host.resolved_at:
                    if host.queued >= host.qlen:
                        host.lost += 1
                        continue  # dropped before it left: the prober is never told
                    host.queued += 1
                    when = host.resolved_at
            seq += 1
            heapq.heappush(events, (when + delay, seq, "arrive", target, data))
        while events and events[0][0] <= now:
            when, _s, kind, target, data = heapq.heappop(events)
            if kind == "arrive":
                host = by_ip[target.ip]
                if target.port in host.open:
                    seq += 1
                    heapq.heappush(events, (when + delay, seq, "reply", target, data))
                elif target.port not in host.dropped and host.kernel.allow(when, lane(target, lanes or {})):
                    seq += 1
                    heapq.heappush(events, (when + delay, seq, "error", target, data))
            elif kind == "reply":
                machine.on_reply(target.family, target.ip, target.port, data, when)
            else:
                code = (3, 3) if target.family == socket.AF_INET else (1, 4)
                machine.on_icmp(target.family, target.ip, target.port, *code, target.ip, when, quote=data)
        wake = machine.next_wakeup()
        upcoming = [t for t in (wake, events[0][0] if events else None) if t is not None]
        if not upcoming:
            break
        now = max(now, min(upcoming))
        if now == min(upcoming) and wake is not None and wake <= now and not events:
            now += 0.0001  # the machine has nothing more at this instant
    assert machine.done, f"not done after {now:.1f} simulated seconds"
    return machine.results(), now


def floor(hosts: Iterable[Host], ports: Iterable[int]) -> float:
    """(errors − burst) × interval for each kernel, the kernels in parallel."""
    per_kernel: dict[int, tuple[Kernel, int]] = {}
    numbers = list(ports)
    for host in hosts:
        kernel, count = per_kernel.get(id(host.kernel), (host.kernel, 0))
        per_kernel[id(host.kernel)] = (kernel, count + host.closed(numbers))
    return max(max(0, count - (0 if k.spent else BURST)) * max(k.interval, 1 / k.global_rate)
               for k, count in per_kernel.values())
