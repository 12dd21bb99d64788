"""The progress bar: drawn on a terminal's stderr once a scan runs past a second, never elsewhere."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time

from tests.integration.conftest import Netns, stop


def test_a_long_scan_draws_a_progress_bar_on_a_terminal_only(ns: Netns) -> None:
    silent = ns.start([sys.executable, "-m", "udpkit", "listen", "127.0.0.1:0"])
    try:
        assert silent.stderr is not None
        port = silent.stderr.readline().split("127.0.0.1:")[1].split()[0].rstrip(",")
        argv = ns.argv([sys.executable, "-m", "udpkit", "probe", "127.0.0.1", "-p", port,
                        "--timeout", "0.5", "--retries", "2"])  # silence only: 0.5 + 1 + 2 s
        main, child = pty.openpty()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=child,
                                env={**os.environ, "COLUMNS": "100", "TERM": "xterm"})
        os.close(child)
        seen = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break  # the terminal closed: the command ended
            if not chunk:
                break
            seen += chunk
        proc.wait(timeout=30)
        os.close(main)
        piped = ns.run(argv)
    finally:
        stop(silent)
    assert b"probing" in seen and b"0/1" in seen
    assert "probing" not in piped.stderr and piped.stderr == ""
