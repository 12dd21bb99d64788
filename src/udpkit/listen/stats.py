"""What a listener counts: datagrams and bytes by name, distinct peers in bounded memory, and the
faults — everything a peer sent or provoked that did not go as asked — each under its own name.

Strategy for peers: an exact set while it is small (:data:`EXACT_PEERS`), then a HyperLogLog
estimate in 4 KiB (2**12 registers, about 1.6 % standard error), so a flood of spoofed distinct
peers costs a fixed amount of memory instead of ~200 bytes each for ever.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

__all__ = ["Counters", "EXACT_PEERS", "ListenerStats", "PeerTally"]

#: Distinct peers counted exactly; beyond this, estimated.
EXACT_PEERS = 4096
_P = 12  # HyperLogLog precision: 2**12 one-byte registers
_M = 1 << _P
_ALPHA = 0.7213 / (1 + 1.079 / _M)
_MASK = (1 << 64) - 1


class PeerTally:
    """How many distinct peers: ``add(peer)`` per datagram (the set's own ``add`` while exact, so the
    hot loops pay a C call), ``settle()`` once per batch to switch to the estimate when it grows."""

    __slots__ = ("_exact", "_registers", "add", "update")

    def __init__(self) -> None:
        self._exact: set[Any] | None = set()
        self._registers = bytearray(_M)
        self.add: Callable[[Any], None] = self._exact.add
        #: ``add`` for each of an iterable's peers (the set's own ``update`` while exact)
        self.update: Callable[[Iterable[Any]], None] = self._exact.update

    @property
    def estimated(self) -> bool:
        return self._exact is None

    def settle(self) -> None:
        """Move to the estimate once the exact set has outgrown :data:`EXACT_PEERS`."""
        exact = self._exact
        if exact is not None and len(exact) > EXACT_PEERS:
            self._exact = None
            for peer in exact:
                self._add_estimate(peer)
            self.add = self._add_estimate
            self.update = self._update_estimate

    def _update_estimate(self, peers: Iterable[Any]) -> None:
        for peer in peers:
            self._add_estimate(peer)

    def _add_estimate(self, peer: Any, registers: bytearray | None = None) -> None:
        registers = self._registers if registers is None else registers
        # Python's hashes of similar peers (one address, consecutive ports) are spread too evenly, not
        # at random, which filled the registers too evenly: 1.6x the truth at 5,000 such peers. A
        # 64-bit finalizer (MurmurHash3's fmix64) makes them look random, as HyperLogLog needs.
        h = hash(peer) & _MASK
        h = ((h ^ (h >> 33)) * 0xFF51AFD7ED558CCD) & _MASK
        h = ((h ^ (h >> 33)) * 0xC4CEB9FE1A85EC53) & _MASK
        h ^= h >> 33
        index, rest = h >> (64 - _P), h & ((1 << (64 - _P)) - 1)
        rank = (64 - _P) - rest.bit_length() + 1
        if rank > registers[index]:
            registers[index] = rank

    def __len__(self) -> int:
        if self._exact is not None:
            return len(self._exact)
        return _estimate(self._registers)

    def count_with(self, pending: Iterable[Any]) -> int:
        """How many distinct peers, ``pending`` included, without adding them: for a reader on
        another thread while the serving thread holds peers it has not added yet."""
        pending = list(pending)  # (a snapshot: the serving thread may append meanwhile)
        exact = self._exact
        if exact is not None:
            return len(exact) + len({peer for peer in pending if peer not in exact})
        registers = bytearray(self._registers)
        for peer in pending:
            self._add_estimate(peer, registers)
        return _estimate(registers)


def _estimate(registers: bytearray) -> int:
    """HyperLogLog's estimate of the distinct peers behind ``registers``."""
    zeros = registers.count(0)
    estimate = _ALPHA * _M * _M / sum(2.0 ** -r for r in registers)
    if estimate <= 2.5 * _M and zeros:
        estimate = _M * math.log(_M / zeros)  # small-range correction (linear counting)
    return int(round(estimate))


class Counters:
    """The running totals of one listener, by name (mutable; :class:`ListenerStats` is the snapshot)."""

    __slots__ = ("bytes_in", "bytes_out", "datagrams_in", "datagrams_out", "faults", "refused", "truncated")

    def __init__(self) -> None:
        self.datagrams_in = self.bytes_in = self.datagrams_out = self.bytes_out = 0
        self.refused = self.truncated = 0
        #: what a peer sent or provoked that was not served as asked, by name (see ListenerStats)
        self.faults: Counter[str] = Counter()


class ListenerStats(NamedTuple):
    """What a listener has seen: datagrams and bytes in and out, distinct peers (estimated past
    :data:`EXACT_PEERS`), sessions open now and in all, datagrams refused by ``allow``, replies the
    kernel would not take, datagrams cut short, datagrams the kernel dropped because a receive
    queue was full (``SO_RXQ_OVFL``), and the named faults:

    - ``not_unicast``: sent to a multicast or broadcast address, so not answered (unless
      ``answer_groups``);
    - ``socket_error:ERRNO``: an ICMP error (for an earlier reply) reported in place of a datagram;
    - ``reply_failed:ERRNO``: a reply the kernel refused (a source address gone, no route, ...);
    - ``session_error:ERRNO``: a session ended by its socket's error;
    - ``no_session:ERRNO``: no socket could be made for a new peer's session (served from the
      listening socket instead; relays drop the datagram);
    - ``responder_error:NAME``: the responder failed on a datagram;
    - ``not_recorded``: datagrams the recording could not take after it failed.
    """

    datagrams_in: int = 0
    bytes_in: int = 0
    datagrams_out: int = 0
    bytes_out: int = 0
    peers: int = 0
    sessions_open: int = 0
    sessions_total: int = 0
    refused: int = 0
    replies_dropped: int = 0
    truncated: int = 0
    kernel_drops: int = 0
    peers_estimated: bool = False
    faults: Mapping[str, int] = {}
    #: the responder's own counts (what it answered and refused, and why), under its name
    responder: Mapping[str, int] = {}
    responder_name: str = ""

    def summary(self) -> str:
        peers = f"{'about ' if self.peers_estimated else ''}{self.peers} peer{'s' if self.peers != 1 else ''}"
        text = (
            f"{self.datagrams_in} datagrams ({self.bytes_in} bytes) in, {self.datagrams_out} ({self.bytes_out} bytes)"
            f" out, {peers}, {self.kernel_drops} dropped by the kernel"
        )
        if self.sessions_total:
            text += f", {self.sessions_total} sessions ({self.sessions_open} open)"
        if self.refused:
            text += f", {self.refused} refused"
        if self.faults:
            text += "; " + ", ".join(f"{name} {count}" for name, count in sorted(self.faults.items()))
        counted = [f"{name.replace('_', ' ')} {count}" for name, count in self.responder.items() if count]
        if counted:
            text += f"; {self.responder_name or 'responder'}: " + ", ".join(counted)
        return text

    def merged(self, other: Mapping[str, Any]) -> ListenerStats:
        """These statistics plus another worker's (as ``_asdict()`` gave them, through JSON)."""
        totals = self._asdict()
        for name, value in other.items():
            if name in ("faults", "responder"):
                merged: Counter[str] = Counter(totals[name])
                merged.update(value)
                totals[name] = dict(merged)
            elif name == "responder_name":
                totals[name] = totals[name] or value
            elif name == "peers_estimated":
                totals[name] = totals[name] or bool(value)
            elif name in totals:
                totals[name] += value
        return ListenerStats(**totals)
