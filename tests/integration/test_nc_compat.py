"""``udpkit nc`` beside Debian's netcat-openbsd: the same arguments, the same stderr, the same exit status."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import end_group
from tests.integration.conftest import Netns, free_port, stop

pytestmark = pytest.mark.peer("nc", "socat")


def both(ns: Netns, *args: str, stdin: str = "") -> tuple[tuple[str, int], tuple[str, int]]:
    """(stderr, status) of the real nc and of udpkit nc for the same command line."""
    real = subprocess.run(ns.argv(["nc", *args]), input=stdin, capture_output=True, text=True, timeout=30)
    ours = subprocess.run(ns.argv([sys.executable, "-m", "udpkit", "nc", *args]), input=stdin,
                          capture_output=True, text=True, timeout=30)
    return (real.stderr, real.returncode), (ours.stderr, ours.returncode)


@pytest.fixture
def socat_sink(ns: Netns) -> Iterator[int]:
    """The tutorial's two socat listeners (UDP4 and UDP6 v6-only, fork, to /dev/null) on one port."""
    port = free_port()
    procs = [ns.start(["socat", f"UDP4-LISTEN:{port},fork", "/dev/null"]),
             ns.start(["socat", f"UDP6-LISTEN:{port},ipv6only=1,fork", "/dev/null"])]
    time.sleep(0.3)
    try:
        yield port
    finally:
        for proc in procs:
            stop(proc)


@pytest.mark.root
@pytest.mark.parametrize("argv", [["-4", "-u", "-vz", "127.0.0.1", "123"], ["-6", "-u", "-vz", "::1", "123"]])
def test_the_seed_commands_print_what_nc_prints(ns: Netns, argv: list[str]) -> None:
    procs = [ns.start(["socat", "UDP4-LISTEN:123,fork", "/dev/null"]),
             ns.start(["socat", "UDP6-LISTEN:123,ipv6only=1,fork", "/dev/null"])]
    try:
        time.sleep(0.3)
        real, ours = both(ns, *argv)
    finally:
        for proc in procs:
            stop(proc)
    host = argv[3]
    assert real == ours == (f"Connection to {host} 123 port [udp/ntp] succeeded!\n", 0)


@pytest.mark.root
def test_the_seed_commands_on_a_closed_port(ns: Netns) -> None:
    for argv in (["-4", "-u", "-vz", "127.0.0.1", "123"], ["-6", "-u", "-vz", "::1", "123"]):
        real, ours = both(ns, *argv)
        assert real == ours == ("", 1)


@pytest.mark.parametrize(
    "args",
    [
        ["-u", "-vz", "-w", "1", "{v4}", "{open}"],
        ["-u", "-vz", "-w1", "-6", "{v6}", "{open}"],
        ["-u", "-vz", "{v4}", "{closed}"],
        ["-u", "-vz", "{v6}", "{closed}"],
        ["-u", "-z", "{v4}", "{closed}"],  # without -v nothing is tested: success
        ["-u", "-vz", "-w", "1", "{v4}", "{range}"],  # only the silent port succeeds; status of the last
        ["-u", "-vz", "-w", "1", "{v4}", "{closed}", "{open}"],
        ["-u", "-vz", "-w", "1", "{v4}", "{open}", "{closed}"],
        ["-u", "-vz", "-w", "1", "localhost", "{open}"],
        ["-u", "-vzn", "-w", "1", "{v4}", "{open}"],
        ["-4u", "-v", "-z", "-w", "0", "{v4}", "{open}"],
    ],
)
def test_scans_match_nc(ns: Netns, socat_sink: int, args: list[str]) -> None:
    closed = free_port()
    values = {"v4": "127.0.0.1", "v6": "::1", "open": str(socat_sink), "closed": str(closed),
              "range": f"{socat_sink - 2}-{socat_sink}"}
    argv = [a.format(**values) for a in args]
    # Once in a few thousand scans the real nc calls a closed port open: in CI it reported
    # socat_sink-2 "succeeded" in a fresh namespace where nothing listens there (no ICMP error
    # came back in time, or its own ephemeral source port was that port). A disagreement is run
    # again, once; a difference of ours shows up in both runs.
    for _attempt in range(2):
        real, ours = both(ns, *argv)
        if ours == real:
            break
    assert ours == real


def test_the_client_mode_sends_stdin_and_prints_replies_like_nc(ns: Netns) -> None:
    echo = ns.start([sys.executable, "-m", "udpkit", "listen", "127.0.0.1:0", "--respond", "echo"])
    try:
        assert echo.stderr is not None
        port = echo.stderr.readline().split("127.0.0.1:")[1].split()[0].rstrip(",")
        runs = [subprocess.run(ns.argv([*cmd, "-u", "-w", "1", "127.0.0.1", port]), input="hello\n",
                               capture_output=True, text=True, timeout=30)
                for cmd in (["nc"], [sys.executable, "-m", "udpkit", "nc"])]
    finally:
        stop(echo)
    assert [(r.stdout, r.returncode) for r in runs] == [("hello\n", 0)] * 2


def test_listen_mode_prints_the_first_peers_datagrams_like_nc(ns: Netns) -> None:
    outputs = []
    for cmd in (["nc"], [sys.executable, "-m", "udpkit", "nc"]):
        port = free_port()
        listener = ns.start([*cmd, "-u", "-l", "-v", "-n", "-w", "2", "127.0.0.1", str(port)])
        try:
            time.sleep(0.5)
            sender = subprocess.run(ns.argv(["nc", "-u", "-w", "1", "-p", str(port + 1 if port < 65535 else 1024),
                                             "127.0.0.1", str(port)]),
                                    input="ping\n", capture_output=True, text=True, timeout=30)
            assert sender.returncode == 0
            out, err = listener.communicate(timeout=10)
        finally:
            stop(listener)
        outputs.append((out, err.replace(str(port), "PORT").replace(str(port + 1), "SRC")))
    assert outputs[0] == outputs[1]
    assert outputs[1][0] == "ping\n" and "Bound on 127.0.0.1 PORT" in outputs[1][1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["-u", "-vz", "127.0.0.1", "0"], "port number too small: 0"),
        (["-u", "-vz", "127.0.0.1", "70000"], "port number too large: 70000"),
        (["-u", "-vz", "127.0.0.1"], "missing port number"),
        (["-vz", "127.0.0.1", "53"], "only UDP is supported"),
        (["-u", "-x", "proxy:1080", "127.0.0.1", "53"], "-x (proxy) is not supported"),
        (["-u", "-Q", "127.0.0.1", "53"], "unknown option -Q"),
    ],
)
def test_bad_command_lines_are_one_line_and_exit_2(ns: Netns, args: list[str], message: str) -> None:
    result = ns.udpkit("nc", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr and result.stderr.startswith("udpkit nc: ")


def test_an_unknown_host_is_nc_s_getaddrinfo_line_and_exit_1(ns: Netns) -> None:
    real, ours = both(ns, "-u", "-vz", "nosuchhost.invalid", "53")
    assert real[0].startswith('nc: getaddrinfo for host "nosuchhost.invalid" port 53: ')
    assert ours == ("udpkit " + real[0], 1) and real[1] == 1


def test_a_client_whose_peer_is_closed_ends_at_once_like_nc(ns: Netns) -> None:
    """``nc -u -w1 HOST <closed port>``: nc ends as soon as the port unreachable comes back, silently
    and with status 0 — not after the second of -w."""
    port = free_port()
    started = time.monotonic()
    real = subprocess.run(ns.argv(["nc", "-u", "-w1", "127.0.0.1", str(port)]), input="hi\n", capture_output=True,
                          text=True, timeout=30)
    theirs = time.monotonic() - started
    started = time.monotonic()
    ours = subprocess.run(ns.argv([sys.executable, "-m", "udpkit", "nc", "-u", "-w1", "127.0.0.1", str(port)]),
                          input="hi\n", capture_output=True, text=True, timeout=30)
    mine = time.monotonic() - started
    assert (ours.stdout, ours.stderr, ours.returncode) == (real.stdout, real.stderr, real.returncode)
    assert theirs < 0.9 and mine < 0.9  # both well under the -w second


def test_keep_listening_takes_every_senders_datagrams_like_nc(ns: Netns) -> None:
    """``nc -ulk``: every sender's datagrams, not only the first's (replies go nowhere: nc never
    connects to one peer)."""
    outputs = []
    for cmd in (["nc"], [sys.executable, "-m", "udpkit", "nc"]):
        port = free_port()
        listener = ns.start([*cmd, "-u", "-l", "-k", "-n", "127.0.0.1", str(port)])
        try:
            time.sleep(0.5)
            for n in range(3):  # three senders, each from its own port
                subprocess.run(ns.argv([sys.executable, "-c", "import socket,sys; socket.socket(socket.AF_INET,"
                                        f" socket.SOCK_DGRAM).sendto(b'from {n}\\n', ('127.0.0.1', {port}))"]),
                               check=True, timeout=30)
                time.sleep(0.1)
            time.sleep(0.3)
        finally:
            end_group(listener)  # -k listens until stopped, as nc does
            assert listener.stdout is not None
            out = listener.stdout.read()
            stop(listener)
        outputs.append(out)
    assert outputs[0] == outputs[1] == "from 0\nfrom 1\nfrom 2\n"


def test_listening_waits_for_its_first_sender_whatever_w_says_like_nc(ns: Netns) -> None:
    for cmd in (["nc"], [sys.executable, "-m", "udpkit", "nc"]):
        listener = ns.start([*cmd, "-u", "-l", "-n", "-w", "1", "127.0.0.1", str(free_port())])
        try:
            time.sleep(1.8)
            assert listener.poll() is None, cmd  # still waiting after -w's second
        finally:
            stop(listener)


def test_q_after_end_of_input_waits_and_prints_nothing_more_like_nc(ns: Netns) -> None:
    """``echo hi | nc -u -q1 HOST ECHO-PORT``: nc stops reading the network at the end of its input,
    so the echo that comes back after it is not printed; it quits a second later."""
    port = free_port()
    echo = ns.start([sys.executable, "-m", "udpkit", "listen", str(port), "--respond", "echo", "--rate-limit", "0"])
    try:
        time.sleep(0.3)
        real = subprocess.run(ns.argv(["nc", "-u", "-q1", "127.0.0.1", str(port)]), input="hi\n", capture_output=True,
                              text=True, timeout=30)
        ours = subprocess.run(ns.argv([sys.executable, "-m", "udpkit", "nc", "-u", "-q1", "127.0.0.1", str(port)]),
                              input="hi\n", capture_output=True, text=True, timeout=30)
    finally:
        stop(echo)
    assert (ours.stdout, ours.returncode) == (real.stdout, real.returncode) == ("", 0)
