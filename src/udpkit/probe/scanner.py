"""The thin I/O around ``ProbeMachine``: one unconnected socket per family sends every probe, replies
arrive with their source port, and ICMP errors come from the error queue with their original
destination — so one socket can probe every port of a host without root.

Strategy: for this host's own addresses the kernel answers a closed port inside the ``sendto`` call,
so the scanner reads the error queue right after each such send (which also keeps the socket's
pending error from refusing the next send); for other hosts it drains in batches as the socket
becomes readable. Either way no more than ``_BATCH`` probes go out between two drains, so the
error queue, which shares the receive buffer, never overflows. Half of a local scan's time is the
kernel building ICMP errors, so a large scan of this host is split between forked workers, one
per CPU (two at most), each with its own sockets, sending their verdicts back through a pipe.

Each probe socket's port is the kernel's random pick (``bind`` to port 0 draws it at random), new
for every scan, so a host off the path must sweep all of them to forge an answer. A scan of other
hosts also keeps ``CANARIES`` sockets per family that never send: whatever reaches them (a
datagram, an ICMP error) is somebody sweeping our ports, and the machine is told which target it
claims to come from (``ProbeMachine.on_forgery``).
"""

from __future__ import annotations

import fcntl
import marshal
import os
import select
import struct
import time
from collections.abc import Callable, Sequence

from udpkit.errors import UdpkitError
from udpkit.net import ProbeSocket, icmp_reason, is_local
from udpkit.probe.machine import PortResult, ProbeMachine, Reading, Target
from udpkit.services.base import Evidence

__all__ = ["scan"]

_BATCH = 256
#: Never-sending sockets per family that catch a sweep of our ports (see the module's docstring).
CANARIES = 2
_FRAME = struct.Struct("=I")
#: Below this many targets a second worker costs more (fork, pipe) than it saves.
_SPLIT_FROM = 4096
_PARENT_SHARE = 0.42

Report = Callable[[PortResult], None]


def scan(
    targets: Sequence[Target],
    payload: Callable[[Target], bytes] = lambda target: b"",
    *,
    retries: int = 2,
    timeout: float = 1.0,
    min_timeout: float = 0.05,
    rate: float | None = None,
    on_result: Report | None = None,
    clock: Callable[[], float] = time.monotonic,
    workers: int | None = None,
    classify: Callable[[Target, bytes, float], Reading | None] | None = None,
    local: dict[str, bool] | None = None,
    forged: dict[str, int] | None = None,
    sources: dict[int, list[str]] | None = None,
    freebind: bool = False,
) -> list[PortResult]:
    """Probe every target and return the verdicts in target order.

    ``workers``: processes to share a scan of this host's own addresses (default: one per CPU, at
    most two, for scans of at least 4,096 ports without ``rate``). The prober's own ports on its own
    host are reported ``open`` with the reason ``own-socket`` and never taken for a service's reply.
    ``classify(target, reply, unix_time)``: a service probe's reading of a reply, given the wall-clock
    time it was read (for probes that compare clocks). ``local``: which addresses are this host's
    (computed when not given). ``forged``: filled with the count of unasked-for datagrams and errors
    per target address. ``sources``: per family, the local addresses to send from (default: the
    kernel's choice); with several, the ports are shared among them (``machine.lane``), and as a
    kernel keeps one ICMP budget per source address, a rate-limited host is scanned that many times
    faster. ``freebind``: bind them with ``IP_FREEBIND``, for addresses of a prefix routed to this
    host (``ip route add local PREFIX dev lo``) rather than assigned one by one.
    """
    targets = list(dict.fromkeys(targets))
    known = local or {}
    local = {ip: known[ip] if ip in known else is_local(ip) for ip in {t.ip for t in targets}}
    sources = {family: addresses for family, addresses in (sources or {}).items() if addresses}
    if workers is None:
        splittable = rate is None and len(targets) >= _SPLIT_FROM and all(local.values()) and not sources
        workers = min(2, os.cpu_count() or 1) if splittable else 1
    workers = max(1, min(workers, len(targets) or 1))
    families = sorted({t.family for t in targets})
    socks: list[dict[int, list[ProbeSocket]]] = []
    try:
        for _ in range(workers):
            group: dict[int, list[ProbeSocket]] = {}
            socks.append(group)
            for family in families:
                group[family] = []
                addresses: list[str | None] = list(sources.get(family, [])) or [None]
                for address in addresses:
                    try:
                        group[family].append(ProbeSocket(family, None if address is None else (address, 0),
                                                         freebind=freebind and address is not None))
                    except OSError as exc:
                        if address is None:
                            raise
                        raise UdpkitError(f"cannot send from {address}: {exc.strerror or exc}") from None
    except (OSError, UdpkitError):
        _close(socks)
        raise
    lanes = {family: len(addresses) for family, addresses in sources.items()}
    own = [Target(ip, sock.port, t_family)
           for ip, t_family in {(t.ip, t.family) for t in targets} if local[ip]
           for group in socks for sock in group[t_family]]
    # The parent also merges the workers' verdicts: it takes a smaller share.
    first = len(targets) if workers == 1 else int(len(targets) * _PARENT_SHARE)
    step = -(-(len(targets) - first) // max(1, workers - 1))
    parts = [targets[:first]] + [targets[first + i * step:first + (i + 1) * step] for i in range(workers - 1)]
    report = on_result or (lambda result: None)

    def machine_for(part: list[Target]) -> ProbeMachine:
        assert local is not None
        return ProbeMachine(part, payload, retries=retries, timeout=timeout, min_timeout=min_timeout, rate=rate,
                            reason_for=icmp_reason, exempt=local.__getitem__, own=own, lanes=lanes,
                            classify=None if classify is None else lambda t, data: classify(t, data, time.time()))

    children: list[tuple[int, int]] = []
    try:
        for index in range(1, workers):
            children.append(_fork(machine_for(parts[index]), socks, index, local, clock))
        _close(socks[1:])
        machine = machine_for(parts[0])
        remote = [family for family in families if not all(local[t.ip] for t in targets if t.family == family)]
        canaries: list[ProbeSocket] = []
        try:
            canaries.extend(ProbeSocket(family) for family in remote for _ in range(CANARIES))
            collected = _run(machine, socks[0], local, report, clock, [fd for _pid, fd in children], canaries)
        finally:
            for canary in canaries:
                canary.close()
        if forged is not None:
            for ip, count in machine.forgeries().items():  # added up over the rounds of --service all
                forged[ip] = forged.get(ip, 0) + count
    finally:
        _close(socks[:1])
        for pid, fd in children:
            os.close(fd)
            os.waitpid(pid, 0)
    order = {target: i for i, target in enumerate(targets)}
    return sorted(machine.results() + collected, key=lambda r: order[r.target])


def _close(groups: Sequence[dict[int, list[ProbeSocket]]]) -> None:
    for group in groups:
        for family_socks in group.values():
            for sock in family_socks:
                sock.close()


def _fork(machine: ProbeMachine, socks: list[dict[int, list[ProbeSocket]]], index: int, local: dict[str, bool],
          clock: Callable[[], float]) -> tuple[int, int]:
    """Run ``machine`` in a child over ``socks[index]``; its verdicts come back as marshal frames."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1 << 20)  # a worker should not wait for the busy parent
    except OSError:
        pass
    pid = os.fork()
    if pid:
        os.close(write_end)
        return pid, read_end
    status = 0
    try:  # the child never returns into the caller's code
        os.close(read_end)
        _close([group for i, group in enumerate(socks) if i != index])
        batch: list[tuple[object, ...]] = []

        def send(final: bool) -> None:
            if batch and (final or len(batch) >= 512):
                frame = marshal.dumps(batch)
                _write_all(write_end, _FRAME.pack(len(frame)) + frame)
                batch.clear()

        def keep(result: PortResult) -> None:
            ip, port, family = result.target
            evidence = None if result.evidence is None else tuple(result.evidence)
            batch.append(((ip, port, int(family)), *result[1:-1], evidence))  # marshal takes plain types only
            send(False)

        _run(machine, socks[index], local, keep, clock, [])
        send(True)
    except BaseException:
        status = 1
    finally:
        os._exit(status)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _run(machine: ProbeMachine, socks: dict[int, list[ProbeSocket]], local: dict[str, bool], report: Report,
         clock: Callable[[], float], pipes: list[int], canaries: Sequence[ProbeSocket] = ()) -> list[PortResult]:
    """Drive ``machine`` to the end; also read the workers' ``pipes`` (their verdicts are returned)
    and the ``canaries`` (anything on them is a forgery)."""
    collected: list[PortResult] = []
    buffers = {fd: bytearray() for fd in pipes}
    with select.epoll() as poller:
        by_fd = {}
        for family_socks in socks.values():
            for sock in family_socks:
                poller.register(sock.fileno(), select.EPOLLIN)  # EPOLLERR is always reported
                by_fd[sock.fileno()] = sock
        single = {family: family_socks[0] for family, family_socks in socks.items() if len(family_socks) == 1}
        watched = {}
        for canary in canaries:
            poller.register(canary.fileno(), select.EPOLLIN)
            watched[canary.fileno()] = canary
        for fd in pipes:
            poller.register(fd, select.EPOLLIN)
        while not machine.done or buffers:
            if not machine.done:
                batch = machine.sends(clock(), _BATCH)
                for result in machine.take_decided():
                    report(result)
                for (ip, port, family), data in batch:
                    sock = single.get(family) or socks[family][port % len(socks[family])]  # machine.lane
                    if local[ip]:
                        error = sock.send_take(data, (ip, port))
                        if error is not None and error.destination is not None:
                            verdict = machine.on_icmp(family, *error.destination, error.type, error.code,
                                                      error.offender, clock(), error.quote)
                            if verdict is not None:
                                report(verdict)
                    else:
                        sock.send(data, (ip, port))
                if batch:
                    for sock in by_fd.values():
                        _drain(sock, machine, local, report, clock)
                wake = machine.next_wakeup()
                if wake is None or wake <= clock():
                    delay = 0.0  # more is due now, or done: look at the workers' pipes, don't wait
                else:
                    delay = wake - clock()
            else:
                delay = -1.0
            for fd, _mask in poller.poll(delay):
                if fd in by_fd:
                    _drain(by_fd[fd], machine, local, report, clock)
                elif fd in watched:
                    _sweep(watched[fd], machine)
                    for result in machine.take_decided():
                        report(result)
                elif not _read_worker(fd, buffers, collected, report):
                    poller.unregister(fd)
    for result in machine.take_decided():
        report(result)
    return collected


def _sweep(canary: ProbeSocket, machine: ProbeMachine) -> None:
    """Whatever reached a canary claims to come from (or, for an error, to answer our datagram to)
    some address: the machine counts it against that target."""
    family = canary.family
    for _data, ip, _port in canary.replies(_BATCH):
        machine.on_forgery(ip, family)
    for error in canary.errors(_BATCH):
        if error.destination is not None:
            machine.on_forgery(error.destination[0], family)


def _read_worker(fd: int, buffers: dict[int, bytearray], collected: list[PortResult], report: Report) -> bool:
    """Take a worker's frames; ``False`` at its end (then ``buffers`` forgets it)."""
    chunk = os.read(fd, 1 << 16)
    buffer = buffers[fd]
    if not chunk:
        del buffers[fd]
        if buffer:
            raise UdpkitError("a scan worker ended in the middle of its results")
        return False
    buffer += chunk
    while len(buffer) >= _FRAME.size:
        (size,) = _FRAME.unpack_from(buffer)
        if len(buffer) < _FRAME.size + size:
            break
        rows = marshal.loads(bytes(buffer[_FRAME.size:_FRAME.size + size]))
        del buffer[:_FRAME.size + size]
        for target, *rest, evidence in rows:
            result = PortResult._make((Target(*target), *rest, None if evidence is None else Evidence(*evidence)))
            collected.append(result)
            report(result)
    return True


def _drain(sock: ProbeSocket, machine: ProbeMachine, local: dict[str, bool], report: Report,
           clock: Callable[[], float]) -> None:
    family = sock.family
    for data, ip, port in sock.replies(_BATCH):
        result = machine.on_reply(family, ip, port, data, clock())
        if result is not None:
            report(result)
    for result in machine.take_decided():
        report(result)  # verdicts that evidence of forgery changed
    for error in sock.errors(_BATCH):
        if error.destination is None:
            continue
        result = machine.on_icmp(family, *error.destination, error.type, error.code, error.offender, clock(),
                                 error.quote)
        if result is not None:
            report(result)
