"""The responder interface every service implements, with the optional capabilities a listener may
use declared here (and their defaults), so nothing is asked for by name elsewhere."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from udpkit.addr import Endpoint

__all__ = ["BaseResponder", "Capabilities", "Evidence", "Reply", "Responder", "ServiceProbe", "capabilities"]

#: What a responder answers: one datagram, several, or ``None`` (stay silent).
Reply = bytes | list[bytes] | None


class Responder(Protocol):
    """Turns one received datagram into replies; ``now`` is the receive time (UNIX seconds).

    ``handle`` is the whole contract; a responder may also declare (see :class:`BaseResponder` for
    the defaults, and :func:`capabilities` for how a listener reads them):

    - ``replies`` (``True``): ``False`` if it never answers — the listener then reads datagrams
      without building an object for each;
    - ``uses_time`` (``True``): ``False`` if ``now`` does not matter — the kernel is then not asked
      for a receive timestamp per datagram;
    - ``finish(payload, now) -> bytes``: called just before each reply is sent, with the time then
      (NTP writes its transmit timestamp there);
    - ``stats`` (``{}``): named counts of what it answered and refused, for the listener's summary;
    - ``handle_batch(datagrams, now) -> list[(payload, peer, source)] | None`` (``source``: the
      request's destination, which the reply is sent from) and ``trailer(now) -> bytes``:
      a batch of received datagrams (:class:`udpkit.net.rx.Datagram` records, each with its own
      receive time or ``None``; ``now`` is the batch's) answered at once, each payload then sent
      followed by ``trailer`` of the send time if it has one — ``finish``'s work written once per batch. It
      returns ``None`` when it cannot batch right now (a rate limit per client, say): the listener
      then calls ``handle`` per datagram. What it answers must be what ``handle`` and ``finish``
      would have, byte for byte, the trailer's time apart;
    - ``trailer_clock`` (``None``): ``"ntp"`` when ``trailer(now)`` is ``now`` as an NTP timestamp,
      which the send layer may then read itself, right before the system call;
    - ``reflect_from`` (``None``): a port number when ``handle`` is, for now, the plain echo of
      every unicast datagram from a sender port at least that high — the send layer may then read
      and send such datagrams back without a call per datagram (the others still reach ``handle``);
    - ``kept_answers`` (``None``): ``(table, count)`` or ``(table, count, fresh)`` when some
      datagrams are answered from a table, by every byte but the first two (a DNS query but its
      ID): ``table[datagram[2:]]`` is ``(answer, outcome)``, the reply is ``datagram[:2] + answer``,
      and ``count(outcomes)`` is called with each given answer's ``outcome`` — the send layer may
      answer those without a call per datagram. ``fresh(datagram)``, for one not in the table,
      returns such an ``(answer, outcome)`` (what ``handle`` would answer) or ``None``; the others
      still reach ``handle``, which may add to the table.
    """

    name: str

    def handle(self, datagram: bytes, peer: Endpoint, now: float) -> Reply: ...


class BaseResponder:
    """The defaults of :class:`Responder`'s optional capabilities, for responders to inherit."""

    name = "responder"
    replies = True
    uses_time = True

    def __init__(self) -> None:
        self.stats: dict[str, int] = {}

    def finish(self, payload: bytes, now: float) -> bytes:
        return payload


class Capabilities(NamedTuple):
    """A responder's optional capabilities, read once (``finish`` is ``None`` when it has none)."""

    replies: bool
    uses_time: bool
    finish: Any
    stats: dict[str, int]
    handle_batch: Any = None
    trailer: Any = None
    trailer_clock: str | None = None
    reflect_from: int | None = None
    ntp_template: Any = None
    kept_answers: Any = None


def capabilities(responder: Responder) -> Capabilities:
    """What ``responder`` declares beyond ``handle``, with :class:`Responder`'s defaults for the rest."""
    finish = getattr(responder, "finish", None)
    if finish is not None and getattr(type(responder), "finish", None) is BaseResponder.finish:
        finish = None  # the default does nothing: skip the call per reply
    stats = getattr(responder, "stats", None)
    handle_batch, trailer = getattr(responder, "handle_batch", None), getattr(responder, "trailer", None)
    return Capabilities(bool(getattr(responder, "replies", True)), bool(getattr(responder, "uses_time", True)),
                        finish, stats if isinstance(stats, dict) else {}, handle_batch, trailer,
                        getattr(responder, "trailer_clock", None), getattr(responder, "reflect_from", None),
                        getattr(responder, "ntp_template", None), getattr(responder, "kept_answers", None))


class Evidence(NamedTuple):
    """What a reply proves: the ``protocol`` that answered and what it said (``detail``, plain JSON
    values: a probe's reading of the reply, such as an NTP server's stratum and offset)."""

    protocol: str
    detail: dict[str, Any]


class ServiceProbe(Protocol):
    """An application probe: the datagram to send and the recogniser of a genuine answer.

    ``classify`` must never raise on hostile bytes: a reply that is not the protocol's is ``None``
    (the port still answered, so it is open, but nothing more is claimed). ``now``: the send time
    for ``build`` and the receive time for ``classify`` (UNIX seconds), for probes that measure
    clocks or remember what they asked.
    """

    name: str
    #: Whether ``classify`` accepts only an answer to one of our own requests (an id, nonce or stamp
    #: we chose): such an answer cannot be forged by a host that never saw the request.
    verifies: bool

    def build(self, now: float) -> bytes: ...

    def classify(self, reply: bytes, now: float) -> Evidence | None: ...
