"""The classic services as pure responders: no sockets, the receive time passed in."""

from __future__ import annotations

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from udpkit.addr import Endpoint
from udpkit.services import RESPONDERS, responder
from udpkit.services.classic import RFC868_EPOCH_OFFSET

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

    with pytest.raises(UsageError, match="daytime, discard, echo, time"):
        responder("chargen")
    assert set(RESPONDERS) == {"daytime", "discard", "echo", "time"}
