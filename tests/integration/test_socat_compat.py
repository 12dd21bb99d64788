"""``udpkit socat`` with socat's own command lines: the tutorial's state in the kernel, sessions,
relays and echo, checked with the real ss, nc and socat."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import end_group, start_group
from tests.integration.conftest import Netns, free_port, stop, wait_for


@pytest.fixture
def udpkit_socat(ns: Netns) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        stop(proc)


def start(ns: Netns, procs: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    proc = ns.start([sys.executable, "-m", "udpkit", "socat", "-d", *args])
    procs.append(proc)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "listening on udp" in line, line + (proc.stderr.read() if proc.poll() is not None else "")
    return proc


@pytest.mark.root
@pytest.mark.peer("ss", "nc")
def test_the_tutorials_commands_leave_the_kernel_as_the_tutorial_shows(ns: Netns, udpkit_socat: list) -> None:  # type: ignore[type-arg]
    start(ns, udpkit_socat, "UDP4-LISTEN:123,fork", "/dev/null")
    start(ns, udpkit_socat, "UDP6-LISTEN:123,ipv6only=1,fork", "/dev/null")
    v4 = [line.split() for line in ns.ss("-4", "-uln").stdout.splitlines()]
    v6 = [line.split() for line in ns.ss("-6", "-uln").stdout.splitlines()]
    assert ["UNCONN", "0", "0", "0.0.0.0:123", "0.0.0.0:*"] in v4
    assert ["UNCONN", "0", "0", "[::]:123", "[::]:*"] in v6
    assert ns.udpkit("ss", "-6", "-ulne").stdout.count("v6only:1") == 1
    nc4 = ns.run(["nc", "-4", "-u", "-vz", "127.0.0.1", "123"])
    nc6 = ns.run(["nc", "-6", "-u", "-vz", "::1", "123"])
    assert "Connection to 127.0.0.1 123 port [udp/ntp] succeeded!" in nc4.stderr
    assert "Connection to ::1 123 port [udp/ntp] succeeded!" in nc6.stderr


@pytest.mark.peer("ss")
def test_fork_sessions_show_as_estab_and_end_after_the_idle_timeout(ns: Netns, udpkit_socat: list) -> None:  # type: ignore[type-arg]
    port = free_port()
    start(ns, udpkit_socat, "-T", "1", f"UDP4-LISTEN:{port},fork", "PIPE")
    code = ("import socket,sys\nfor i in range(3):\n s=socket.socket(); s=socket.socket(2,2); s.settimeout(3)\n"
            f" s.sendto(b'hi',('127.0.0.1',{port})); assert s.recv(9)==b'hi'\n s.close() if False else None\n"
            "import time; time.sleep(0.3)")
    client = ns.start([sys.executable, "-c", code])
    out = wait_for(ns, ["-uan", f"sport = :{port}"], "ESTAB")
    deadline = time.monotonic() + 5
    while out.count("ESTAB") < 3 and time.monotonic() < deadline:
        out = ns.ss("-uan", f"sport = :{port}").stdout
        time.sleep(0.05)
    assert out.count("ESTAB") == 3 and out.count("UNCONN") == 1
    client.wait(timeout=10)
    stop(client)
    deadline = time.monotonic() + 5
    while "ESTAB" in ns.ss("-uan", f"sport = :{port}").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "ESTAB" not in ns.ss("-uan", f"sport = :{port}").stdout


@pytest.mark.peer("socat")
def test_a_socat_style_proxy_relays_to_an_echo_upstream(ns: Netns, udpkit_socat: list) -> None:  # type: ignore[type-arg]
    upstream, proxy = free_port(), free_port()
    start(ns, udpkit_socat, f"UDP4-LISTEN:{upstream},fork", "PIPE")
    start(ns, udpkit_socat, f"UDP4-LISTEN:{proxy},fork", f"UDP4:127.0.0.1:{upstream}")
    result = ns.run(["socat", "-t", "2", "-", f"UDP4:127.0.0.1:{proxy}"], timeout=15)
    assert result.returncode == 0
    out = subprocess.run(ns.argv(["socat", "-t", "2", "-", f"UDP4:127.0.0.1:{proxy}"]), input="through the proxy\n",
                         capture_output=True, text=True, timeout=15)
    assert out.stdout == "through the proxy\n"


def test_range_refuses_others_and_file_target_records_raw(ns: Netns, udpkit_socat: list, tmp_path: Path) -> None:  # type: ignore[type-arg]
    port = free_port()
    path = tmp_path / "received.bin"
    start(ns, udpkit_socat, f"UDP6-LISTEN:{port},fork,range=[::1/128]", f"CREATE:{path}")
    code = (f"import socket\nfor host, fam in (('127.0.0.1', 2), ('::1', 10)):\n"
            f" s = socket.socket(fam, 2); s.sendto(('from ' + host).encode(), (host, {port}))")
    ns.run([sys.executable, "-c", code], check=True)
    deadline = time.monotonic() + 5
    while (not path.exists() or path.read_bytes() != b"from ::1") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.read_bytes() == b"from ::1"  # the IPv4 peer (::ffff:127.0.0.1) is outside the range


def test_without_fork_socat_serves_only_the_first_peer(ns: Netns, udpkit_socat: list) -> None:  # type: ignore[type-arg]
    port = free_port()
    start(ns, udpkit_socat, f"UDP4-LISTEN:{port}", "PIPE")
    code = (f"import socket\na = socket.socket(2, 2); a.settimeout(2); a.sendto(b'first', ('127.0.0.1', {port}))\n"
            f"assert a.recv(9) == b'first'\nb = socket.socket(2, 2); b.settimeout(1); b.connect(('127.0.0.1', {port}))\n"
            "b.send(b'second')\ntry:\n b.recv(9)\nexcept ConnectionRefusedError:\n print('refused')\n")
    result = ns.run([sys.executable, "-c", code], timeout=15)
    assert result.stdout.strip() == "refused", result.stderr


def test_bad_socat_command_lines_are_one_line_and_exit_2(ns: Netns) -> None:
    for args in (["UDP4-LISTEN:5,crlf", "/dev/null"], ["TCP:1.2.3.4:5", "-"], ["UDP4-LISTEN:5"], ["-x", "a", "b"]):
        result = ns.udpkit("socat", *args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith("udpkit socat:")




def test_stdio_prints_what_arrives_and_sends_what_is_typed(ns: Netns) -> None:
    """socat's ``UDP4-LISTEN:P STDIO``: the first peer's datagrams are printed, and what is written to
    standard input is sent back to that peer."""
    port = free_port()
    proc = subprocess.Popen(ns.argv([sys.executable, "-m", "udpkit", "socat", "-d", f"UDP4-LISTEN:{port}", "STDIO"]),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None and b"listening on udp" in proc.stderr.readline()
        code = (f"import socket\ns = socket.socket(2, 2); s.settimeout(5); s.sendto(b'ping\\n', ('127.0.0.1', {port}))\n"
                "print(s.recv(100).decode().strip())")
        client = ns.start([sys.executable, "-c", code])
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.read(5) == b"ping\n"
        proc.stdin.write(b"pong\n")
        proc.stdin.flush()
        out, err = client.communicate(timeout=10)
        assert out.strip() == "pong", err
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.terminate()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.peer("socat")
def test_the_client_form_talks_to_a_real_socat_echo_server(ns: Netns) -> None:
    port = free_port()
    server = ns.start(["socat", f"UDP4-LISTEN:{port},fork", "PIPE"])
    try:
        wait_for(ns, ["-uln"], f":{port}")
        result = subprocess.run(ns.argv([sys.executable, "-m", "udpkit", "socat", "-", f"UDP4:127.0.0.1:{port}"]),
                                input=b"round trip\n", capture_output=True, timeout=15)
        assert result.returncode == 0 and result.stdout == b"round trip\n", result.stderr
    finally:
        stop(server)


@pytest.mark.peer("socat")
def test_a_client_whose_peer_is_closed_says_connection_refused_and_exits_1_like_socat(ns: Netns) -> None:
    port = free_port()
    real = subprocess.run(ns.argv(["socat", "-", f"UDP4:127.0.0.1:{port}"]), input="hi\n", capture_output=True,
                          text=True, timeout=30)
    ours = subprocess.run(ns.argv([sys.executable, "-m", "udpkit", "socat", "-", f"UDP4:127.0.0.1:{port}"]),
                          input="hi\n", capture_output=True, text=True, timeout=30)
    assert real.returncode == ours.returncode == 1
    assert "Connection refused" in real.stderr and "Connection refused" in ours.stderr
    assert ours.stderr.count("\n") == 1


@pytest.mark.peer("socat")
def test_ports_by_service_name_and_a_bare_file_name_as_socat_takes_them(ns: Netns) -> None:
    """``UDP4:HOST:domain`` reaches port 53 in both; a bare file name is refused by both with socat's
    words (socat exits 1; udpkit, for a usage error, 2 — the deliberate difference)."""
    real = subprocess.run(ns.argv(["socat", "-u", "UDP-RECV:5000", "out.log"]), capture_output=True, text=True,
                          timeout=30)
    ours = subprocess.run(ns.argv([sys.executable, "-m", "udpkit", "socat", "-u", "UDP-RECV:5000", "out.log"]),
                          capture_output=True, text=True, timeout=30)
    assert 'unknown device/address "out.log"' in real.stderr and real.returncode == 1
    assert 'unknown device/address "out.log"' in ours.stderr and ours.returncode == 2
    real = subprocess.run(ns.argv(["socat", "-", "UDP4:127.0.0.1:domain"]), input="x", capture_output=True, text=True,
                          timeout=30)
    ours = subprocess.run(ns.argv([sys.executable, "-m", "udpkit", "socat", "-", "UDP4:127.0.0.1:domain"]),
                          input="x", capture_output=True, text=True, timeout=30)
    assert real.returncode == ours.returncode == 1  # nothing on 53 here: refused, so the name meant port 53
    assert "Connection refused" in ours.stderr


WHOAMI = ("import socket,sys\n"
          "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('127.0.0.1',int(sys.argv[1])))\n"
          "while True:\n"
          "    data,peer=s.recvfrom(65535); s.sendto(f'{peer[0]}:{peer[1]} {len(data)}\\n'.encode(),peer)\n")


@pytest.mark.peer("socat")
@pytest.mark.parametrize("args, stdin, expect", [
    (["-", "UDP4:127.0.0.1:{port},sp={sp}"], "hi", "127.0.0.1:{sp} 2\n"),                 # sourceport
    (["-", "UDP4:127.0.0.1:{port},bind=127.0.0.2:{sp}"], "hi", "127.0.0.2:{sp} 2\n"),       # bind
    (["-u", "STDIN", "UDP4:127.0.0.1:{port}"], "hi", ""),                                 # send only: no replies
    (["-T", "0.5", "-U", "-", "UDP4:127.0.0.1:{port}"], "hi", ""),                       # receive only: nothing sent
    (["-b", "3", "-", "UDP4:127.0.0.1:{port},sp={sp}"], "abcdef", "127127"),  # -b: 3-byte datagrams, replies cut to 3
])
def test_client_idioms_beside_real_socat(ns: Netns, args: list[str], stdin: str, expect: str) -> None:
    port = free_port()
    server = ns.start([sys.executable, "-c", WHOAMI, str(port)])
    try:
        time.sleep(0.3)
        outputs = []
        for cmd in (["socat", "-t", "0.3"], [sys.executable, "-m", "udpkit", "socat", "-t", "0.3"]):
            sp = free_port()
            argv = [a.format(port=port, sp=sp) for a in args]
            done = subprocess.run(ns.argv([*cmd, *argv]), input=stdin, capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, (cmd, done.stderr)
            outputs.append(done.stdout.replace(str(sp), "{sp}"))
    finally:
        stop(server)
    assert outputs[0] == outputs[1] == expect


@pytest.mark.peer("socat")
@pytest.mark.parametrize("options, before, after, mode", [
    (",creat,append", "old\n", "old\nhello\n", None),       # socat's logging idiom (man socat)
    (",creat,append", None, "hello\n", None),
    ("", "abcdefghij\n", "hello\nghij\n", None),            # OPEN without append: written from the start
    (",creat,trunc,perm=0600", "old\n", "hello\n", None),
    (",creat,perm=0600", None, "hello\n", 0o600),
])
def test_open_and_its_options_write_what_socat_writes(ns: Netns, tmp_path: Path, options: str, before: str | None,
                                                      after: str, mode: int | None) -> None:
    results = []
    for name, cmd in (("theirs", ["socat", "-u"]), ("ours", [sys.executable, "-m", "udpkit", "socat", "-u"])):
        path = tmp_path / name
        if before is not None:
            path.write_text(before)
        port = free_port()
        proc = ns.start([*cmd, f"UDP4-RECV:{port}", f"OPEN:{path}{options}"])
        try:
            time.sleep(0.4)
            subprocess.run(ns.argv([sys.executable, "-c", "import socket; socket.socket(socket.AF_INET,"
                                    f" socket.SOCK_DGRAM).sendto(b'hello\\n', ('127.0.0.1', {port}))"]),
                           check=True, timeout=30)
            time.sleep(0.4)
        finally:
            stop(proc)
        results.append((path.read_text(), path.stat().st_mode & 0o777 if mode is not None else None))
    assert results[0] == results[1] == (after, mode)


@pytest.mark.peer("socat")
@pytest.mark.parametrize("options, exists", [("", False), (",creat,excl", True)])
def test_open_refuses_what_socat_refuses(ns: Netns, tmp_path: Path, options: str, exists: bool) -> None:
    """OPEN: without creat needs the file; creat,excl needs it absent: both fail with status 1."""
    statuses = []
    for name, cmd in (("theirs", ["socat", "-u"]), ("ours", [sys.executable, "-m", "udpkit", "socat", "-u"])):
        path = tmp_path / name
        if exists:
            path.write_text("x")
        done = subprocess.run(ns.argv([*cmd, f"UDP4-RECV:{free_port()}", f"OPEN:{path}{options}"]),
                              capture_output=True, text=True, timeout=10)
        statuses.append(done.returncode)
    assert statuses == [1, 1]


def test_with_d_a_refused_client_shows_the_icmp_evidence(ns: Netns) -> None:
    """socat says only "Connection refused"; with -d udpkit also names the ICMP message and its sender."""
    port = free_port()
    for host, kind in (("127.0.0.1", "type 3 code 3"), ("[::1]", "type 1 code 4")):
        done = subprocess.run(ns.argv([sys.executable, "-m", "udpkit", "socat", "-d", "-", f"UDP:{host}:{port}"]),
                              input="hi\n", capture_output=True, text=True, timeout=30)
        assert done.returncode == 1
        assert f"ICMP port-unreachable ({kind}) from {host.strip('[]')}" in done.stderr
        assert "Connection refused" in done.stderr.splitlines()[-1]


def _dump_lines(text: str) -> list[str]:
    """A -v/-x dump with the time left out of each header (it differs between two runs)."""
    return [line[:2] + line[line.index("  length="):] if line[:2] in ("> ", "< ") else line
            for line in text.splitlines()]


@pytest.mark.peer("socat")
@pytest.mark.parametrize("flags", [["-v"], ["-x"], ["-x", "-v"]], ids=" ".join)
@pytest.mark.parametrize("order", ["stdio-first", "udp-first"])
def test_traffic_dumps_as_socat_writes_them(ns: Netns, tmp_path: Path, flags: list[str], order: str) -> None:
    """``-v``/``-x`` on a client and on an echo listener, each beside real socat on the same exchange:
    the same blocks, arrows, byte ranges, escapes and hex rows (the clock aside)."""
    payload = b"a\tb\\c\x01\r\nline two is longer than sixteen\n"
    dumps = {}
    for tool in ("socat", "udpkit"):
        port = free_port()
        prefix = ["socat"] if tool == "socat" else [sys.executable, "-m", "udpkit", "socat"]
        log = tmp_path / f"{tool}.err"
        with open(log, "wb") as err:
            server = start_group(ns.argv([*prefix, *flags, f"UDP4-LISTEN:{port},fork", "PIPE"]), stderr=err)
        try:
            wait_for(ns, ["-uln"], f":{port}")
            pair = ["-", f"UDP4:127.0.0.1:{port}"]
            if order == "udp-first":
                pair.reverse()
            client = subprocess.run(ns.argv([*prefix, *flags, "-t", "0.5", *pair]), input=payload,
                                    capture_output=True, timeout=15)
            assert client.stdout == payload, client.stderr
        finally:
            end_group(server)
        dumps[tool] = (_dump_lines(client.stderr.decode()), _dump_lines(log.read_text()))
    assert dumps["udpkit"] == dumps["socat"]


def test_a_listener_whose_standard_input_is_a_file_sends_it_and_keeps_serving(ns: Netns, tmp_path: Path) -> None:
    """socat's STDIO with standard input from a file (which epoll cannot watch): the file goes to the
    first peer and the listener goes on; with -u nothing is read at all."""
    port = free_port()
    source = tmp_path / "reply.txt"
    source.write_bytes(b"from a file\n")
    with open(source, "rb") as stdin:
        proc = subprocess.Popen(ns.argv([sys.executable, "-m", "udpkit", "socat", "-d", f"UDP4-LISTEN:{port},fork",
                                         "STDIO"]), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None and b"listening on udp" in proc.stderr.readline()
        code = (f"import socket\ns = socket.socket(2, 2); s.settimeout(5); s.sendto(b'hi\\n', ('127.0.0.1', {port}))\n"
                "print(s.recv(100).decode().strip())")
        out = subprocess.run(ns.argv([sys.executable, "-c", code]), capture_output=True, text=True, timeout=15)
        assert out.stdout.strip() == "from a file", out.stderr
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
