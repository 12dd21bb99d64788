"""socat's ``EXEC:``, ``SYSTEM:`` and ``TCP:`` as the second address, beside real socat: a program (or
a TCP connection) per session, datagrams to it, its output back as datagrams; the UDP-to-TCP bridge;
``pty`` refused by name; and the bound that keeps a flood of peers from becoming a flood of processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import end_group, start_group
from tests.integration.conftest import Netns, free_port, wait_for

pytestmark = pytest.mark.peer("socat")

CLIENT = """
import socket, sys
import time
port, count, payload, gap = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode(), float(sys.argv[4])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
replies = []
for s in socks:
    s.settimeout(3)
    s.sendto(payload, ("127.0.0.1", port))
    time.sleep(gap)
import select
got = {}
deadline = time.monotonic() + 3
while len(got) < count and time.monotonic() < deadline:
    ready, _, _ = select.select(socks, [], [], max(0.0, deadline - time.monotonic()))
    for s in ready:
        if s not in got:
            got[s] = s.recv(8192).decode()
print(repr([got.get(s) for s in socks]))
"""


def serve(ns: Netns, tool: str, *args: str) -> subprocess.Popen[str]:
    prefix = ["socat"] if tool == "socat" else [sys.executable, "-m", "udpkit", "socat"]
    return start_group(ns.argv([*prefix, *args]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def ask(ns: Netns, port: int, payload: str, count: int = 1, gap: float = 0.2) -> list[str | None]:
    """``count`` peers (one socket each) send ``payload``, ``gap`` seconds apart (socat's fork needs a
    moment between two new peers: a datagram arriving while it forks is lost), then read one reply."""
    result = subprocess.run(ns.argv([sys.executable, "-c", CLIENT, str(port), str(count), payload, str(gap)]),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return eval(result.stdout)  # type: ignore[no-any-return]  # our own repr of a list of str/None


@pytest.mark.parametrize("tool", ["socat", "udpkit"])
def test_exec_runs_a_program_per_session(ns: Netns, tool: str) -> None:
    """Two peers, two programs: each first answer names its own shell's pid, then the echo comes."""
    port = free_port()
    server = serve(ns, tool, f"UDP4-LISTEN:{port},fork", "SYSTEM:echo pid $$; exec sed -u s/a/A/g")
    try:
        wait_for(ns, ["-uln"], f":{port}")
        first = ask(ns, port, "banana\n", count=2)
        assert all(r is not None and r.startswith("pid ") for r in first), first
        assert first[0] != first[1]  # one program each
    finally:
        end_group(server)


@pytest.mark.parametrize("second", ["EXEC:sed -u s/l/L/g", "SYSTEM:sed -u 's/l/L/g'"])
def test_a_program_answers_the_same_through_udpkit_and_socat(ns: Netns, second: str) -> None:
    answers = {}
    for tool in ("socat", "udpkit"):
        port = free_port()
        server = serve(ns, tool, f"UDP4-LISTEN:{port},fork", second)
        try:
            wait_for(ns, ["-uln"], f":{port}")
            answers[tool] = ask(ns, port, "hello\n")
        finally:
            end_group(server)
    assert answers["udpkit"] == answers["socat"] == ["heLLo\n"]


def test_the_udp_to_tcp_bridge_beside_socat(ns: Netns) -> None:
    """``UDP4-LISTEN:P,fork TCP4:HOST:Q``: each datagram into a TCP connection of its peer's own, each
    read back as a datagram — against a real TCP service (socat with a line-buffered program)."""
    upstream_port = free_port(socket_family := 2, "127.0.0.1")
    upstream = start_group(ns.argv(["socat", f"TCP4-LISTEN:{upstream_port},fork,reuseaddr", "EXEC:sed -u s/b/B/g"]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while f":{upstream_port} " not in ns.ss("-tlnH").stdout:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        answers = {}
        for tool in ("socat", "udpkit"):
            port = free_port()
            server = serve(ns, tool, f"UDP4-LISTEN:{port},fork", f"TCP{4 if socket_family == 2 else 6}:127.0.0.1:{upstream_port}")
            try:
                wait_for(ns, ["-uln"], f":{port}")
                answers[tool] = ask(ns, port, "bridge\n", count=3)
            finally:
                end_group(server)
        assert answers["udpkit"] == answers["socat"] == ["Bridge\n"] * 3
    finally:
        end_group(upstream)


def test_a_refused_tcp_upstream_ends_the_session_not_the_service(ns: Netns) -> None:
    closed = free_port(2, "127.0.0.1")
    port = free_port()
    server = serve(ns, "udpkit", "-d", f"UDP4-LISTEN:{port},fork", f"TCP4:127.0.0.1:{closed}")
    try:
        wait_for(ns, ["-uln"], f":{port}")
        assert ask(ns, port, "anyone?\n") == [None]
        assert server.poll() is None
    finally:
        end_group(server)
    assert server.stderr is not None
    assert "session_error:ECONNREFUSED" in server.stderr.read()


@pytest.mark.parametrize("tool", ["socat", "udpkit"])
def test_without_fork_the_program_ending_ends_it(ns: Netns, tool: str) -> None:
    port = free_port()
    server = serve(ns, tool, f"UDP4-LISTEN:{port}", "SYSTEM:read line; echo got $line")
    try:
        wait_for(ns, ["-uln"], f":{port}")
        assert ask(ns, port, "one\n") == ["got one\n"]
        server.wait(timeout=10)
        assert server.returncode == 0
    finally:
        end_group(server)


def test_pty_and_other_program_options_are_refused_by_name(ns: Netns) -> None:
    for second, message in (("EXEC:cat,pty", "pty option is not supported"),
                            ("SYSTEM:cat,setsid", "unsupported socat option 'setsid'"),
                            ("EXEC:", "needs a command"), ("TCP4:127.0.0.1", "needs a host and a port")):
        result = ns.udpkit("socat", "UDP4-LISTEN:5999,fork", second)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1


def _children(pid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rpartition(")")[2].split()
            except OSError:
                continue
            count += int(fields[1]) == pid and fields[0] != "Z"
    return count


def test_a_flood_of_peers_runs_at_most_64_programs_and_a_client_is_still_served(ns: Netns) -> None:
    port = free_port()
    server = start_group(ns.argv([sys.executable, "-m", "udpkit", "socat", f"UDP4-LISTEN:{port},fork", "EXEC:cat"]),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(ns, ["-uln"], f":{port}")
        replies = ask(ns, port, "x\n", count=200, gap=0)
        assert _children(server.pid) <= 64
        assert sum(r == "x\n" for r in replies) >= 64  # the newest 64 sessions run; older ones made room
        assert server.poll() is None
        assert ask(ns, port, "still here\n") == ["still here\n"]
    finally:
        end_group(server)
