"""``udpkit exporter`` as a user meets it at the shell: a config checked without serving, bad flags
and a port already taken — one line each, exit 2 or 1."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


def udpkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "udpkit", "exporter", *args], capture_output=True, text=True,
                          timeout=30)


def test_a_config_is_checked_without_serving(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text("modules:\n  ntp: {prober: ntp}\n  dns: {prober: dns}\n")
    result = udpkit("--config.file", str(good), "--config.check")
    assert result.returncode == 0 and "2 modules, valid" in result.stdout
    assert udpkit("--config.check").returncode == 0  # the built-in modules


def test_bad_flags_are_one_line_and_exit_2(tmp_path: Path) -> None:
    for args, message in ((["--web.listen-address", "nowhere"], "expected [HOST]:PORT"),
                          (["--max-sockets", "-1"], "--max-sockets"),
                          (["--config.file", str(tmp_path / "missing.yml")], "missing.yml"),
                          (["--bogus"], "unrecognized arguments")):
        result = udpkit(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1


def test_a_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = udpkit("--web.listen-address", f"127.0.0.1:{port}")
    assert result.returncode == 1 and "cannot listen on" in result.stderr and len(result.stderr.splitlines()) == 1
