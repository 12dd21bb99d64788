"""``udpkit ss`` as a user meets it: help, version, JSON, and one clear line with exit 2 for bad input."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from udpkit.cli import main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ss", "--bogus"], "unknown option --bogus"),
        (["ss", "-q"], "unknown option -q"),
        (["ss", "-uln", "sport", "=", ":nonsense"], '"nonsense" does not look like a port'),
        (["ss", "-uln", "src 300.1.2.3"], "an inet prefix is expected"),
        (["ss", "-uln", "sport = :1 )"], "expected a condition"),
        (["ss", "-x"], "UDP and TCP sockets only, not Unix"),
        (["ss", "-w"], "UDP and TCP sockets only, not raw"),
        (["ss", "-f", "unix"], "inet and inet6 only"),
        (["ss", "-A", "raw"], "UDP and TCP sockets only"),
        (["ss", "-u", "state", "bogus"], "wrong state name: bogus"),
        (["ss", "-u", "state"], "needs a state name"),
        (["ss", "--backend", "magic"], "expected netlink, proc or auto"),
        (["ss", "-F"], "option -F needs a value"),
        (["ss", "-F", "/nonexistent/filter"], "-F /nonexistent/filter"),
        (["ss", "-K"], "killing sockets is not supported"),
        (["nosuchcommand"], "unknown command"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str) -> None:
    status, out, err = run(*argv)
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and message in err, err
    assert err.startswith("udpkit")


def test_help_and_version() -> None:
    status, out, _ = run("ss", "--help")
    assert status == 0 and "usage: udpkit ss" in out and "examples:" in out
    status, out, _ = run("--help")
    assert status == 0 and "ss" in out
    status, out, _ = run("--version")
    assert status == 0 and out.startswith("udpkit ")
    status, out, _ = run("ss", "-V")
    assert status == 0 and "udpkit" in out


@pytest.fixture
def own_socket() -> Iterator[int]:
    """A UDP socket of the test's own, so a listing is never empty by accident; its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def test_json_is_a_list_of_socket_objects(own_socket: int) -> None:
    status, out, err = run("ss", "-ua", "--json")
    assert status == 0, err
    doc = json.loads(out)
    assert isinstance(doc, list)
    assert any(sock["local"]["port"] == own_socket for sock in doc)
    # one object a line, as probe --json writes them (written in one piece by the C encoder: 50,000
    # sockets in 0.7 s, where json.dump with indent took 7.5 s)
    lines = out.splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == len(doc) + 2
    assert [json.loads(line.strip().rstrip(",")) for line in lines[1:-1]] == doc
    for sock in doc:
        assert {"netid", "state", "recv_q", "send_q", "local", "peer", "inode", "uid", "ipv6only", "drops",
                "processes"} <= set(sock)


def test_filter_from_a_file(tmp_path: object, own_socket: int) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "filter"
    path.write_text(f"# only ours\nsport = :{own_socket}\n")
    status, out, err = run("ss", "-uan", "-F", str(path))
    assert status == 0, err
    lines = out.splitlines()[1:]
    assert len(lines) == 1 and f":{own_socket} " in lines[0]


def test_no_traceback_from_a_real_process() -> None:
    proc = subprocess.run([sys.executable, "-m", "udpkit", "ss", "-uln", "sport", "~", ":1"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_ss_starts_lean() -> None:
    """``udpkit ss`` imports nothing heavy: no rich, dnspython, asyncio, argparse or dataclasses; and
    for a plain listing not even ``socket`` and ``enum`` (9 ms of a 27 ms start: it reads the family
    and state as numbers), ``functools`` or ``importlib``."""
    code = (
        "import sys, io\nfrom udpkit.cli import main\nmain(['ss', '-uln'], stdout=io.StringIO())\n"
        "main(['ss', '-tuln'], stdout=io.StringIO())\nprint(' '.join(sorted(sys.modules)))"
    )
    def modules(source: str) -> set[str]:
        return set(subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=30,
                                  check=True).stdout.split())

    baseline = modules("import sys; print(' '.join(sorted(sys.modules)))")  # what site-packages loads anyway
    loaded = modules(code) - baseline
    assert not loaded & {"rich", "dns", "asyncio", "argparse", "dataclasses", "inspect", "json", "ipaddress",
                         "socket", "enum", "selectors", "functools", "importlib", "warnings"}


def test_broken_pipe_is_not_an_error() -> None:
    proc = subprocess.run(f"{sys.executable} -m udpkit ss -uan | head -c 1", shell=True, capture_output=True,
                          text=True, timeout=30)
    assert "Traceback" not in proc.stderr and "Broken pipe" not in proc.stderr
