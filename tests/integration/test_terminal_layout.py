"""On a terminal ss spreads its columns over the screen width; udpkit ss does the same, line for line."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from tests.integration.conftest import Netns

pytestmark = pytest.mark.peer("ss")


def on_terminal(argv: list[str], columns: int) -> str:
    """Run ``argv`` with its stdout on a pseudo-terminal ``columns`` wide; return what it printed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(argv, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    os.close(master)
    return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.mark.parametrize("columns", [80, 150, 230])
@pytest.mark.parametrize("args", [["-uan"], ["-uanpem"], ["-ulnp"]], ids=" ".join)
def test_terminal_width_layout_matches_ss(ns: Netns, zoo: dict[str, object], args: list[str], columns: int) -> None:
    if ns.name is None:
        pytest.skip("needs a namespace of our own to compare whole screens")
    real = on_terminal(ns.argv(["ss", *args]), columns)
    ours = on_terminal(ns.argv([sys.executable, "-m", "udpkit", "ss", *args]), columns)
    assert ours == real
