"""The prober's rules, without sockets or clocks: what to send when, and what each answer proves.

``ProbeMachine`` follows aioquic's shape: the driver asks ``sends(now)`` for the datagrams due, feeds
back ``on_reply``/``on_icmp`` as they arrive and sleeps until ``next_wakeup()``.

The verdicts count only evidence that a host off the path cannot forge:

- ``open``: a reply from the probed address and port (the driver only passes datagrams that reached
  the socket that sent the probe) and, when a service probe was sent, one its recogniser accepts:
  every catalogue probe matches its own request (transaction id, echoed nonce, transmit stamp). A
  reply the recogniser refuses is kept, and the port ends ``conflict`` (``unmatched-reply``) unless
  a matching one comes.
- ``closed``: an ICMP port unreachable (IPv4 3/3, IPv6 1/4) sent by the target itself *and* quoting
  the datagram we sent (Linux hands back the quoted payload; ours carries a nonce). A port
  unreachable from another host (a router's reject) is ``filtered`` with that sender; an error
  quoting something we never sent is a forgery and moves nothing.
- ``filtered``: any other destination unreachable quoting our datagram.
- ``open|filtered``: silence after every try that counted (see ``pacing``: silence that a host's
  ICMP rate limit may explain does not count).
- ``conflict``: evidence that cannot all be true — the target's port unreachable, then a reply — or
  a reply that nothing verifies from a host that is being forged (below).

**Forgery.** A host on the path can sweep every port of the prober with datagrams "from" a target
inside one probe's wait. The prober notices: a datagram from a target port it did not probe (or
not yet), an error quoting what it never sent, and anything at all on the canary ports the driver
keeps unused (``on_forgery``) mark that target as forged. From then on a reply that does not carry
our nonce (a bare reply to an empty datagram, or a daytime line) is never ``open``: such ports, and
those already reported on that kind of evidence, become ``conflict``.

Timing follows the evidence. Until a host has answered, a try waits ``timeout * backoff**n`` (or,
once other hosts of the family have answered, four of their retransmission timeouts); once it has,
tries wait a retransmission timeout from the measured round trips (RFC 6298's ``srtt + 4 * rttvar``,
at least ``min_timeout``), sampled from first tries and from any error that quotes the last try's
nonce (which try it answers is then certain). A remote host is first sent ``PRIME_COUNT`` probes
alone and the rest once it answered (or ``PRIME_WAIT`` passed): a cold neighbour cache holds only a
few datagrams and drops the others unseen. Remote hosts' ICMP errors are rate-limited: the
``pacing`` module's ``Pacer`` paces them (one per error source and source address) and proves their
silences.
"""

from __future__ import annotations

import heapq
import ipaddress
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

from udpkit.probe.pacing import UNDER, Pacer, PaceState
from udpkit.services.base import Evidence

__all__ = ["CLOSED", "CONFLICT", "FILTERED", "OPEN", "OPEN_FILTERED", "PortResult", "ProbeMachine", "Reading",
           "Target", "lane"]

OPEN, CLOSED, FILTERED, OPEN_FILTERED, CONFLICT = "open", "closed", "filtered", "open|filtered", "conflict"
#: The reason of a port unreachable that the target did not send.
NOT_FROM_TARGET = "port-unreachable-from-another-host"
#: A reply nothing verifies, from a host whose replies are being forged.
UNVERIFIED = "unverified-during-forgery"
_PORT_UNREACHABLE: dict[int, tuple[int, int]] = {socket.AF_INET: (3, 3), socket.AF_INET6: (1, 4)}
_DEST_UNREACHABLE: dict[int, int] = {socket.AF_INET: 3, socket.AF_INET6: 1}
#: A payload at least this long can carry a nonce, and a quote or echo of it proves it is ours.
NONCE_BYTES = 8
#: Datagrams per port beyond which silence counts whatever the pacing says (every loop is bounded) —
#: unless another host of the family had an error lately: aliases of one kernel share its budget, and
#: one of them may take every token for a while; the starved ones wait, they are not misjudged.
_SENDS_PER_TRY = 8
#: How recent (seconds, at least; or four of the family's gaps) a sibling's error must be to hold a
#: port past its sends.
_SIBLING_ERROR_WINDOW = 1.0
#: A remote host is first sent this many probes alone, and the rest once it has answered or this many
#: seconds have passed: with a cold neighbour cache the kernel keeps only a few datagrams while it
#: resolves the address and drops the others without a word (``unres_qlen``).
PRIME_COUNT, PRIME_WAIT = 3, 0.25


class Target(NamedTuple):
    ip: str
    port: int
    family: int


class PortResult(NamedTuple):
    """A port's verdict and its evidence: the reply (bytes, and what a service probe read in it) or
    the ICMP error (type, code, sender). ``tries``: every datagram sent to the port."""

    target: Target
    state: str
    reason: str
    tries: int
    rtt: float | None = None
    reply: bytes | None = None
    icmp: tuple[int, int, str | None] | None = None
    evidence: Evidence | None = None


class Reading(NamedTuple):
    """A service probe's reading of a reply: what it recognised (``None``: not its protocol's
    answer to us) and whether that answer carried our own id, nonce or stamp."""

    evidence: Evidence | None
    verified: bool


class _Probe:
    __slots__ = ("batch", "earlier", "host", "judged", "paced", "quiet", "result", "sent", "sent_at", "target",
                 "tries", "unmatched", "unverified", "verified", "waiting")

    def __init__(self, target: Target, host: _Host) -> None:
        self.target = target
        self.host = host
        self.tries = 0  # datagrams sent
        self.judged = 0  # silences that counted
        self.quiet = 0  # silences at the pace
        self.sent: bytes | None = None  # the last try's payload, for quotes and echoes
        self.earlier: bytes | None = None  # the try's before (its answer may come late)
        self.sent_at = 0.0
        self.waiting = False  # the current try's wait is running
        self.paced = False  # the current try went at its host's pace (its silence does not count)
        self.batch: object | None = None  # the proof batch of the current try
        self.result: PortResult | None = None
        self.verified = False  # the verdict's evidence carried our nonce
        self.unmatched: bytes | None = None  # a reply the service probe did not recognise
        self.unverified: bytes | None = None  # a bare reply while the host was being forged


class _Host:
    """One address: its round-trip estimate, the pacer of the kernel that sends its errors, and
    what it has shown of forgery."""

    __slots__ = ("early", "errors", "exempt", "forged", "held", "ip", "lane", "pacer", "primed", "prime_at",
                 "prime_sent", "rttvar", "samples", "srtt", "suspect")

    def __init__(self, ip: str, family: int, exempt: bool, lane: int = 0) -> None:
        self.ip = ip
        self.lane = lane  # which of the prober's source addresses asks it
        self.exempt = exempt
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.samples = 0
        self.errors = 0
        self.pacer: Pacer[_Probe] = Pacer(ip, family, lane)
        self.held: deque[_Probe] = deque()  # silent while another host of the family is paced
        self.early: deque[_Probe] = deque()  # first tries waiting for the first probes' answer
        self.primed = exempt  # its first probes were answered, or waited for: the rest may go
        self.prime_at: float | None = None
        self.prime_sent = 0
        self.suspect = False
        self.forged = 0

    def sample(self, rtt: float) -> None:
        self.samples += 1
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt


class ProbeMachine:
    """Probe ``targets`` with ``payload(target)``; ``retries`` more counted tries after the first.

    ``timeout`` is the wait before a host has answered anything (doubling by ``backoff`` per try) and
    the longest wait after; ``min_timeout`` the shortest. ``rate``: at most that many datagrams a
    second in all (``None``: no limit). ``exempt(ip)``: hosts whose ICMP errors are never rate-limited
    (default: loopback addresses), which are therefore never paced. ``own``: the prober's own
    sockets; such a target is not sent to (the datagram would only reach us) but reported ``open``
    with the reason ``own-socket``. ``classify(target, reply)``: the service probe's ``Reading`` of a
    reply, or ``None`` when no service probe went to that target (any reply is then the answer).
    ``lanes``: per family, how many source addresses the prober sends from (port ``p`` goes out from
    lane ``p % lanes``, see :func:`lane`): a kernel keeps one ICMP budget per source address, so
    each lane of a host is paced on its own.
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
        classify: Callable[[Target, bytes], Reading | None] | None = None,
        lanes: dict[int, int] | None = None,
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
        self._max_sends = _SENDS_PER_TRY * (retries + 1) + 8
        self._family_error_at: dict[int, float] = {}  # the last error of each family, any host
        is_exempt = exempt or _is_loopback
        widths = lanes or {}
        self._lanes = widths
        exempts = {ip: is_exempt(ip) for ip in dict.fromkeys(t.ip for t in self.targets)}
        self._hosts = {(ip, family, n): _Host(ip, family, exempts[ip], n)
                       for ip, family in dict.fromkeys((t.ip, t.family) for t in self.targets)
                       for n in range(max(1, widths.get(family, 1)))}
        hosts = self._hosts
        if widths:
            self._probes: dict[Target, _Probe] = {
                t: _Probe(t, hosts[(t.ip, t.family, lane(t, widths))]) for t in self.targets}
        else:
            self._probes = {t: _Probe(t, hosts[(t.ip, t.family, 0)]) for t in self.targets}
        self._pacers: dict[tuple[str, int, int], Pacer[_Probe]] = {
            (h.ip, f, n): h.pacer for (_ip, f, n), h in self._hosts.items()}
        self._active: list[Pacer[_Probe]] = []  # pacers out of FREE
        self._holding: set[_Host] = set()
        self._priming: set[_Host] = set()  # hosts whose first probes are out alone
        self._busy: set[Pacer[_Probe]] = set()  # pacers with work at the last look
        self._family_rto: dict[int, float] = {}  # per family: the slowest host's retransmission timeout
        # per family: when a remote host of it last drew an ICMP error or was being paced
        self._active_at: dict[int, float] = {}
        self._fresh: deque[_Probe] = deque(self._probes.values())  # first tries, in order
        self._retry: deque[_Probe] = deque()
        self._timers: list[tuple[float, int, _Probe, int]] = []  # (deadline, seq, probe, its try)
        self._unarmed: list[tuple[float, _Probe, int]] = []  # sent since the timers were last armed
        self._reasons: dict[tuple[int, int, int], tuple[str, str]] = {}  # (family, type, code) -> verdict
        self._seq = 0
        self._tokens = 1.0
        self._refilled: float | None = None
        self._open = len(self.targets)  # probes without a verdict
        self._decided: list[PortResult] = []  # verdicts reached without an arrival, not yet taken
        for target in own:
            mine = self._probes.get(target)
            if mine is not None:
                self._decide(mine, PortResult(target, OPEN, "own-socket", 0))
                self._decided.append(PortResult(target, OPEN, "own-socket", 0))

    @property
    def done(self) -> bool:
        return self._open == 0

    def results(self) -> list[PortResult]:
        """Verdicts so far, in target order (ports still undecided are left out)."""
        return [p.result for p in self._probes.values() if p.result is not None]

    def take_decided(self) -> list[PortResult]:
        """The verdicts reached without an arrival (silence after the last try, the prober's own
        ports) and the verdicts changed by evidence of forgery, since the last call, so that a
        driver can report every verdict as it is reached (a port may then be reported twice: the
        later report is the verdict)."""
        decided, self._decided = self._decided, []
        return decided

    def forgeries(self) -> dict[str, int]:
        """Per target address, the datagrams and errors seen that we never asked for."""
        counts: dict[str, int] = {}
        for host in self._hosts.values():
            if host.forged:
                counts[host.ip] = counts.get(host.ip, 0) + host.forged
        return counts

    def pace_states(self) -> dict[str, str]:
        """Per error source that left ``FREE``: its pacing state and gap (for tests and debugging)."""
        return {p.source + (f"#{p.lane}" if p.lane else ""): f"{p.state.value} gap={p.gap * 1000:.1f}ms"
                for p in self._active}

    # -- sending -------------------------------------------------------------------------------------

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
            # Strategy: a host that never answered waits the first-contact timeout, unless other hosts
            # of the family have answered: then four of their slowest retransmission timeouts (nmap
            # too times silent hosts by the others), so that a silent host costs what the path costs.
            known = self._family_rto.get(probe.target.family)
            first = self.timeout if known is None else max(self.min_timeout, min(self.timeout, 4 * known))
            return first * self.backoff ** min(probe.judged, 6)
        return max(self.min_timeout, min(self.timeout, host.srtt + 4 * host.rttvar))

    def sends(self, now: float, limit: int | None = None) -> list[tuple[Target, bytes]]:
        """The datagrams due at ``now`` (at most ``limit``): paced ones and proof batches, then
        retries, then first tries."""
        self._expire(now)
        budget = self._budget(now)
        if limit is not None:
            budget = min(budget, limit)
        for pacer in self._active:
            if pacer.busy:
                self._active_at[pacer.family] = now
                self._busy.add(pacer)
            elif pacer in self._busy:  # done: the others of its family learn its gap
                self._busy.discard(pacer)
                for other in self._busy:
                    if other.family == pacer.family:
                        other.learn(pacer)
        if self._holding:
            self._release_held(now)
        out: list[tuple[Target, bytes]] = []
        chosen: list[_Probe] = []
        for pacer in self._active:
            if len(chosen) + len(out) >= budget:
                break
            self._send_paced(pacer, now, budget - len(chosen) - len(out), chosen, out)
        if self._priming:
            self._release_primed(now)
        for queue in (self._retry, self._fresh):
            while queue and len(chosen) + len(out) < budget:
                probe = queue.popleft()
                if probe.result is not None:
                    continue
                if not probe.host.primed and queue is self._fresh and self._prime(probe, now):
                    continue
                pacer = probe.host.pacer
                if pacer.state is PaceState.PACED or pacer.state is PaceState.PROVING:
                    probe.judged = 0  # silences before the pacing were the limiter's as likely as the port's
                    pacer.queue.append(probe)
                    pacer.settle()
                    continue
                probe.paced = False
                chosen.append(probe)
        unarmed = self._unarmed
        payload = self.payload
        deadlines: dict[_Host, float] = {}  # once a host has a round trip, its waits do not depend on the try
        for probe in chosen:
            probe.tries += 1
            probe.sent_at = now
            probe.waiting = True
            host = probe.host
            deadline = deadlines.get(host)
            if deadline is None:
                deadline = now + self._wait(probe)
                if host.srtt is not None:
                    deadlines[host] = deadline
            unarmed.append((deadline, probe, probe.tries))
            data = payload(probe.target)
            probe.earlier = probe.sent
            probe.sent = data
            out.append((probe.target, data))
        if self.rate is not None:
            self._tokens -= len(out)
        return out

    def _send_paced(self, pacer: Pacer[_Probe], now: float, room: int, chosen: list[_Probe],
                    out: list[tuple[Target, bytes]]) -> None:
        """A pacer's due datagrams: a proof batch (its members, then the canary), or paced probes."""
        queue = pacer.queue
        while queue and queue[0].result is not None:
            queue.popleft()
        while pacer.candidates and pacer.candidates[0].result is not None:
            pacer.candidates.popleft()
        canary = pacer.canary
        if canary is not None and room > 1:
            batch = pacer.take_batch(now, self._wait(canary))
            if batch is not None:
                live = [p for p in batch.members[:room - 1] if p.result is None]
                pacer.candidates.extendleft(reversed([p for p in batch.members[room - 1:] if p.result is None]))
                batch.members = live
                for probe in live:
                    probe.batch = batch
                    probe.paced = True
                    self._mark_sent(probe, now, out)
                data = self.payload(canary.target)
                canary.earlier, canary.sent = canary.sent, data
                out.append((canary.target, data))
                return
        sent = 0
        while room > sent and sent < 16:
            while queue and queue[0].result is not None:
                queue.popleft()
            if not pacer.take_paced(now):
                break
            probe = queue.popleft()
            probe.paced = True
            probe.batch = None
            self._mark_sent(probe, now, out)
            self._unarmed.append((now + self._wait(probe), probe, probe.tries))
            sent += 1

    def _prime(self, probe: _Probe, now: float) -> bool:
        """Whether ``probe``, a first try to a host not yet primed, must wait (it is kept aside)."""
        host = probe.host
        if host.prime_at is None:
            host.prime_at = now
        if host.prime_sent < PRIME_COUNT:
            host.prime_sent += 1
            return False
        host.early.append(probe)
        self._priming.add(host)
        return True

    def _release_primed(self, now: float) -> None:
        """Hosts whose first probes were answered (the neighbour is resolved), or waited for long
        enough: their other first tries go, in order, before anything else."""
        for host in list(self._priming):
            assert host.prime_at is not None
            if host.srtt is not None or host.errors or now >= host.prime_at + PRIME_WAIT:
                host.primed = True
                self._fresh.extendleft(reversed(host.early))
                host.early.clear()
                self._priming.discard(host)

    def _mark_sent(self, probe: _Probe, now: float, out: list[tuple[Target, bytes]]) -> None:
        data = self.payload(probe.target)
        probe.earlier, probe.sent = probe.sent, data
        probe.tries += 1
        probe.sent_at = now
        probe.waiting = True
        out.append((probe.target, data))

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

    def _rearm(self, host: _Host) -> None:
        """The host's first round trip is known: the tries sent before, which wait the first-contact
        timeout, now wait what the round trip says (a small remote scan is not held up by the guess)."""
        self._arm()
        for probe in self._of(host):
            if probe.result is None and probe.waiting and probe.batch is None:
                self._seq += 1
                heapq.heappush(self._timers, (probe.sent_at + self._wait(probe), self._seq, probe, probe.tries))

    def _expire(self, now: float) -> None:
        self._arm()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _deadline, _seq, probe, tries = heapq.heappop(timers)
            if probe.result is not None or probe.tries != tries or probe.batch is not None or not probe.waiting:
                continue
            probe.waiting = False
            self._silence(probe, now)
        for pacer in self._active:
            if pacer.batch is not None and pacer.batch.deadline <= now:
                self._batch_over(pacer, now)

    def _batch_over(self, pacer: Pacer[_Probe], now: float) -> None:
        """A proof batch's wait ended: an answered canary makes every silence in it a real try."""
        proved, members = pacer.batch_over()
        back = []
        for probe in members:
            probe.batch = None
            probe.paced = False
            probe.waiting = False
            if probe.result is not None:
                continue
            if proved or not self._may_ask_again(probe, now):  # proved silent, or asked as often as we ever ask
                probe.judged += 1
                if probe.judged > self.retries:
                    self._final_silence(probe)
                    continue
            back.append(probe)
        pacer.back_to_proof(back)
        if pacer.dropping(now):
            for probe in pacer.give_up():  # dropping, not limiting: silence counts again
                probe.paced = False
                self._retry.append(probe)

    def _may_ask_again(self, probe: _Probe, now: float) -> bool:
        """Below its sends, or a sibling of its family had an error lately (its budget may be shared
        and spent by others: once they are done, this port gets its token and its proof)."""
        if probe.tries < self._max_sends:
            return True
        last = self._family_error_at.get(probe.target.family)
        window = max(_SIBLING_ERROR_WINDOW, 4 * probe.host.pacer.gap)
        return last is not None and now - last <= window and probe.host.pacer.state is not PaceState.GAVE_UP

    def _silence(self, probe: _Probe, now: float) -> None:
        """A try went unanswered: send it again at the pace, hold it, retry it, or give the verdict."""
        host = probe.host
        pacer = host.pacer
        bounded = self._may_ask_again(probe, now)
        if probe.paced:
            probe.paced = False
            pacer.resolved(True)
            if pacer.state is not PaceState.GAVE_UP and bounded:
                probe.quiet += 1
                pacer.silent_at_pace(probe, probe.quiet)
                return
        elif not host.exempt and bounded and pacer.state is not PaceState.GAVE_UP:
            if pacer.canary is not None:  # its kernel answers closed ports: the silence may be its limiter
                if pacer.state is PaceState.FREE:
                    pacer.start(now)
                    self._active.append(pacer)
                probe.judged = 0
                pacer.queue.append(probe)
                pacer.settle()
                return
            if host.errors == 0 and self._budget_may_explain(probe):
                host.held.append(probe)  # perhaps an alias whose budget a sibling spent: ask later
                self._holding.add(host)
                return
        probe.judged += 1
        if probe.judged > self.retries:
            self._final_silence(probe)
        else:
            self._retry.append(probe)

    def _final_silence(self, probe: _Probe) -> None:
        """Every counted try was silent (or answered by something we cannot accept)."""
        target, tries = probe.target, probe.tries
        if probe.unverified is not None:
            result = PortResult(target, CONFLICT, f"udp-response-{UNVERIFIED}", tries, None, probe.unverified)
        elif probe.unmatched is not None:
            result = PortResult(target, CONFLICT, "unmatched-reply", tries, None, probe.unmatched)
        else:
            result = PortResult(target, OPEN_FILTERED, "no-response", tries)
        self._decided.append(result)
        self._decide(probe, result)

    def _limited(self, family: int) -> bool:
        return any(p.family == family and p.busy for p in self._active)

    def _interval(self, family: int) -> float:
        """The longest ICMP interval measured for ``family``; before any, the first-contact timeout
        (1 s, Linux's default for IPv4): long enough for any default budget to refill a token."""
        return max((p.gap / UNDER for p in self._active if p.family == family and p.measured),
                   default=self.timeout)

    def _quiet_since(self, host: _Host) -> float:
        """Since when nothing may have spent a budget this host shares: its first probe (a scan
        just before ours may have spent it) or the family's last ICMP error or pacing."""
        first = host.prime_at if host.prime_at is not None else 0.0
        return max(first, self._active_at.get(host.pacer.family, first))

    def _budget_may_explain(self, probe: _Probe) -> bool:
        """Whether the silence of a host that never sent an error may be an empty budget rather
        than the port: its try went out less than an interval after something (another scan, or
        an alias of its kernel that we are pacing) may have spent that budget."""
        return probe.sent_at < self._quiet_since(probe.host) + self._interval(probe.target.family)

    def _held_until(self, host: _Host) -> float | None:
        """When a held host is asked again: once no host of its family is being paced and an
        interval has passed since anything may have spent a budget it shares, so that its next
        silence counts (``None``: still paced)."""
        if self._limited(host.pacer.family):
            return None
        return self._quiet_since(host) + self._interval(host.pacer.family)

    def _release_held(self, now: float) -> None:
        for host in list(self._holding):
            due = self._held_until(host)
            if due is not None and now >= due:
                self._retry.extend(host.held)
                host.held.clear()
                self._holding.discard(host)

    def next_wakeup(self) -> float | None:
        """When ``sends`` will next have something to do (``None`` when done)."""
        if self.done:
            return None
        times: list[float] = []
        if self._fresh or self._retry:
            if self.rate is None or self._refilled is None:
                return 0.0
            times.append(self._refilled + max(0.0, 1.0 - self._tokens) / self.rate)
        for pacer in self._active:
            if pacer.batch is not None:
                times.append(pacer.batch.deadline)
            elif pacer.queue or (pacer.candidates and pacer.canary is not None):
                times.append(pacer.next_send)
        for host in self._priming:
            assert host.prime_at is not None
            times.append(host.prime_at if host.srtt is not None or host.errors else host.prime_at + PRIME_WAIT)
        for host in self._holding:
            due = self._held_until(host)
            if due is not None:
                times.append(due)
        self._arm()
        timers = self._timers
        while timers and (timers[0][2].result is not None or timers[0][2].tries != timers[0][3]
                          or timers[0][2].batch is not None or not timers[0][2].waiting):
            heapq.heappop(timers)  # stale: answered or sent again since
        if timers:
            times.append(timers[0][0])
        return min(times) if times else None

    # -- arrivals ------------------------------------------------------------------------------------

    def _answered(self, probe: _Probe, now: float, latest: bool = False) -> float:
        """``latest``: the answer quotes the last try's own nonce, so its round trip is certain."""
        rtt = now - probe.sent_at
        host = probe.host
        if ((probe.tries == 1 or latest) and (host.samples < 64 or not host.samples & 15)) or host.srtt is None:
            # Karn: a retried probe's round trip is ambiguous — unless the answer quotes which try
            # it answers (our nonce, as TCP's timestamps do). Before any sample, the shortest
            # reading beats the first-contact guess (it sets how soon silence is noticed, never a verdict).
            host.sample(rtt)
            if host.samples == 1 and not host.exempt:
                self._rearm(host)
            assert host.srtt is not None
            rto = host.srtt + 4 * host.rttvar
            if rto > self._family_rto.get(probe.target.family, 0.0):
                self._family_rto[probe.target.family] = rto
        if probe.paced and probe.batch is None:
            probe.paced = False
            host.pacer.resolved(False)
        return rtt

    def on_reply(self, family: int, ip: str, port: int, data: bytes, now: float) -> PortResult | None:
        """A datagram from ``ip:port`` on the socket that probes: an answer, if it is one to us."""
        probe = self._probes.get((ip, port, family))  # type: ignore[call-overload]
        if probe is None or probe.tries == 0:
            self.on_forgery(ip, family)  # a port we never asked (or not yet): somebody forges
            return None
        earlier = probe.result
        if earlier is not None and earlier.state in (OPEN, CONFLICT):
            return None
        host = probe.host
        reading = None if self.classify is None else self.classify(probe.target, data)
        if reading is None:  # no service probe went there: any reply answers; our echoed nonce proves it
            evidence, verified = None, any(s is not None and len(s) >= NONCE_BYTES and s in data
                                           for s in (probe.sent, probe.earlier))
            if verified and data in (probe.sent, probe.earlier):
                evidence = Evidence("echo", {"bytes": len(data)})  # our datagram back: RFC 862 echo, on any port
        else:
            evidence, verified = reading
            if evidence is None:
                probe.unmatched = data  # not an answer to what we asked: kept, but proves nothing
                return None
        if host.suspect and not verified:
            if earlier is None:
                probe.unverified = data
            return None  # somebody forges this host's replies: only our nonce counts now
        rtt = self._answered(probe, now)
        reason = "udp-response" if evidence is None else evidence.protocol
        if earlier is not None and earlier.state in (CLOSED, FILTERED):
            # Strategy: two pieces of evidence that cannot both be true (one of them forged, or the
            # path changing under us): say so, with both, rather than keep whichever came last.
            return self._decide(probe, PortResult(probe.target, CONFLICT, f"{reason}-after-{earlier.reason}",
                                                  probe.tries, rtt, data, earlier.icmp, evidence), force=True)
        probe.verified = verified
        return self._decide(probe, PortResult(probe.target, OPEN, reason, probe.tries, rtt, data, None, evidence),
                            force=True)

    def on_icmp(self, family: int, ip: str, port: int, icmp_type: int, code: int, sender: str | None,
                now: float, quote: bytes | None = None) -> PortResult | None:
        """An ICMP error answering our datagram to ``ip:port`` (from the error queue); ``quote``: the
        payload it quotes (``None``: not read, taken as ours)."""
        probe = self._probes.get((ip, port, family))  # type: ignore[call-overload]
        if probe is None or probe.tries == 0:
            self.on_forgery(ip, family)
            return None
        if icmp_type != _DEST_UNREACHABLE.get(family):
            return None  # time exceeded, parameter problem...: says nothing about the port
        host = probe.host
        verified = False
        if quote is not None:
            if quote == probe.sent:  # the whole datagram quoted: the usual case, made fast
                verified = len(quote) >= NONCE_BYTES
            else:
                sent = _quoted((probe.sent, probe.earlier), quote)
                if sent is None:
                    self.on_forgery(ip, family)  # it quotes a datagram we never sent
                    return None
                verified = len(sent) >= NONCE_BYTES
        self._family_error_at[family] = now  # ours, quoted: this family's kernels still give tokens
        if probe.result is not None:
            pacer = host.pacer
            if pacer.batch is not None and pacer.batch.canary is probe:
                pacer.batch.canary_answered = True
                pacer.error(now, paced=False)
            return None
        key = (family, icmp_type, code)
        verdict = self._reasons.get(key)
        if verdict is None:
            state = CLOSED if (icmp_type, code) == _PORT_UNREACHABLE.get(family) else FILTERED
            verdict = self._reasons[key] = (state, self.reason_for(family, icmp_type, code))
        if verdict[0] == CLOSED and sender != ip.partition("%")[0]:
            verdict = (FILTERED, NOT_FROM_TARGET)  # only the target can say its port is closed
        if not host.exempt:
            self._active_at[family] = now
            self._paced_error(host, probe, sender or ip, now)
        latest = quote is not None and quote == probe.sent and len(quote) >= NONCE_BYTES
        rtt = self._answered(probe, now, latest=latest)
        state, reason = verdict
        if host.suspect and not verified:
            state, reason = CONFLICT, f"{reason}-{UNVERIFIED}"
        result = PortResult(probe.target, state, reason, probe.tries, rtt, None, (icmp_type, code, sender))
        probe.result = result
        probe.verified = verified
        self._open -= 1
        return result

    def _paced_error(self, host: _Host, probe: _Probe, source: str, now: float) -> None:
        """An error from ``source`` for one of ``host``'s ports: the pacer of that source learns."""
        host.errors += 1
        pacer = host.pacer
        if host.errors == 1 and source != pacer.source and pacer.state is PaceState.FREE:
            # a router answering for hosts behind it: one budget for all of them
            pacer = self._pacers.setdefault((source, pacer.family, host.lane), Pacer(source, pacer.family, host.lane))
            host.pacer = pacer
        if source != pacer.source:
            return
        pacer.canary = probe  # the newest port proved to answer with an error: the next canary
        batch = pacer.batch
        if batch is not None and probe.batch is batch:
            batch.errors += 1
        pacer.error(now, paced=probe.paced and probe.batch is None)

    def on_forgery(self, ip: str, family: int) -> None:
        """Something we never asked for, about ``ip``: from now on, only our nonce counts there, and
        the verdicts that rested on less become ``conflict`` (reported again by ``take_decided``)."""
        hosts = [h for n in range(max(1, self._lanes.get(family, 1))) if (h := self._hosts.get((ip, family, n)))]
        if not hosts or hosts[0].exempt:
            return
        hosts[0].forged += 1
        fresh = [h for h in hosts if not h.suspect]
        for host in fresh:
            host.suspect = True
        for probe in (p for h in fresh for p in self._of(h)):
            result = probe.result
            if result is None or probe.verified or result.state not in (OPEN, CLOSED, FILTERED) \
                    or result.reason == "own-socket":
                continue
            probe.result = result._replace(state=CONFLICT, reason=f"{result.reason}-{UNVERIFIED}")
            self._decided.append(probe.result)

    def _of(self, host: _Host) -> list[_Probe]:
        """The host's ports (seldom asked: once per host at most, so not kept)."""
        return [probe for probe in self._probes.values() if probe.host is host]

    def _decide(self, probe: _Probe, result: PortResult, *, force: bool = False) -> PortResult | None:
        if probe.result is None:
            self._open -= 1
        elif not force:
            return None
        probe.result = result
        return result


def lane(target: Target, lanes: dict[int, int]) -> int:
    """Which of the prober's source addresses (of ``lanes[family]``) asks ``target``."""
    return target.port % lanes.get(target.family, 1) if lanes else 0


def _quoted(sent: tuple[bytes | None, ...], quote: bytes) -> bytes | None:
    """The payload among ``sent`` that ``quote`` reproduces (a quote may be cut short, but not
    below our nonce), or ``None``."""
    for data in sent:
        if data is not None and data.startswith(quote) and len(quote) >= min(len(data), NONCE_BYTES):
            return data
    return None


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
