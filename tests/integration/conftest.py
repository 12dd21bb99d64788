"""Fixtures for tests against the real kernel and real peer tools.

As root, every test gets a fresh network namespace (``ip netns add``), so the real ``ss`` and
``udpkit ss`` see exactly the sockets the test made and their outputs can be compared whole; the
namespace is deleted afterwards. As a normal user the same tests run in the host namespace and
compare only the lines of their own sockets.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import end_group, need_tool, start_group

HERE = Path(__file__).parent
_counter = itertools.count()


class Netns:
    """Where commands run: a namespace of our own (root) or the host's (``name is None``)."""

    def __init__(self, name: str | None) -> None:
        self.name = name

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv] if self.name else list(argv)

    def run(self, argv: Sequence[str], *, env: dict[str, str] | None = None, check: bool = False,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout,
                              env=env, check=check)

    def start(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        """A helper in its own process group (see ``stop``)."""
        return start_group(self.argv(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def udpkit(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.run([sys.executable, "-m", "udpkit", *args], env=env)

    def ss(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(["ss", *args], env=env)


@pytest.fixture
def ns() -> Iterator[Netns]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        yield Netns(None)
        return
    name = f"udpkit-t{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield Netns(name)
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def stop(proc: subprocess.Popen[str]) -> None:
    """End a process we started and its children (its process group, by its PID), and reap it."""
    end_group(proc)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _held_by_zoo(ns: Netns, *flags: str) -> Iterator[dict[str, object]]:
    """Run ``zoo.py FLAGS`` and yield what it printed (its sockets), with its pid; end it after."""
    need_tool("ss")
    proc = ns.start([sys.executable, str(HERE / "zoo.py"), *flags])
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"zoo.py {' '.join(flags)} did not start: {proc.stderr.read() if proc.stderr else ''}"
        info = json.loads(line)
        info["_pid"] = proc.pid
        yield info
    finally:
        stop(proc)


@pytest.fixture
def zoo(ns: Netns) -> Iterator[dict[str, object]]:
    """The sockets of ``zoo.py``, held by a child process; device-bound ones too when we are root."""
    yield from _held_by_zoo(ns, *(["--device"] if os.geteuid() == 0 else []))


@pytest.fixture
def tcp_zoo(ns: Netns) -> Iterator[dict[str, object]]:
    """``zoo.py --tcp``: TCP sockets in many states, held by a child process."""
    yield from _held_by_zoo(ns, "--tcp")


def wait_for(ns: Netns, args: Sequence[str], needle: str, timeout: float = 5.0) -> str:
    """Poll the real ``ss`` until its output contains ``needle`` (a socket we started is bound)."""
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = ns.ss(*args).stdout
        if needle in out:
            return out
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared in ss {' '.join(args)}:\n{out}")


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """``check()`` until it holds (a listener thread has counted what it sent), at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def free_port(family: int = socket.AF_INET6, host: str = "::") -> int:
    """A UDP port nobody holds right now (the wildcard IPv6 default: free on both families).

    Bound and released at once, so nothing listens there: a closed port to probe, or one to bind.
    """
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        if family == socket.AF_INET6 and host == "::":
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind((host, 0))
        return int(s.getsockname()[1])

