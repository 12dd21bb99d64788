"""``udpkit tour`` driven as a user drives it: in a real terminal (a pty), to the end and
interrupted with Ctrl-C; either way nothing is left listening."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import time

from tests.integration.conftest import Netns


def run_in_terminal(argv: list[str], *, interrupt_after: str | None = None,
                    timeout: float = 60) -> tuple[str, int]:
    main, child = pty.openpty()
    def controlling_terminal() -> None:  # a session of its own, with the pty as its terminal, as a shell does
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        # Ctrl-C as in a shell's foreground job, even when these tests were started in the background
        # (which ignores SIGINT: Python then keeps it ignored, and the tour would never see the ^C)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, close_fds=True,
                            env={**os.environ, "TERM": "xterm", "COLUMNS": "120"},
                            preexec_fn=controlling_terminal)  # noqa: PLW1509
    os.close(child)
    seen = b""
    deadline = time.monotonic() + timeout
    interrupted = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        if interrupt_after and not interrupted and interrupt_after.encode() in seen:
            os.write(main, b"\x03")  # Ctrl-C, as typed: the terminal sends SIGINT to the command
            interrupted = True
        if proc.poll() is not None and not ready:
            break
    status = proc.wait(timeout=10)
    os.close(main)
    return seen.decode(errors="replace"), status


def port_of(text: str) -> int:
    match = re.search(r"ntp on udp 0\.0\.0\.0:(\d+)", text)
    assert match, text
    return int(match.group(1))


def nothing_listens_on(ns: Netns, port: int) -> bool:
    listing = ns.udpkit("ss", "-uanH", "sport", "=", f":{port}")
    return listing.stdout.strip() == ""


def test_the_whole_tour_in_a_terminal(ns: Netns) -> None:
    text, status = run_in_terminal(ns.argv([sys.executable, "-m", "udpkit", "tour"]))
    assert status == 0, text
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert "\x1b[" in text  # a terminal gets colour
    port = port_of(plain)
    for expected in ("1. Create", "2. Examine", "3. Test", "4. Clean up",
                     f"UNCONN 0      0            0.0.0.0:{port}", f"[::]:{port}",
                     f"Connection to 127.0.0.1 {port} port [udp/", f"Connection to ::1 {port} port [udp/",
                     "stratum=10", "ICMP type 3 code 3 from 127.0.0.1", "ICMP type 1 code 4 from ::1",
                     "open|filtered", 'users:(("'):
        assert expected in plain, expected
    if os.geteuid() == 0:
        assert port == 123  # as the tutorial does, when allowed
    assert nothing_listens_on(ns, port)


def test_ctrl_c_mid_tour_leaves_nothing_behind(ns: Netns) -> None:
    text, status = run_in_terminal(ns.argv([sys.executable, "-m", "udpkit", "tour"]), interrupt_after="2. Examine")
    assert status != 0 and "4. Clean up" not in text
    assert "Traceback" not in text
    assert nothing_listens_on(ns, port_of(text))


def test_json_and_no_color(ns: Netns) -> None:
    result = ns.udpkit("tour", "--json", "--port", "23456")
    doc = json.loads(result.stdout)
    assert [step["step"] for step in doc["steps"]] == [1, 2, 3, 4]
    test_step = doc["steps"][2]
    probes = [c for c in test_step["commands"] if c["argv"][1] == "probe"]
    assert any(c.get("icmp") for c in probes)
    text, status = run_in_terminal(ns.argv(["env", "NO_COLOR=1", sys.executable, "-m", "udpkit", "tour",
                                            "--port", "23457"]))
    assert status == 0 and "\x1b[" not in text


def test_each_command_the_tour_shows_is_followed_by_what_it_prints(ns: Netns) -> None:
    """The shown command lines are real: run again after the tour (its listeners gone, so only the
    commands whose answer does not depend on them), they print what the tour showed, round trips aside."""
    doc = json.loads(ns.udpkit("tour", "--json", "--port", "23458").stdout)
    commands = [c for step in doc["steps"] for c in step["commands"]]
    assert all(c["argv"][0] == "udpkit" for c in commands)
    closed = next(c for c in commands if c.get("icmp"))
    final = commands[-1]
    assert final["argv"][1] == "ss"
    for shown in (closed, final):
        again = ns.udpkit(*shown["argv"][1:])
        rtt = re.compile(r"\(\d+\.\d+ ms\)")
        assert (rtt.sub("(RTT)", again.stdout), again.returncode) == (rtt.sub("(RTT)", shown["output"]), shown["status"])
