"""``udpkit listen`` and the Listener against real clients on loopback: nc, socat and Python sockets."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import eventually
from udpkit.addr import Endpoint, parse_address
from udpkit.errors import PermissionDenied
from udpkit.listen import Listener, Sink
from udpkit.net import BindOptions, bind_udp
from udpkit.services.classic import Echo

V4 = Endpoint("127.0.0.1", 0, socket.AF_INET)
V6 = Endpoint("::1", 0, socket.AF_INET6)


@pytest.fixture
def echo() -> Iterator[Listener]:
    lst = Listener([V4, V6], respond="echo")
    lst.open()
    lst.start()
    try:
        yield lst
    finally:
        lst.stop()
        lst.join()
        lst.close()


def ask(ep: Endpoint, payload: bytes, timeout: float = 2.0) -> bytes:
    with socket.socket(ep.family, socket.SOCK_DGRAM) as c:
        c.settimeout(timeout)
        c.sendto(payload, (ep.ip, ep.port))
        return c.recv(70000)


@pytest.mark.parametrize("size", [0, 1, 1472, 65507])
def test_echo_answers_byte_for_byte_on_both_families(echo: Listener, size: int) -> None:
    payload = os.urandom(size)
    for ep in echo.bound:
        assert ask(ep, payload) == payload
    assert ask(echo.bound[1], b"x" * 65527) == b"x" * 65527  # the IPv6 maximum
    # the reply can arrive before the listener thread has counted its sendto
    assert eventually(lambda: echo.stats.datagrams_out == 3)
    assert echo.stats.datagrams_in == 3


@pytest.mark.peer("socat")
def test_a_real_socat_client_gets_its_echo(echo: Listener) -> None:
    for ep, addr in zip(echo.bound, ("UDP4:127.0.0.1", "UDP6:[::1]")):
        out = subprocess.run(["socat", "-t", "2", "-", f"{addr}:{ep.port}"], input=b"hello via socat\n",
                             capture_output=True, timeout=10)
        assert out.stdout == b"hello via socat\n"


@pytest.mark.peer("nc")
def test_discard_counts_what_a_real_nc_sends() -> None:
    with Listener([V4], respond="discard") as lst:
        lst.start()
        port = lst.bound[0].port
        for word in (b"one", b"two", b"three"):
            subprocess.run(["nc", "-u", "-q0", "-w1", "127.0.0.1", str(port)], input=word, timeout=10, check=True)
        assert eventually(lambda: lst.stats.datagrams_in >= 3)
        lst.stop()
        lst.join()
        assert (lst.stats.datagrams_in, lst.stats.bytes_in, lst.stats.datagrams_out) == (3, 11, 0)


def test_dual_stack_sees_ipv4_peers_as_mapped_addresses(tmp_path: Path) -> None:
    out = (tmp_path / "dgrams.jsonl").open("wb")
    lst = Listener([Endpoint("::", 0, socket.AF_INET6)], respond="echo", bind=BindOptions(v6only=False),
                   sink=Sink(out, "jsonl"))
    with lst:
        lst.start()
        assert ask(Endpoint("127.0.0.1", lst.bound[0].port, socket.AF_INET), b"v4") == b"v4"
    out.close()
    doc = json.loads((tmp_path / "dgrams.jsonl").read_text())
    assert doc["peer"]["address"] == "::ffff:127.0.0.1" and doc["local"]["address"] == "::ffff:127.0.0.1"


def test_v6only_refuses_ipv4() -> None:
    with Listener([Endpoint("::", 0, socket.AF_INET6)], respond="echo") as lst:
        lst.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(2)
            c.connect(("127.0.0.1", lst.bound[0].port))
            c.send(b"v4")
            with pytest.raises(ConnectionRefusedError):  # ICMP port unreachable: nobody on IPv4
                c.recv(100)


@pytest.mark.peer("ss")
def test_the_kernel_shows_the_listeners_as_ss_does() -> None:
    with Listener(list(parse_address("0"))) as lst:
        port = lst.bound[0].port
        assert lst.bound[1].port == port  # one port for both families
        out = subprocess.run(["ss", "-uln", f"sport = :{port}"], capture_output=True, text=True).stdout
        fields = [line.split()[:5] for line in out.splitlines()[1:]]
        assert fields == [["UNCONN", "0", "0", f"0.0.0.0:{port}", "0.0.0.0:*"], ["UNCONN", "0", "0", f"[::]:{port}", "[::]:*"]]


@pytest.mark.peer("tshark")
def test_the_pcap_opens_in_tshark_with_the_real_addresses(tmp_path: Path) -> None:
    path = tmp_path / "capture.pcap"
    with path.open("wb") as out, Listener([V4, V6], respond="discard", sink=Sink(out, "pcap")) as lst:
        lst.start()
        for ep in lst.bound:
            with socket.socket(ep.family, socket.SOCK_DGRAM) as c:
                c.bind((ep.ip, 0))
                c.sendto(b"capture me", (ep.ip, ep.port))
                src_port = c.getsockname()[1]
                seen = 1 if ep.family == socket.AF_INET else 2
                assert eventually(lambda: lst.stats.datagrams_in >= seen)
            ports = (src_port, ep.port)
        lst.stop()
        lst.join()
    fields = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "ip.src", "-e", "ipv6.src", "-e", "udp.srcport",
         "-e", "ip.dst", "-e", "ipv6.dst", "-e", "udp.dstport", "-e", "data.data", "-o", "udp.check_checksum:TRUE"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, HOME=str(tmp_path)),
    )
    assert fields.returncode == 0, fields.stderr
    rows = [line.split("\t") for line in fields.stdout.splitlines()]
    assert rows[0][0] == "127.0.0.1" and rows[0][3] == "127.0.0.1"
    assert rows[1][1] == "::1" and rows[1][4] == "::1" and rows[1][2:6:3] == [str(ports[0]), str(ports[1])]
    assert all(row[6] == b"capture me".hex() for row in rows)


def _as_nobody(work: Callable[[], str]) -> str:
    """What ``work`` returns, run in a forked child that dropped root for nobody (or here, when the
    tests do not run as root)."""
    if os.geteuid() != 0:
        return work()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, work().encode())
        except BaseException as exc:  # report whatever happened; the parent asserts on it
            os.write(write, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as fh:
        return fh.read().decode()


def test_binding_a_privileged_port_without_the_right_is_a_clear_refusal() -> None:
    """As a normal user (a forked child that dropped root, when the tests run as root), port 123 is
    refused with a suggestion."""
    def bind_123() -> str:
        try:
            bind_udp(Endpoint("127.0.0.1", 123, socket.AF_INET)).close()
        except PermissionDenied as exc:
            return str(exc)
        return "bound"

    message = _as_nobody(bind_123)
    assert "ports below 1024 need root or CAP_NET_BIND_SERVICE" in message and "use a port >= 1024" in message


def test_a_receive_buffer_past_rmem_max_is_given_as_root_and_the_cap_is_said_without() -> None:
    """The kernel caps SO_RCVBUF at net.core.rmem_max without a word (socat's rcvbuf= is cut
    so): as root --rcvbuf gets what it asks (SO_RCVBUFFORCE; real ss shows it), and without the
    right the listener says what it got, why, and the way out."""
    from udpkit.cli import main
    from udpkit.net.bind import receive_buffer, rmem_max

    cap = rmem_max()
    assert cap is not None
    asked = 2 * cap

    def unprivileged() -> str:
        err = io.StringIO()
        status = main(["listen", "127.0.0.1:0", "--rcvbuf", str(asked), "--duration", "0.1"], stderr=err)
        sock = bind_udp(Endpoint("127.0.0.1", 0, socket.AF_INET), BindOptions(rcvbuf=asked))
        with sock:
            return f"{status} {receive_buffer(sock)}\n{err.getvalue()}"

    said = _as_nobody(unprivileged)
    assert said.startswith(f"0 {cap}\n"), said
    assert f"--rcvbuf {asked} gave {cap} bytes: the kernel caps it at net.core.rmem_max ({cap})" in said
    assert "sysctl -w net.core.rmem_max" in said and "CAP_NET_ADMIN" in said
    if os.geteuid() != 0:
        return
    proc = start_cli("127.0.0.1:0", "--rcvbuf", str(asked), "--duration", "3")
    try:
        port = proc.first_line.rsplit(":", 1)[1].strip()  # type: ignore[attr-defined]
        if shutil.which("ss"):
            shown = subprocess.run(["ss", "-uamnH", f"sport = :{port}"], capture_output=True, text=True).stdout
            assert f"rb{2 * asked}," in shown, shown  # the kernel keeps (and ss shows) twice what was asked
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=10)
    assert "--rcvbuf" not in err  # given: nothing to say


def start_cli(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "udpkit", "listen", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith("udpkit listen:"), first
    proc.first_line = first  # type: ignore[attr-defined]
    return proc


def test_sigterm_prints_the_summary_and_leaves_a_complete_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    proc = start_cli("127.0.0.1:0", "--respond", "echo", "--out", str(path), "--format", "jsonl")
    port = int(proc.first_line.rsplit(":", 1)[1])  # type: ignore[attr-defined]
    for i in range(3):
        assert ask(Endpoint("127.0.0.1", port, socket.AF_INET), b"n%d" % i) == b"n%d" % i
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "3 datagrams (6 bytes) in, 3 (6 bytes) out, 3 peers, 0 dropped by the kernel" in err  # a new client socket each
    assert [json.loads(line)["data_hex"] for line in path.read_text().splitlines()] == [b"n0".hex(), b"n1".hex(), b"n2".hex()]


def test_count_stops_by_itself() -> None:
    proc = start_cli("127.0.0.1:0", "--count", "2")
    port = int(proc.first_line.rsplit(":", 1)[1])  # type: ignore[attr-defined]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        for _ in range(2):
            c.sendto(b"x", ("127.0.0.1", port))
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "2 datagrams (2 bytes) in" in err


def test_an_address_in_use_is_one_line_and_exit_1() -> None:
    with Listener([V4]) as lst:
        proc = subprocess.run([sys.executable, "-m", "udpkit", "listen", f"127.0.0.1:{lst.bound[0].port}"],
                              capture_output=True, text=True, timeout=10)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "address already in use" in proc.stderr


def test_allow_refuses_peers_outside_the_networks() -> None:
    import ipaddress

    with Listener([Endpoint("::", 0, socket.AF_INET6)], respond="echo", bind=BindOptions(v6only=False),
                  allow=[ipaddress.ip_network("::1/128")]) as lst:
        lst.start()
        port = lst.bound[0].port
        assert ask(Endpoint("::1", port, socket.AF_INET6), b"in") == b"in"
        with pytest.raises(TimeoutError):
            ask(Endpoint("127.0.0.1", port, socket.AF_INET), b"out", timeout=0.5)
        lst.stop()
        lst.join()
        assert lst.stats.refused == 1 and lst.stats.datagrams_in == 1


def test_max_peers_ends_the_least_recently_active_session_first() -> None:
    with Listener([V4], respond="echo", fork=True, max_peers=2) as lst:
        lst.start()
        port = lst.bound[0].port
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        try:
            for c in clients:
                c.settimeout(2)
                c.sendto(b"x", ("127.0.0.1", port))
                assert c.recv(9) == b"x"
            names = [c.getsockname()[1] for c in clients]
            assert [p.port for p in lst.session_peers()] == names[1:]  # the first one was evicted
            assert lst.stats.sessions_total == 3 and lst.stats.sessions_open == 2
        finally:
            for c in clients:
                c.close()


def test_relay_carries_requests_to_an_upstream_and_answers_back() -> None:
    with Listener([V4], respond="echo") as upstream:
        upstream.start()
        target = (socket.AF_INET, ("127.0.0.1", upstream.bound[0].port))
        with Listener([V4], relay=target, idle_timeout=5) as proxy:
            proxy.start()
            for i in range(3):
                assert ask(proxy.bound[0], b"req %d" % i) == b"req %d" % i
            assert proxy.stats.sessions_total == 3  # a client socket per ask(): a session each
            assert upstream.stats.peers == 3  # and each session has its own upstream socket


def test_nothing_the_kernel_delivered_is_lost(tmp_path: Path) -> None:
    """200,000 numbered datagrams: the file holds exactly what was received, and received plus the
    kernel's reported drops is what was sent."""
    total = 200_000
    path = tmp_path / "numbers.bin"
    with path.open("wb") as out, Listener([V4], respond="discard", sink=Sink(out, "raw"),
                                          bind=BindOptions(rcvbuf=4 << 20)) as lst:
        lst.start()
        dest = ("127.0.0.1", lst.bound[0].port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            for n in range(total):
                c.sendto(n.to_bytes(4, "big"), dest)
                if n % 2000 == 1999:
                    time.sleep(0.002)  # a rate the machine can take, with room for a burst or two to drop
            time.sleep(0.5)
            c.sendto(b"END!", dest)  # the last datagram brings the kernel's final drop count
        eventually(lambda: bool(lst.stats.datagrams_in and path.stat().st_size and path.read_bytes()[-4:] == b"END!"),
                   timeout=30)
        lst.stop()
        lst.join()
        stats = lst.stats
    data = path.read_bytes()
    assert data[-4:] == b"END!"
    numbers = [int.from_bytes(data[i : i + 4], "big") for i in range(0, len(data) - 4, 4)]
    assert len(numbers) == stats.datagrams_in - 1
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)  # in order, no duplicates
    assert len(numbers) + stats.kernel_drops == total


def test_no_datagram_is_handled_by_the_wrong_session() -> None:
    """A burst of new peers from another process: a new session socket can catch other peers'
    datagrams (before its connect(), or in flight while it connects); each must still be answered
    to its own sender by its own session, and every peer gets exactly one session."""
    # room for the burst; no reply budget (300 peers of one address in a burst is what is tested)
    with Listener([V4], respond=Echo(rate_limit=0), fork=True, bind=BindOptions(rcvbuf=1 << 21)) as lst:
        lst.start()
        code = (
            "import socket, sys\n"
            f"dest = ('127.0.0.1', {lst.bound[0].port})\n"
            "clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(300)]\n"
            "for n, c in enumerate(clients):\n    c.sendto(b'client %d' % n, dest)\n"
            "bad = 0\n"
            "for n, c in enumerate(clients):\n    c.settimeout(5)\n    bad += c.recv(64) != b'client %d' % n\n"
            "print(bad)\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert result.stdout.strip() == "0", result.stderr
        assert lst.stats.sessions_total == lst.stats.peers == 300


@pytest.mark.peer("ss")
def test_workers_share_the_port_and_add_up_their_statistics() -> None:
    proc = start_cli("127.0.0.1:0", "--respond", "echo", "--workers", "3")
    port = int(proc.first_line.rsplit(":", 1)[1])  # type: ignore[attr-defined]
    def owners() -> set[str]:
        out = subprocess.run(["ss", "-ulnp", f"sport = :{port}"], capture_output=True, text=True).stdout
        return {part.split(",")[0] for part in out.split("pid=")[1:]}

    assert eventually(lambda: len(owners()) == 3)  # three processes, each with a socket of its own on the port
    for i in range(30):
        assert ask(Endpoint("127.0.0.1", port, socket.AF_INET), b"w%d" % i) == b"w%d" % i
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0 and "30 datagrams (" in err and "(3 workers)" in err


@pytest.mark.root
def test_user_drops_root_after_binding_a_privileged_port() -> None:
    proc = start_cli("127.0.0.1:123", "--user", "nobody", "--duration", "5")
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert set(uids) == {"65534"}
        out = subprocess.run(["ss", "-uln", "sport = :123"], capture_output=True, text=True).stdout
        assert "127.0.0.1:123" in out
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


def test_a_reply_from_an_address_that_is_gone_is_an_error_name_not_an_exception() -> None:
    """Between receive and reply an IPv6 address can be removed: the reply fails, the server goes on."""
    from udpkit.net import send_reply

    with bind_udp(Endpoint("::1", 0, socket.AF_INET6)) as sock, bind_udp(Endpoint("::1", 0, socket.AF_INET6)) as peer:
        where = peer.getsockname()
        assert send_reply(sock, b"x", where, "2001:db8::99") in ("EINVAL", "EADDRNOTAVAIL")
        assert send_reply(sock, b"x", where, "::1") is None
        assert send_reply(sock, b"x", where, "not an address") == "EINVAL"
