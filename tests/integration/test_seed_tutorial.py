"""The tutorial's own commands: two real socat listeners on port 123, examined by ss and udpkit ss."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import Netns, stop, wait_for

pytestmark = [pytest.mark.root, pytest.mark.peer("socat", "ss")]


@pytest.fixture
def seed_listeners(ns: Netns) -> Iterator[Netns]:
    """``socat UDP4-LISTEN:123,fork /dev/null&`` and ``socat UDP6-LISTEN:123,ipv6only=1,fork /dev/null&``."""
    procs = [
        ns.start(["socat", "UDP4-LISTEN:123,fork", "/dev/null"]),
        ns.start(["socat", "UDP6-LISTEN:123,ipv6only=1,fork", "/dev/null"]),
    ]
    try:
        wait_for(ns, ["-uln"], "0.0.0.0:123")
        wait_for(ns, ["-uln"], "[::]:123")
        yield ns
    finally:
        for proc in procs:
            stop(proc)


@pytest.mark.parametrize("args", [["-4", "-uln"], ["-6", "-uln"], ["-uln"], ["-ulnp"], ["-ulnep"], ["-ul"]])
def test_seed_commands_agree(seed_listeners: Netns, args: list[str]) -> None:
    real = seed_listeners.ss(*args)
    ours = seed_listeners.udpkit("ss", *args)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == real.stdout


def test_seed_output_is_what_the_tutorial_shows(seed_listeners: Netns) -> None:
    v4 = seed_listeners.udpkit("ss", "-4", "-uln").stdout.splitlines()
    v6 = seed_listeners.udpkit("ss", "-6", "-uln").stdout.splitlines()
    # ss glues "Port" and "Process" when the port column is exactly as wide as its header; so do we.
    assert v4[0].split() == ["State", "Recv-Q", "Send-Q", "Local", "Address:Port", "Peer", "Address:PortProcess"]
    assert ["UNCONN", "0", "0", "0.0.0.0:123", "0.0.0.0:*"] in [line.split() for line in v4]
    assert ["UNCONN", "0", "0", "[::]:123", "[::]:*"] in [line.split() for line in v6]


def test_processes_name_socat(seed_listeners: Netns) -> None:
    out = seed_listeners.udpkit("ss", "-ulnp", "sport = :123").stdout
    assert out.count('users:(("socat",pid=') == 2
