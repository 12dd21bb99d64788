"""The listener's pure parts: the receive-path table, bounded peer counting, the config's bounds,
and a recording that fails without stopping anything."""

from __future__ import annotations

import io
import math
import resource
import socket
from collections.abc import Callable
from typing import Any

import pytest

from udpkit.addr import Endpoint
from udpkit.errors import UsageError
from udpkit.listen import ListenerConfig, Sink, session_cap
from udpkit.listen import paths
from udpkit.listen.stats import EXACT_PEERS, ListenerStats, PeerTally
from udpkit.services.base import capabilities
from udpkit.services.classic import Discard, Echo
from udpkit.services.ntp import NtpResponder

V4 = Endpoint("127.0.0.1", 0, socket.AF_INET)


@pytest.mark.parametrize("kwargs,path", [
    ({"replies": False, "uses_time": False, "sink_format": None, "routed": False, "bound_ip": "0.0.0.0"}, paths.DISCARD),
    ({"replies": False, "uses_time": False, "sink_format": "pcap", "routed": False, "bound_ip": "::"}, paths.RECORDING),
    ({"replies": True, "uses_time": False, "sink_format": None, "routed": False, "bound_ip": "127.0.0.1"}, paths.BLOCKING),
    ({"replies": True, "uses_time": True, "sink_format": None, "routed": False, "bound_ip": "127.0.0.1"}, paths.TIMED),
    ({"replies": True, "uses_time": False, "sink_format": None, "routed": False, "bound_ip": "0.0.0.0"}, paths.WILDCARD),
    ({"replies": True, "uses_time": False, "sink_format": None, "routed": False, "bound_ip": "224.0.0.1"}, paths.WILDCARD),
    ({"replies": False, "uses_time": False, "sink_format": None, "routed": True, "bound_ip": "127.0.0.1"}, paths.GENERAL),
])
def test_the_path_table(kwargs: dict[str, object], path: str) -> None:
    assert paths.choose_path(sockets=1, **kwargs) == path  # type: ignore[arg-type]


def test_peers_are_exact_while_few_and_estimated_in_fixed_memory_when_many() -> None:
    tally = PeerTally()
    for port in range(1000):
        tally.add(("192.0.2.1", port))
    tally.settle()
    assert len(tally) == 1000 and not tally.estimated
    for i in range(200_000):
        tally.add((f"10.0.{i >> 8 & 255}.{i & 255}", 40000 + (i >> 16)))
        if not i % 1000:
            tally.settle()
    assert tally.estimated and abs(len(tally) - 201_000) / 201_000 < 0.05  # 200,000 distinct + the first 1,000
    assert EXACT_PEERS < 201_000


@pytest.mark.parametrize("peer", [
    lambda i: ("10.0.0.1", 1024 + i),  # one address, consecutive ports: one host or a NAT
    lambda i: (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 5000),  # consecutive addresses
    lambda i: (f"2001:db8::{i:x}", 5000, 0, 0),
], ids=["ports", "addresses", "v6"])
def test_the_estimate_is_within_hyperloglogs_error_whatever_the_peers_look_like(
        peer: Callable[[int], tuple[Any, ...]]) -> None:
    """2**12 registers: 1.6 % standard error. Peers alike (one address, consecutive ports) once
    came out at 1.36-1.6x the truth, their hashes too evenly spread for HyperLogLog."""
    for n in (8_000, 20_000, 60_000):
        tally = PeerTally()
        for i in range(n):
            tally.add(peer(i))
        tally.settle()
        assert tally.estimated and abs(len(tally) - n) / n < 0.07, (n, len(tally))


def test_peers_not_yet_added_count_once_and_are_not_added() -> None:
    """``count_with``: a reader on another thread counts the serving thread's pending senders too."""
    tally = PeerTally()
    tally.update([("192.0.2.1", 1), ("192.0.2.1", 2)])
    assert tally.count_with([("192.0.2.1", 2), ("192.0.2.9", 9), ("192.0.2.9", 9)]) == 3
    assert len(tally) == 2
    for i in range(20_000):
        tally.add(("10.0.0.1", i))
    tally.settle()
    assert tally.estimated
    before = len(tally)
    assert tally.count_with([]) == before
    assert tally.count_with([("198.51.100.1", port) for port in range(5000)]) > before + 4000
    assert len(tally) == before


def test_statistics_of_workers_add_up_with_their_faults() -> None:
    one = ListenerStats(datagrams_in=3, faults={"not_unicast": 1})
    both = one.merged(ListenerStats(datagrams_in=2, faults={"not_unicast": 2, "socket_error:EHOSTUNREACH": 1})._asdict())
    assert both.datagrams_in == 5 and both.faults == {"not_unicast": 3, "socket_error:EHOSTUNREACH": 1}
    assert "not_unicast 3" in both.summary()


def test_sessions_are_capped_by_the_open_files_limit_and_expire_by_default() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    config = ListenerConfig.checked((V4,), fork=True)
    assert config.max_sessions == session_cap() < soft and config.idle_timeout == 60.0
    assert ListenerConfig.checked((V4,), relay=(socket.AF_INET, ("127.0.0.1", 9))).max_sessions == session_cap(2)
    assert ListenerConfig.checked((V4,), fork=True, idle_timeout=0).idle_timeout is None
    with pytest.raises(UsageError, match="open-files limit"):
        ListenerConfig.checked((V4,), fork=True, max_sessions=soft * 2)


@pytest.mark.parametrize("value", [math.inf, math.nan, 1e400, -1.0, 0.0])
def test_durations_must_be_finite_and_positive(value: float) -> None:
    with pytest.raises(UsageError):
        ListenerConfig.checked((V4,), duration=value)


def test_capabilities_are_read_with_the_declared_defaults() -> None:
    class Bare:
        name = "bare"

        def handle(self, datagram: bytes, peer: Endpoint, now: float) -> bytes:
            return datagram

    assert capabilities(Bare()) == (True, True, None, {}, None, None, None, None, None, None)  # type: ignore[arg-type]
    assert capabilities(Discard())[:3] == (False, False, None)
    assert capabilities(Echo()).finish is None and capabilities(NtpResponder()).finish is not None
    # the batch answerers: echo's has no trailer, NTP's writes its transmit time there
    assert capabilities(Echo()).handle_batch is not None and capabilities(Echo()).trailer is None
    assert capabilities(NtpResponder()).trailer is not None
    # answered in C from NTP's own rules (Batch.answer_ntp), unless each client has a budget
    assert capabilities(NtpResponder()).ntp_template is not None
    assert capabilities(NtpResponder(rate_limit=10)).ntp_template is None
    # DNS answers given before, given again in C (Batch.answer_kept), unless each client has a budget
    from udpkit.services.dns import DnsResponder

    assert capabilities(DnsResponder([], rate_limit=0)).kept_answers is not None
    assert capabilities(DnsResponder([])).kept_answers is None  # the default: 20 answers a second per client
    assert capabilities(DnsResponder([], rate_limit=0, cache=0)).kept_answers is None
    # without a rate limit, the time does not matter to DNS: no kernel receive time is asked for
    assert not capabilities(DnsResponder([], rate_limit=0)).uses_time and capabilities(DnsResponder([])).uses_time


class Full(io.RawIOBase):
    """A file that takes ``room`` bytes and then says the disk is full."""

    def __init__(self, room: int) -> None:
        self.room, self.data = room, bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:  # type: ignore[override]
        data = bytes(b)  # type: ignore[call-overload]
        if len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        self.data += data
        return len(data)


def test_a_recording_that_fails_stops_quietly_and_counts() -> None:
    stream = Full(room=200)
    sink = Sink(stream, "jsonl")  # type: ignore[arg-type]
    peer = Endpoint("192.0.2.1", 1000, socket.AF_INET)
    sink.write(0.0, peer, V4, b"a")
    sink.flush()
    for _ in range(5):
        sink.write(0.0, peer, V4, b"b" * 100)
    sink.flush()
    sink.write(0.0, peer, V4, b"c")
    assert sink.failure == "No space left on device"
    assert (sink.recorded, sink.not_recorded) == (1, 6)
    assert stream.data.count(b"\n") == 1 and stream.data.endswith(b"\n")


def test_programs_are_capped_by_default_and_max_children_raises_the_cap() -> None:
    from udpkit.addr import Endpoint
    from udpkit.listen.config import MAX_PROGRAMS, ListenerConfig
    from udpkit.listen.streams import StreamTarget

    endpoint = (Endpoint("127.0.0.1", 5000, 2),)
    program = StreamTarget(argv=("cat",))
    assert ListenerConfig.checked(endpoint, fork=True, stream=program).max_sessions == MAX_PROGRAMS
    assert ListenerConfig.checked(endpoint, fork=True, stream=program, max_sessions=200).max_sessions == 200
    assert ListenerConfig.checked(endpoint, stream=program, stop_after_session=True).max_sessions == 1
