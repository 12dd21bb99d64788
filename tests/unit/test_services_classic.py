"""The classic services as pure responders: no sockets, the receive time passed in."""

from __future__ import annotations

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from udpkit.addr import Endpoint
from udpkit.services import RESPONDERS, responder
from udpkit.services.classic import RFC868_EPOCH_OFFSET, Time

PEER = Endpoint("127.0.0.1", 40000, socket.AF_INET)


@given(st.binary(max_size=2048))
def test_echo_returns_every_datagram_byte_for_byte_and_discard_nothing(data: bytes) -> None:
    assert responder("echo").handle(data, PEER, 0.0) == data
    assert responder("discard").handle(data, PEER, 0.0) is None


def test_time_counts_seconds_since_1900_and_wraps_in_2036() -> None:
    t = responder("time")
    assert struct.unpack("!I", t.handle(b"", PEER, 0.0))[0] == RFC868_EPOCH_OFFSET  # type: ignore[arg-type]
    wrap = 2**32 - RFC868_EPOCH_OFFSET  # 2036-02-07T06:28:16Z
    assert struct.unpack("!I", t.handle(b"", PEER, wrap + 5.9))[0] == 5  # type: ignore[arg-type]


def test_daytime_is_ascii_text_of_the_receive_time() -> None:
    assert responder("daytime").handle(b"ignored", PEER, 86400.0) == b"Friday, January 02, 1970 00:00:00-UTC\r\n"


def test_unknown_services_name_the_known_ones() -> None:
    import pytest

    from udpkit.errors import UsageError

    with pytest.raises(UsageError, match="daytime, discard, echo, ntp, time"):
        responder("chargen")
    assert set(RESPONDERS) == {"daytime", "discard", "echo", "ntp", "time"}


def test_the_classic_probes_recognise_their_own_answers_only() -> None:
    from udpkit.services.classic import DaytimeProbe, EchoProbe, TimeProbe

    echo, daytime, time_probe = EchoProbe(), DaytimeProbe(), TimeProbe()
    assert echo.classify(echo.build(0.0), 0.0) is not None and echo.classify(b"other", 0.0) is None
    assert echo.build(0.0) != echo.build(0.0)  # a fresh nonce per try
    assert EchoProbe().classify(echo.build(0.0), 0.0) is None  # another prober's line is not our echo
    assert daytime.classify(b"Friday, November 27, 2026 20:13:03-UTC\r\n", 0.0).detail["text"].startswith("Friday")
    assert daytime.classify(b"\x00\x01", 0.0) is None
    now = 1_795_810_393.0
    answer = Time().handle(b"", PEER, now + 5)
    assert time_probe.classify(answer, now).detail["offset_s"] == 5
    assert time_probe.classify(b"123", now) is None


def test_the_time_probe_unwraps_across_the_2036_era() -> None:
    from udpkit.services.classic import TimeProbe

    after_wrap = 2**32 - RFC868_EPOCH_OFFSET + 10  # UNIX time just after RFC 868's counter wraps
    answer = Time().handle(b"", PEER, after_wrap)
    assert TimeProbe().classify(answer, after_wrap - 20).detail["offset_s"] == 20


@given(st.binary(max_size=600), st.floats(0, 4e9))
def test_probe_classifiers_never_raise(data: bytes, now: float) -> None:
    from udpkit.services.classic import DaytimeProbe, EchoProbe, TimeProbe

    for probe in (EchoProbe(), DaytimeProbe(), TimeProbe()):
        probe.classify(data, now)
