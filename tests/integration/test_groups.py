"""Multicast and broadcast in every form, beside real socat: socat's group and broadcast options on
UDP-RECV, UDP-RECVFROM, UDP-DATAGRAM and UDP-SENDTO, and ``udpkit listen --join``/``--broadcast``.

Two hosts on a veth pair (``lan`` from the hostile-traffic tests). The receiving side runs real
socat or udpkit with the same address; the other side sends to the group or the broadcast address;
what arrives is compared, and so are the exit status and the message when the kernel refuses.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import end_group, need_tool, start_group
from tests.integration.test_hostile import CLIENT4, SERVER4, Host, Server, lan, wait_bound  # noqa: F401

pytestmark = pytest.mark.root
BROADCAST = "10.98.0.255"


def receive(host: Host, argv: list[str], port: int, send: list[list[str]], *, sender: Host) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (a receiver) on ``host``, run each of ``send`` on ``sender`` once it is bound, then
    end the receiver and return what it printed."""
    proc = start_group(host.argv(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_bound(host, port)
        for command in send:
            result = sender.run(*command, timeout=10)
            assert result.returncode == 0, result.stderr
        time.sleep(0.3)
    finally:
        end_group(proc)
    out, err = proc.communicate(timeout=5)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def udpkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "udpkit", *args]


def sender(text: str, address: str) -> list[str]:
    return ["sh", "-c", f"printf '{text}' | socat -u - '{address}'"]


@pytest.fixture
def pair(lan: tuple[Host, Host]) -> Iterator[tuple[Host, Host]]:
    need_tool("socat")
    yield lan


@pytest.mark.parametrize("tool", ["socat", "udpkit"])
def test_socat_receives_an_ipv4_group_it_joined(pair: tuple[Host, Host], tool: str) -> None:
    server, client = pair
    port = 5101 if tool == "socat" else 5102
    address = f"UDP4-RECV:{port},ip-add-membership=239.1.1.1:{server.iface}"
    argv = ["socat", "-u", address, "-"] if tool == "socat" else udpkit("socat", "-u", address, "-")
    got = receive(server, argv, port, [sender("hello group\\n", f"UDP4-DATAGRAM:239.1.1.1:{port}")], sender=client)
    assert got.stdout == "hello group\n", got.stderr


def test_udpkit_socat_and_socat_join_the_same_ways(pair: tuple[Host, Host]) -> None:
    """The interface by address, by name after an address, and IPv6 — each received the same by both
    tools. (Source-specific joins are udpkit's only: Debian's socat 1.7.4.4 answers
    ``unknown option "ip-add-source-membership"``; see the next test.)"""
    server, client = pair
    forms = [
        (f"UDP4-RECV:{{port}},ip-add-membership=239.1.1.2:{SERVER4}", "UDP4-DATAGRAM:239.1.1.2:{port}"),
        (f"UDP4-RECV:{{port}},ip-add-membership=239.1.1.3:{SERVER4}:{server.iface}", "UDP4-DATAGRAM:239.1.1.3:{port}"),
        (f"UDP6-RECV:{{port}},ipv6-join-group=[ff02::1234]:{server.iface}",
         f"UDP6-DATAGRAM:[ff02::1234%{client.iface}]:{{port}}"),
    ]
    for n, (receiving, sending) in enumerate(forms):
        outputs = []
        for tool in ("socat", "udpkit"):
            port = 5200 + 2 * n + (tool == "udpkit")
            argv = ["socat", "-u", receiving.format(port=port), "-"]
            if tool == "udpkit":
                argv = udpkit("socat", "-u", receiving.format(port=port), "-")
            got = receive(server, argv, port, [sender("form\\n", sending.format(port=port))], sender=client)
            outputs.append(got.stdout)
        assert outputs == ["form\n", "form\n"], (receiving, outputs)


def test_a_source_specific_join_hears_its_source_only(pair: tuple[Host, Host]) -> None:
    server, client = pair
    client.run("ip", "addr", "add", "10.98.0.3/24", "dev", client.iface)
    port = 5301
    got = receive(server, udpkit("socat", "-u", f"UDP4-RECV:{port},ip-add-source-membership=232.1.1.2:{SERVER4}:10.98.0.3",
                                 "-"), port,
                  [sender("not me\\n", f"UDP4-DATAGRAM:232.1.1.2:{port},bind={CLIENT4}"),
                   sender("me\\n", f"UDP4-DATAGRAM:232.1.1.2:{port},bind=10.98.0.3")], sender=client)
    assert got.stdout == "me\n"


@pytest.mark.parametrize("tool", ["socat", "udpkit"])
def test_udpkit_sends_to_a_group_as_socat_does(pair: tuple[Host, Host], tool: str) -> None:
    """udpkit's UDP-DATAGRAM with ip-multicast-if (by address) and a TTL, received by real socat."""
    server, client = pair
    port = 5401 if tool == "socat" else 5402
    send = f"UDP4-DATAGRAM:239.1.1.9:{port},ip-multicast-if={CLIENT4},ip-multicast-ttl=1,ip-multicast-loop=0"
    command = ["sh", "-c", f"printf 'out\\n' | socat -u - '{send}'"] if tool == "socat" else \
        ["sh", "-c", f"printf 'out\\n' | {sys.executable} -m udpkit socat -u - '{send}'"]
    got = receive(server, ["socat", "-u", f"UDP4-RECV:{port},ip-add-membership=239.1.1.9:{server.iface}", "-"], port,
                  [command], sender=client)
    assert got.stdout == "out\n"


def test_broadcast_needs_the_option_as_socat_says(pair: tuple[Host, Host]) -> None:
    server, client = pair
    port = 5501
    real = client.run("sh", "-c", f"printf x | socat -u - UDP4-DATAGRAM:{BROADCAST}:{port}")
    ours = client.run("sh", "-c", f"printf x | {sys.executable} -m udpkit socat -u - UDP4-DATAGRAM:{BROADCAST}:{port}")
    assert real.returncode == ours.returncode == 1
    assert "Permission denied" in real.stderr
    assert "Permission denied" in ours.stderr and "broadcast option" in ours.stderr and "SO_BROADCAST" in ours.stderr
    assert len(ours.stderr.splitlines()) == 1
    got = receive(server, ["socat", "-u", f"UDP4-RECV:{port}", "-"], port,
                  [["sh", "-c", f"printf 'all\\n' | {sys.executable} -m udpkit socat -u - "
                                f"UDP4-DATAGRAM:{BROADCAST}:{port},broadcast"]], sender=client)
    assert got.stdout == "all\n"


@pytest.mark.parametrize("client_tool", ["socat", "udpkit"])
def test_udp_datagram_hears_the_answers_to_a_broadcast(pair: tuple[Host, Host], client_tool: str) -> None:
    """A broadcast question answered from the server's own address: UDP-DATAGRAM (unconnected)
    takes the answer, for socat and for udpkit alike."""
    server_host, client = pair
    port = 5601
    server = Server(server_host, "listen", str(port), "--respond", "echo", "--broadcast")
    try:
        wait_bound(server_host, port, 2)
        tool = "socat" if client_tool == "socat" else f"{sys.executable} -m udpkit socat"
        result = client.run("sh", "-c", f"printf 'who\\n' | {tool} -t 1 - UDP4-DATAGRAM:{BROADCAST}:{port},broadcast")
        assert (result.returncode, result.stdout) == (0, "who\n"), result.stderr
    finally:
        server.stop()


def test_listen_joins_groups_and_answers_from_its_own_address(pair: tuple[Host, Host]) -> None:
    server_host, client = pair
    port = 5701
    server = Server(server_host, "listen", str(port), "--respond", "echo", "--join", f"239.1.1.1%{server_host.iface}",
                    "--join", f"ff02::1234%{server_host.iface}")
    try:
        wait_bound(server_host, port, 2)
        v4 = client.peer("group", "239.1.1.1", str(port), "--iface", client.iface, "--count", "1")
        v6 = client.peer("group", "ff02::1234", str(port), "--iface", client.iface, "--count", "1")
        assert v4 == {"replies": 1, "from": [SERVER4]}  # never from the group address
        assert v6["replies"] == 1 and str(v6["from"][0]).startswith("fe80::")  # type: ignore[index]
        # a group it did not join is not received; a broadcast is received, not answered
        assert client.peer("group", "239.1.1.7", str(port), "--iface", client.iface, "--count", "1")["replies"] == 0
        assert client.peer("group", BROADCAST, str(port), "--iface", client.iface, "--broadcast",
                           "--count", "1")["replies"] == 0
        assert server.alive()
    finally:
        summary = server.stop()
    assert "joined 239.1.1.1%" in summary and "not_unicast 3" in summary, summary


def test_listen_joins_a_source_specific_group(pair: tuple[Host, Host]) -> None:
    server_host, client = pair
    client.run("ip", "addr", "add", "10.98.0.3/24", "dev", client.iface)
    port = 5702
    server = Server(server_host, "listen", str(port), "--respond", "echo",
                    "--join", f"{CLIENT4}@232.1.1.1%{server_host.iface}")
    try:
        wait_bound(server_host, port, 2)
        assert client.peer("group", "232.1.1.1", str(port), "--iface", client.iface, "--count", "1",
                           "--source", CLIENT4)["replies"] == 1
        assert client.peer("group", "232.1.1.1", str(port), "--iface", client.iface, "--count", "1",
                           "--source", "10.98.0.3")["replies"] == 0
    finally:
        server.stop()


def test_bad_joins_are_one_line_and_exit_2() -> None:
    for args, message in ((["--join", "10.0.0.1"], "not a multicast address"),
                          (["--join", "239.1.1.1%nosuchif9"], "no interface named"),
                          (["127.0.0.1:5000", "--join", "239.1.1.1"], "nothing listens on an IPv4 wildcard")):
        result = subprocess.run(udpkit("listen", *args), capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1
