"""The thin I/O around ``ProbeMachine``: one unconnected socket per family sends every probe, replies
arrive with their source port, and ICMP errors come from the error queue with their original
destination — so one socket can probe every port of a host without root."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Sequence

from udpkit.net import enable_errors, icmp_reason, read_errors
from udpkit.probe.machine import PortResult, ProbeMachine, Target

__all__ = ["scan"]

_BATCH = 256


def scan(
    targets: Sequence[Target],
    payload: Callable[[Target], bytes] = lambda target: b"",
    *,
    retries: int = 2,
    timeout: float = 1.0,
    rate: float | None = None,
    on_result: Callable[[PortResult], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[PortResult]:
    """Probe every target and return the verdicts in target order.

    Datagrams from our own socket's port (a scan of our own host reaching the probing socket
    itself) are not taken for a service's reply.
    """
    machine = ProbeMachine(targets, payload, retries=retries, timeout=timeout, rate=rate, reason_for=icmp_reason)
    families = sorted({t.family for t in machine.targets})
    socks: dict[int, socket.socket] = {}
    try:
        for family in families:
            sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            enable_errors(sock)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
            socks[family] = sock
        own = {family: sock.getsockname()[1] for family, sock in socks.items()}
        with select.epoll() as poller:
            by_fd = {}
            for family, sock in socks.items():
                poller.register(sock.fileno(), select.EPOLLIN)  # EPOLLERR is always reported
                by_fd[sock.fileno()] = family
            while not machine.done:
                for target, data in machine.sends(clock()):
                    _send(socks[target.family], data, (target.ip, target.port))
                wake = machine.next_wakeup()
                if wake is None:
                    break
                for fd, _mask in poller.poll(max(0.0, wake - clock())):
                    family = by_fd[fd]
                    for result in _drain(socks[family], family, own[family], machine, clock):
                        if on_result is not None:
                            on_result(result)
    finally:
        for sock in socks.values():
            sock.close()
    return machine.results()


def _send(sock: socket.socket, data: bytes, address: tuple[str, int]) -> None:
    for _ in range(2):
        try:
            sock.sendto(data, address)
            return
        except ConnectionRefusedError:
            continue  # an earlier probe's ICMP error surfaced here; it is also in the error queue
        except (BlockingIOError, InterruptedError):
            return  # a full send buffer: the machine's retry will send it again
        except OSError:
            return  # unroutable from here: silence, so open|filtered after the retries


def _drain(sock: socket.socket, family: int, own_port: int, machine: ProbeMachine,
           clock: Callable[[], float]) -> list[PortResult]:
    found: list[PortResult] = []
    for _ in range(_BATCH):
        try:
            data, peer = sock.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            break
        except ConnectionRefusedError:
            continue
        if peer[1] == own_port:
            continue  # our own probe, looped back to us
        result = machine.on_reply(family, peer[0], peer[1], data, clock())
        if result is not None:
            found.append(result)
    for error in read_errors(sock, _BATCH):
        if error.destination is None:
            continue
        ip, port = error.destination
        result = machine.on_icmp(family, ip, port, error.type, error.code, error.offender, clock())
        if result is not None:
            found.append(result)
    return found
