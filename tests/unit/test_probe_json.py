"""``udpkit probe --json/--jsonl`` lines, written by hand for speed, say exactly what the generic
encoder would."""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpkit.cli.probe import json_line, to_json
from udpkit.probe.machine import PortResult, Target
from udpkit.services.base import Evidence

V4 = Target("127.0.0.1", 123, socket.AF_INET)
V6 = Target("fe80::1%eth0", 53, socket.AF_INET6)


@pytest.mark.parametrize("result", [
    PortResult(V4, "closed", "port-unreachable", 1, 0.000068, None, (3, 3, "127.0.0.1")),
    PortResult(V4._replace(port=40000), "open|filtered", "no-response", 3),
    PortResult(V6, "filtered", "admin-prohibited", 2, 0.0123456, None, (1, 1, None)),
    PortResult(V6._replace(ip='we"ird\\name'), "closed", "port-unreachable", 1, None, None, (3, 3, 'x"y')),
    PortResult(V4, "open", "ntp", 1, 0.001, b"\x24" * 48, None, Evidence("ntp", {"stratum": 2, "refid": "GPS"})),
])
def test_a_line_is_what_json_dumps_would_say(result: PortResult) -> None:
    assert json.loads(json_line(result)) == to_json(result)


@settings(max_examples=300, deadline=None)
@given(port=st.integers(1, 65535), rtt=st.none() | st.floats(0, 100, allow_nan=False),
       state=st.sampled_from(["closed", "filtered", "open|filtered", "conflict"]), tries=st.integers(0, 100),
       icmp=st.none() | st.tuples(st.integers(0, 255), st.integers(0, 255), st.none() | st.text(max_size=8)))
def test_the_cached_pieces_give_the_encoders_exact_text(port: int, rtt: float | None, state: str, tries: int,
                                                       icmp: tuple[int, int, str | None] | None) -> None:
    for _ in range(2):  # made, then from the caches
        result = PortResult(V4._replace(port=port), state, "port-unreachable", tries, rtt, None, icmp)
        assert json_line(result) == json.dumps(to_json(result))
