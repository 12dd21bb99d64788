"""How fast to ask a host whose ICMP errors are rate-limited, as an explicit state per error source.

Linux answers a closed port with one ICMP error, drawn from a token bucket keyed on the error's
destination (the prober's address) inside the responding kernel: a burst of six
(``XRLIM_BURST_FACTOR``), then one every ``icmp_ratelimit`` ms (IPv4 default 1000, IPv6 100,
shifted for wide prefixes), all under a global 1000/s with a burst of 50. Every closed port costs a
token, silent and answering ports cost none, so the fastest correct scan of a remote host takes
(closed ports − burst) × interval: the *floor*. A prober that sends slower wastes tokens; one that
sends faster is fine, *if* it never counts a silence that an empty bucket explains as a try.

That is the whole strategy, and it has two halves that this module keeps apart:

- **Speed** follows the evidence: ``Pacer.gap`` starts short and, while errors arrive as fast as
  probes go out, halves; once errors come slower than probes (the bucket is empty: *saturated*), the
  median spacing between errors is the interval, and the gap grows towards just under it — at most
  twice as slow per window, since sending faster than the bucket costs only datagrams while sending
  slower wastes its tokens. Nothing is fixed: a 2 s interval gets a 1.8 s gap, a 1 ms global limit
  a 0.9 ms one.
- **Truth** comes from a *canary*: a port of that host already proved closed. A silent probe sent at
  the pace is never held against its port; it is sent again, and after two paced silences it waits
  for a *proof batch*: a few such ports, then the canary, back to back. The kernel takes them in
  order, so an ICMP error for the canary proves the bucket still held a token after every port of
  the batch — their silence is then genuine, one real try each. No error for the canary: nothing is
  judged, the ports wait for the next batch. The rule holds whatever the interval, whether a budget
  was spent before the scan began, and whoever else (an alias of the same kernel) drains it.

States (``PaceState``) and transitions, driven by ``ProbeMachine``:

- ``FREE``: no sign of a limiter; probes go at the scan's speed and silence counts as a try.
  → ``PACED`` when a probe of the group falls silent after the group's kernel has sent a port
  unreachable (there is a canary: the silence may be the limiter).
- ``PACED``: one probe per ``gap`` from ``queue``. → ``PROVING`` when ``queue`` is empty and
  ``candidates`` are left; back to ``PACED`` whenever ``queue`` refills.
- ``PROVING``: one proof batch at a time, at most one per ``gap``.
- ``GAVE_UP``: ``MAX_MISSES`` canaries in a row went silent and no error came for ``GIVE_UP_AFTER``
  seconds: the host is now dropping, not limiting. Its waiting ports go back to ordinary tries (silence counts).

Hosts of one family that have never sent an error are *held* while another host of that family is
being paced (``ProbeMachine``): an alias whose burst was spent by its sibling looks exactly like a
firewall, and is asked again once the others are done.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import Generic, TypeVar

__all__ = ["FIRST_GAP", "GIVE_UP_AFTER", "MAX_GAP", "MAX_MISSES", "MIN_GAP", "PaceState", "Pacer"]

P = TypeVar("P")

#: The first gap, the shortest and the longest: the last is far beyond any sane ``icmp_ratelimit``.
FIRST_GAP, MIN_GAP, MAX_GAP = 0.005, 0.0002, 10.0
#: Paced probes per speed decision; the share of the interval the gap aims for (under it: no token
#: is wasted, and an empty slot costs nothing but a datagram sent again).
WINDOW, UNDER = 4, 0.9
#: Silent canaries in a row (no other error either), and seconds without any error, before a host
#: counts as dropping rather than limiting: longer than any sane ``icmp_ratelimit``.
MAX_MISSES, GIVE_UP_AFTER = 8, 30.0
#: Proof batch sizes: the first, the smallest, the largest.
FIRST_BATCH, MAX_BATCH = 16, 256
#: Paced silences before a port waits for a proof batch.
QUIET_TO_PROVE = 2


class PaceState(Enum):
    FREE = "free"
    PACED = "paced"
    PROVING = "proving"
    GAVE_UP = "gave-up"


class Batch(Generic[P]):
    """A proof batch in flight: the ports asked, the canary after them, and what came back."""

    __slots__ = ("canary", "canary_answered", "deadline", "errors", "members", "sent_at")

    def __init__(self, members: list[P], canary: P, sent_at: float, deadline: float) -> None:
        self.members = members
        self.canary = canary
        self.sent_at = sent_at
        self.deadline = deadline
        self.canary_answered = False
        self.errors = 0


class Pacer(Generic[P]):
    """The pacing state of one error source (a host's kernel, or a router answering for hosts).

    Holds no clock and sends nothing: ``ProbeMachine`` asks ``due(now)`` and reports what came back.
    """

    def __init__(self, source: str, family: int, lane: int = 0) -> None:
        self.source = source  # the address its errors come from
        self.family = family
        self.lane = lane  # the prober's source address it paces (each has its own budget)
        self.state = PaceState.FREE
        self.gap = FIRST_GAP
        self.next_send = 0.0
        self.queue: deque[P] = deque()  # to send at the pace
        self.candidates: deque[P] = deque()  # silent at the pace: waiting for a proof batch
        self.canary: P | None = None  # a port this source has answered with a port unreachable
        self.batch: Batch[P] | None = None
        self.batch_size = FIRST_BATCH
        self.misses = 0
        self.in_flight = 0  # paced probes not yet resolved
        self.measured = False  # the gap has been set from the spacing of errors at least once
        self._last_error: float | None = None
        self._last_paced: float | None = None
        self._spacings: deque[float] = deque(maxlen=5)
        self._window = [0, 0]  # resolved paced probes, silent among them

    # -- transitions -------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """FREE -> PACED: a silence that the limiter may explain."""
        if self.state is PaceState.FREE:
            self.state = PaceState.PACED
            self.next_send = now

    def give_up(self) -> list[P]:
        """-> GAVE_UP; the ports that were waiting, to be tried the ordinary way."""
        self.state = PaceState.GAVE_UP
        waiting = list(self.queue) + list(self.candidates)
        self.queue.clear()
        self.candidates.clear()
        return waiting

    def settle(self) -> None:
        """PACED while ``queue`` has probes, PROVING while only ``candidates`` are left."""
        if self.state in (PaceState.PACED, PaceState.PROVING):
            self.state = PaceState.PACED if self.queue or not self.candidates else PaceState.PROVING

    @property
    def busy(self) -> bool:
        """Pacing with work left: other hosts of the family that never answered wait for it."""
        return self.state in (PaceState.PACED, PaceState.PROVING) and bool(
            self.queue or self.candidates or self.batch is not None or self.in_flight)

    # -- evidence ----------------------------------------------------------------------------------

    def error(self, now: float, *, paced: bool = True) -> None:
        """An ICMP error from this source answered one of our probes. Only errors for probes sent at
        the pace, one after the other, measure the bucket: a canary's or a batch's follow our schedule."""
        if self.state is not PaceState.FREE and paced and self._last_paced is not None:
            self._spacings.append(now - self._last_paced)
        if paced:
            self._last_paced = now
        self._last_error = now
        self.misses = 0

    def resolved(self, silent: bool) -> None:
        """A paced probe resolved (answered, or silent past its wait): every ``WINDOW`` decide the speed.

        Strategy: errors slower than the gap mean the bucket is empty and their spacing is its
        interval: aim just under it. A window answered in full means tokens were there each time:
        go faster until that stops being true.
        """
        self.in_flight = max(0, self.in_flight - 1)
        self._window[0] += 1
        self._window[1] += silent
        if self._window[0] < WINDOW:
            return
        _count, quiet = self._window
        self._window = [0, 0]
        spacing = sorted(self._spacings)[len(self._spacings) // 2] if self._spacings else None
        if quiet == 0:  # tokens were there every time: halve the gap (over-sending costs only datagrams)
            self.gap = max(MIN_GAP, self.gap * 0.5)
            self._spacings.clear()
        elif spacing is not None and spacing > self.gap * 1.2:
            # at most twice as slow per window: a spacing stretched by the path (a late burst of
            # errors) must not stall the scan, and sending faster than the bucket costs nothing
            self.gap = min(MAX_GAP, max(MIN_GAP, spacing * UNDER, self.gap), self.gap * 2)
            self.measured = True
            self._spacings.clear()

    def silent_at_pace(self, probe: P, quiet: int) -> None:
        """A paced probe heard nothing: send it again, or after ``QUIET_TO_PROVE`` let a batch prove it."""
        (self.queue if quiet < QUIET_TO_PROVE else self.candidates).append(probe)
        self.settle()

    def take_paced(self, now: float) -> bool:
        """Whether one probe from ``queue`` may go now (the caller pops it). A gap shorter than the
        driver's wake-ups is kept on average: the schedule advances by ``gap`` from its last slot,
        but never lets more than a few slots pile up."""
        if self.state is not PaceState.PACED or not self.queue or now < self.next_send:
            return False
        self.next_send = max(self.next_send + self.gap, now - 3 * self.gap)
        self.in_flight += 1
        return True

    def take_batch(self, now: float, wait: float) -> Batch[P] | None:
        """A proof batch to send now, if one is due (members first, then the canary)."""
        self.settle()
        if (self.state is not PaceState.PROVING or self.batch is not None or self.canary is None
                or not self.candidates or now < self.next_send):
            return None
        members = [self.candidates.popleft() for _ in range(min(self.batch_size, len(self.candidates)))]
        self.batch = Batch(members, self.canary, now, now + wait)
        self.next_send = now + self.gap
        return self.batch

    def batch_over(self) -> tuple[bool, list[P]]:
        """The batch's wait is over: (did the canary prove the bucket had a token, its members)."""
        batch = self.batch
        assert batch is not None
        self.batch = None
        if batch.canary_answered:
            self.batch_size = min(MAX_BATCH, self.batch_size * 2)
            self.misses = 0
            if batch.errors:
                self.gap = max(MIN_GAP, self.gap * 0.95)  # a token to spare after the ports' own
        else:
            self.batch_size = max(1, self.batch_size // 2)
            if batch.errors == 0:
                self.misses += 1  # not even one token in the slot: a little slower
                self.gap = min(MAX_GAP, self.gap * 1.1)
        return batch.canary_answered, batch.members

    def learn(self, other: Pacer[P]) -> None:
        """A pacer of the same family has finished: its gap is a better first guess than a stale
        one of ours measured while it competed (aliases of one kernel share one budget)."""
        if other.gap < self.gap:
            self.gap = other.gap
            self._spacings.clear()
            self._last_paced = None  # a spacing across the change would measure the competition

    def dropping(self, now: float) -> bool:
        """Silent canaries for so long that no rate limit explains them: -> ``give_up``."""
        return self.misses >= MAX_MISSES and (self._last_error is None or now - self._last_error >= GIVE_UP_AFTER)

    def back_to_proof(self, probes: list[P]) -> None:
        self.candidates.extend(probes)
        self.settle()

