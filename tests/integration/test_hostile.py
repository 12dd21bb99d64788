"""What the network sends, and a listener that stays up through it: two hosts (network namespaces
on a veth pair), udpkit serving on one, the other sending multicast and broadcast datagrams,
datagrams from a link-local address, ICMP errors for its replies, thousands of source ports,
forged datagrams from a raw socket. Every test checks that the process lives and that a
legitimate client is still served afterwards."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import end_group, need_root, need_tool, start_group

HERE = Path(__file__).parent
PEER = str(HERE / "hostile_peer.py")
ZONE = str(HERE.parent / "data" / "example.zone")
SERVER4, CLIENT4, SERVER6, CLIENT6 = "10.98.0.1", "10.98.0.2", "fd98::1", "fd98::2"
SERVER_LL, CLIENT_LL = "fe80::98:1", "fe80::98:2"
PORT = 7300


class Host:
    def __init__(self, name: str, iface: str) -> None:
        self.name, self.iface = name, iface

    def argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(list(argv)), capture_output=True, text=True, timeout=timeout)

    def peer(self, *argv: str, timeout: float = 60) -> dict[str, object]:
        result = self.run(sys.executable, PEER, *argv, timeout=timeout)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.splitlines()[-1])  # type: ignore[no-any-return]


class Server:
    """A udpkit command in the server namespace, in its own process group, ended by its PID."""

    def __init__(self, host: Host, *argv: str, shell_prefix: str = "") -> None:
        command = [sys.executable, "-m", "udpkit", *argv]
        if shell_prefix:
            command = ["sh", "-c", f"{shell_prefix} exec \"$@\"", "sh", *command]
        self.proc = start_group(host.argv(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr = self.stdout = ""
        self._collected = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> str:
        """SIGTERM, then its standard output and error (the summary) kept; safe to call twice."""
        if not self._collected:
            self._collected = True
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.stdout, self.stderr = self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                end_group(self.proc)
                self.stdout, self.stderr = self.proc.communicate(timeout=5)
        return self.stderr

    def pid(self) -> int:
        """The udpkit process itself (``ip netns exec`` execs it, so it is the same PID)."""
        return self.proc.pid


def _sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)


@pytest.fixture
def lan() -> Iterator[tuple[Host, Host]]:
    """Two hosts on one link: addresses v4, v6 and link-local, no duplicate-address wait."""
    need_root()
    need_tool("ip", "nft")
    tag = f"{os.getpid() % 100000}"
    server, client = Host(f"udpkit-hs{tag}", f"vs{tag}"), Host(f"udpkit-hc{tag}", f"vc{tag}")
    for host in (server, client):
        _sh("ip", "netns", "add", host.name)
        for key in ("all", "default"):
            _sh("ip", "netns", "exec", host.name, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0")
    try:
        _sh("ip", "link", "add", server.iface, "netns", server.name, "type", "veth", "peer", "name", client.iface,
            "netns", client.name)
        for host, v4, v6, ll in ((server, SERVER4, SERVER6, SERVER_LL), (client, CLIENT4, CLIENT6, CLIENT_LL)):
            ns = ("ip", "-n", host.name)
            _sh(*ns, "link", "set", "lo", "up")
            _sh(*ns, "addr", "add", f"{v4}/24", "brd", "+", "dev", host.iface)
            _sh(*ns, "addr", "add", f"{v6}/64", "dev", host.iface, "nodad")
            _sh(*ns, "addr", "add", f"{ll}/64", "dev", host.iface, "nodad")
            _sh(*ns, "link", "set", host.iface, "up")
            _sh(*ns, "route", "add", "224.0.0.0/4", "dev", host.iface)
        # spoofed sources (198.18.0.0/15) are answered through the client, as through a router
        _sh("ip", "-n", server.name, "route", "add", "default", "via", CLIENT4)
        yield server, client
    finally:
        for host in (server, client):
            subprocess.run(["ip", "netns", "delete", host.name], capture_output=True)


def wait_bound(host: Host, port: int, count: int = 1) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listing = host.run("ss", "-uanH", f"sport = :{port}").stdout
        if len(listing.splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing bound on {port} in {host.name}")


def legit(client: Host, host: str = SERVER4, port: int = PORT, payload: bytes = b"udpkit legit") -> bytes | None:
    reply = client.peer("ask", host, str(port), "--payload", payload.hex())["reply"]
    return None if reply is None else bytes.fromhex(str(reply))


NTP_REQUEST = b"\x23" + bytes(47)
SERVICES = {
    "echo": (["--respond", "echo"], b"udpkit legit"),
    "echo-reflect": (["--respond", "echo", "--rate-limit", "0"], b"udpkit legit"),  # echoed in C (Batch.reflect)
    "daytime": (["--respond", "daytime"], b"\n"),
    "time": (["--respond", "time"], b""),
    "ntp": (["--respond", "ntp"], NTP_REQUEST),
    "dns": (["--respond", "dns", "--zone", ZONE], bytes.fromhex("12340100000100000000000003777777076578616d706c650474657374000001")
            + b"\x00\x01"),
}
SERVICES["dns-kept"] = (SERVICES["dns"][0] + ["--rate-limit", "0"], SERVICES["dns"][1])  # answered again in C


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_datagrams_to_groups_and_broadcasts_are_not_answered_and_stop_nothing(lan: tuple[Host, Host],
                                                                              service: str) -> None:
    server_host, client = lan
    flags, request = SERVICES[service]
    server = Server(server_host, "listen", str(PORT), *flags)
    try:
        wait_bound(server_host, PORT, 2)
        for host in (SERVER4, SERVER6):  # first answered to unicast (a DNS answer is then kept)
            assert legit(client, host, payload=request), f"{service} does not answer on {host}"
        same = ["--payload", request.hex()]  # the very request, now to groups and broadcasts
        for group in ("224.0.0.1", "ff02::1"):
            assert client.peer("group", group, str(PORT), "--iface", client.iface, *same)["replies"] == 0
        assert client.peer("group", "10.98.0.255", str(PORT), "--iface", client.iface, "--broadcast",
                           *same)["replies"] == 0
        assert client.peer("group", "255.255.255.255", str(PORT), "--iface", client.iface, "--broadcast",
                           *same)["replies"] == 0
        assert server.alive()
        for host in (SERVER4, SERVER6):
            assert legit(client, host, payload=request), f"{service} no longer answers on {host}"
    finally:
        summary = server.stop()
    assert "not_unicast 12" in summary, summary


@pytest.mark.parametrize("service", ["echo", "echo-reflect", "dns-kept"])
def test_one_wildcard_socket_in_the_blocking_loop_leaves_groups_and_broadcasts_unanswered(
        lan: tuple[Host, Host], service: str) -> None:
    """A lone 0.0.0.0 socket whose service needs no receive time waits without epoll (and polls):
    the same rules there — a group or broadcast datagram counted, never answered, the unicast
    client still served, from the address it asked."""
    server_host, client = lan
    flags, request = SERVICES[service]
    server = Server(server_host, "listen", f"0.0.0.0:{PORT}", *flags)
    try:
        wait_bound(server_host, PORT)
        assert legit(client, SERVER4, payload=request), f"{service} does not answer on 0.0.0.0"
        same = ["--payload", request.hex()]
        assert client.peer("group", "224.0.0.1", str(PORT), "--iface", client.iface, *same)["replies"] == 0
        for broadcast in ("10.98.0.255", "255.255.255.255"):
            assert client.peer("group", broadcast, str(PORT), "--iface", client.iface, "--broadcast",
                               *same)["replies"] == 0
        assert server.alive()
        assert legit(client, SERVER4, payload=request), f"{service} no longer answers on 0.0.0.0"
    finally:
        summary = server.stop()
    assert "not_unicast 9" in summary, summary


def test_answering_groups_is_a_choice(lan: tuple[Host, Host]) -> None:
    server_host, client = lan
    server = Server(server_host, "listen", str(PORT), "--respond", "echo", "--answer-groups")
    try:
        wait_bound(server_host, PORT, 2)
        assert client.peer("group", "224.0.0.1", str(PORT), "--iface", client.iface, "--count", "1")["replies"] == 1
        assert client.peer("group", "ff02::1", str(PORT), "--iface", client.iface, "--count", "1")["replies"] == 1
        assert server.alive()
    finally:
        summary = server.stop()
    assert "not_unicast 2" in summary and "2 (" in summary, summary


@pytest.mark.parametrize("argv", [
    ["listen", f"[::]:{PORT}", "--respond", "echo"],
    ["listen", f"[::]:{PORT}", "--respond", "echo", "--rate-limit", "0"],  # echoed in C (Batch.reflect)
    ["listen", f"[::]:{PORT}", "--respond", "echo", "--fork"],
    ["listen", str(PORT), "--respond", "echo", "--rate-limit", "0"],  # a socket a family, a thread each
    ["socat", f"UDP6-LISTEN:{PORT},fork", "PIPE"],
    ["socat", f"UDP6-RECVFROM:{PORT},fork", "PIPE"],
], ids=["listen", "listen-reflect", "listen-fork", "listen-both-families-reflect", "socat-listen-fork",
        "socat-recvfrom-fork"])
def test_a_link_local_peer_is_answered(lan: tuple[Host, Host], argv: list[str]) -> None:
    server_host, client = lan
    server = Server(server_host, *argv)
    try:
        wait_bound(server_host, PORT)
        target = f"{SERVER_LL}%{client.iface}"
        reply = client.peer("ask", target, str(PORT), "--source", f"{CLIENT_LL}%{client.iface}")
        assert reply["reply"] == b"udpkit legit".hex() and str(reply["from"]).startswith(SERVER_LL)
        assert server.alive() and legit(client, SERVER6) == b"udpkit legit"
    finally:
        server.stop()


def test_a_link_local_ntp_client_is_answered_from_its_link_local_destination(lan: tuple[Host, Host]) -> None:
    """Answered in C (Batch.answer_ntp) on a wildcard socket: the reply leaves from the link-local
    address the request came to, on the client's interface (the scope kept)."""
    server_host, client = lan
    server = Server(server_host, "listen", f"[::]:{PORT}", "--respond", "ntp")
    try:
        wait_bound(server_host, PORT)
        reply = client.peer("ask", f"{SERVER_LL}%{client.iface}", str(PORT), "--payload", NTP_REQUEST.hex(),
                            "--source", f"{CLIENT_LL}%{client.iface}")
        answer = bytes.fromhex(str(reply["reply"]))
        assert len(answer) == 48 and answer[0] & 7 == 4 and str(reply["from"]).startswith(SERVER_LL)
        assert server.alive() and legit(client, SERVER6, payload=NTP_REQUEST) is not None
    finally:
        summary = server.stop()
    assert "2 datagrams" in summary, summary


def test_a_single_peer_listener_takes_a_link_local_peer(lan: tuple[Host, Host]) -> None:
    """socat's UDP6-LISTEN without fork connects to its first peer: with the whole address."""
    server_host, client = lan
    server = Server(server_host, "socat", f"UDP6-LISTEN:{PORT}", "STDOUT")
    try:
        wait_bound(server_host, PORT)
        client.peer("ask", f"{SERVER_LL}%{client.iface}", str(PORT), "--source", f"{CLIENT_LL}%{client.iface}",
                    "--port", "40002", "--timeout", "0.3")
        listing = server_host.run("ss", "-uanH", f"sport = :{PORT}").stdout
        assert server.alive() and "ESTAB" in listing and CLIENT_LL in listing, listing
    finally:
        server.stop()
    assert server.stdout == "udpkit legit", server.stdout


def recorded_pairs(fmt: str, blob: bytes) -> list[tuple[str, str]]:
    """(sender, destination) of each record of a jsonl or pcap recording, as its text says them."""
    if fmt == "jsonl":
        return [(line["peer"]["address"], line["local"]["address"]) for line in map(json.loads, blob.splitlines())]
    pairs, at = [], 24
    while at < len(blob):
        size = int.from_bytes(blob[at + 8 : at + 12], "little")
        packet = blob[at + 16 : at + 16 + size]
        family, src, dst = ((socket.AF_INET, packet[12:16], packet[16:20]) if packet[0] >> 4 == 4
                            else (socket.AF_INET6, packet[8:24], packet[24:40]))
        pairs.append((socket.inet_ntop(family, src), socket.inet_ntop(family, dst)))
        at += 16 + size
    return pairs


@pytest.mark.parametrize("fmt", ["jsonl", "pcap"])
def test_a_recording_keeps_each_datagrams_sender_and_destination_whatever_it_was_sent_to(
        lan: tuple[Host, Host], tmp_path: Path, fmt: str) -> None:
    """Recorded in C as it is read (Batch.record), on a socket a family: unicast on both families,
    a link-local peer (jsonl keeps the destination's scope, a packet header has no room for it),
    a broadcast, groups on both families and forged senders each go into the file with the sender
    and destination they had; the recorder outlives them and records a client after them."""
    server_host, client = lan
    path = tmp_path / f"recording.{fmt}"
    server = Server(server_host, "--debug", "listen", str(PORT), "--out", str(path), "--format", fmt)
    try:
        wait_bound(server_host, PORT, 2)
        payload = ["--payload", b"record me".hex()]
        client.peer("send", SERVER4, str(PORT), *payload)
        client.peer("send", SERVER6, str(PORT), *payload)
        client.peer("ask", f"{SERVER_LL}%{client.iface}", str(PORT), "--source", f"{CLIENT_LL}%{client.iface}",
                    "--timeout", "0.2", *payload)
        client.peer("group", "10.98.0.255", str(PORT), "--iface", client.iface, "--broadcast", "--count", "1",
                    *payload)
        for group in ("224.0.0.1", "ff02::1"):
            client.peer("group", group, str(PORT), "--iface", client.iface, "--count", "1", *payload)
        client.peer("forge", "198.18.0.7", "5555", SERVER4, str(PORT), "--count", "3", *payload)
        client.peer("send", SERVER4, str(PORT), "--payload", b"after".hex())
        deadline = time.monotonic() + 5
        while server.alive() and time.monotonic() < deadline and path.stat().st_size == 0:
            time.sleep(0.05)
        time.sleep(0.3)
        assert server.alive()
    finally:
        summary = server.stop()
    assert "recorded as " + fmt + " in the same call (record)" in summary, summary
    index = server_host.run("cat", f"/sys/class/net/{server_host.iface}/ifindex").stdout.strip()
    link_local = f"{SERVER_LL}%{index}" if fmt == "jsonl" else SERVER_LL
    expected = [(CLIENT4, SERVER4), (CLIENT6, SERVER6), (CLIENT_LL, link_local), (CLIENT4, "10.98.0.255"),
                (CLIENT4, "224.0.0.1"), ("fe80::", "ff02::1"), *[("198.18.0.7", SERVER4)] * 3,
                (CLIENT4, SERVER4)]
    # (the group's sender is the interface's own link-local address, whichever the kernel made)
    pairs = [("fe80::" if dst == "ff02::1" and src.startswith("fe80::") else src, dst)
             for src, dst in recorded_pairs(fmt, path.read_bytes())]
    assert sorted(pairs) == sorted(expected)


@pytest.mark.parametrize("argv", [
    ["listen", f"[::]:{PORT}", "--relay", "127.0.0.1:7301"],
    ["socat", f"UDP6-RECVFROM:{PORT},fork", "UDP4-SENDTO:127.0.0.1:7301"],
], ids=["listen-relay", "socat-recvfrom-sendto"])
def test_a_relay_carries_a_link_local_peer(lan: tuple[Host, Host], argv: list[str]) -> None:
    server_host, client = lan
    upstream = Server(server_host, "listen", "127.0.0.1:7301", "--respond", "echo")
    relay = Server(server_host, *argv)
    try:
        wait_bound(server_host, 7301)
        wait_bound(server_host, PORT)
        reply = client.peer("ask", f"{SERVER_LL}%{client.iface}", str(PORT), "--source", f"{CLIENT_LL}%{client.iface}")
        assert reply["reply"] == b"udpkit legit".hex(), relay.stop()
    finally:
        relay.stop()
        upstream.stop()


@pytest.mark.parametrize("family,rule", [
    ("ip", "reject with icmp type admin-prohibited"),
    ("ip6", "reject with icmpv6 type admin-prohibited"),
])
@pytest.mark.parametrize("mode", [["--fork", "--respond", "echo"], ["--relay", "127.0.0.1:7301"]], ids=["fork", "relay"])
def test_an_icmp_error_for_a_reply_ends_that_session_only(lan: tuple[Host, Host], family: str, rule: str,
                                                          mode: list[str]) -> None:
    server_host, client = lan
    upstream = Server(server_host, "listen", "127.0.0.1:7301", "--respond", "echo")
    server = Server(server_host, "listen", "-6" if family == "ip6" else "-4", str(PORT), *mode)
    host = SERVER6 if family == "ip6" else SERVER4
    client.run("nft", f"add table {family} hostile")
    client.run("nft", f"add chain {family} hostile input {{ type filter hook input priority 0; }}")
    client.run("nft", f"add rule {family} hostile input udp dport 40001 {rule}")
    try:
        wait_bound(server_host, 7301)
        wait_bound(server_host, PORT)
        for _ in range(3):  # the reply is rejected; the session's next receive reports the ICMP error
            client.peer("ask", host, str(PORT), "--port", "40001", "--timeout", "0.3")
        assert server.alive()
        assert legit(client, host) == b"udpkit legit"
    finally:
        summary = server.stop()
        upstream.stop()
    assert "session_error:" in summary, summary


@pytest.mark.parametrize("argv", [
    ["socat", f"UDP4-LISTEN:{PORT},fork", "PIPE"],
    ["listen", str(PORT), "--fork", "--respond", "echo"],
    ["listen", f"0.0.0.0:{PORT}", "--relay", "127.0.0.1:7301"],
], ids=["socat-fork", "listen-fork", "relay"])
def test_thousands_of_source_ports_under_a_low_fd_limit_leave_the_service_up(lan: tuple[Host, Host],
                                                                             argv: list[str]) -> None:
    """The tutorial's own command (and its kin), no limiting flags, ``ulimit -n 2048``, 5,000 client ports."""
    server_host, client = lan
    upstream = Server(server_host, "listen", "127.0.0.1:7301", "--respond", "echo", "--rate-limit", "0")
    server = Server(server_host, *argv, shell_prefix="ulimit -n 2048;")
    try:
        wait_bound(server_host, 7301)
        wait_bound(server_host, PORT)
        client.peer("ports", SERVER4, str(PORT), "5000", timeout=120)
        time.sleep(0.5)
        assert server.alive()
        fds = len(os.listdir(f"/proc/{server.pid()}/fd"))
        assert fds < 2048
        assert legit(client) == b"udpkit legit"
    finally:
        server.stop()
        upstream.stop()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("bind, flags", [(SERVER4, ["--respond", "discard"]), (SERVER4, ["--respond", "echo"]),
                                         ("0.0.0.0", ["--respond", "echo"]),
                                         # echoed in C (Batch.reflect): the one-socket loop, and batches on a wildcard
                                         (SERVER4, ["--respond", "echo", "--rate-limit", "0"]),
                                         ("0.0.0.0", ["--respond", "echo", "--rate-limit", "0"]),
                                         # answered in C (Batch.answer_ntp): a timed socket, and a wildcard
                                         (SERVER4, ["--respond", "ntp"]), ("0.0.0.0", ["--respond", "ntp"]),
                                         # answered again in C from kept answers (Batch.answer_kept)
                                         (SERVER4, ["--respond", "dns", "--zone", ZONE, "--rate-limit", "0"]),
                                         # the port alone, a socket a family: echo a thread each, DNS one loop waiting on both
                                         (None, ["--respond", "echo", "--rate-limit", "0"]),
                                         (None, ["--respond", "dns", "--zone", ZONE, "--rate-limit", "0"]),
                                         # recorded in C as read (Batch.record), a socket a family
                                         (None, ["--respond", "discard", "--out", "/dev/null", "--format", "jsonl"])],
                         ids=["discard", "echo", "echo-wildcard", "echo-reflect", "echo-reflect-wildcard", "ntp",
                              "ntp-wildcard", "dns-kept", "echo-reflect-both-families", "dns-kept-both-families",
                              "recording-both-families"])
def test_a_flood_of_distinct_spoofed_peers_leaves_memory_bounded(lan: tuple[Host, Host], bind: str | None,
                                                                  flags: list[str]) -> None:
    """The batched paths too: a wildcard-bound echo answers each batch from its destinations."""
    server_host, client = lan
    server = Server(server_host, "listen", str(PORT) if bind is None else f"{bind}:{PORT}", *flags,
                    "--rcvbuf", str(1 << 22))
    payload = {"ntp": NTP_REQUEST, "dns": SERVICES["dns"][1]}.get(flags[1], b"forged").hex()
    try:
        wait_bound(server_host, PORT, 1 if bind else 2)
        client.peer("forge", "10.98.0.2", "1", SERVER4, str(PORT), "--count", "20000", "--random-sources",
                    "--pace", "200", "--payload", payload)
        time.sleep(0.5)
        before = _rss_kb(server.pid())
        client.peer("forge", "10.98.0.2", "1", SERVER4, str(PORT), "--count", "150000", "--random-sources",
                    "--pace", "200", "--payload", payload, timeout=180)
        time.sleep(0.5)
        grown = _rss_kb(server.pid()) - before
        assert server.alive() and grown < 8 * 1024, f"RSS grew {grown} KiB"  # 150,000 peers at ~200 B: 29 MiB
        for host in (SERVER4,) if bind else (SERVER4, SERVER6):  # (the flood came over IPv4)
            if flags[1] == "echo":  # discard answers nobody: alive is all it can show
                assert legit(client, host, payload=b"after") == b"after"
            if flags[1] == "ntp":
                reply = legit(client, host, payload=NTP_REQUEST)
                assert reply is not None and len(reply) == 48 and reply[0] & 7 == 4
            if flags[1] == "dns":
                reply = legit(client, host, payload=SERVICES["dns"][1])
                assert reply is not None and reply[:2] == SERVICES["dns"][1][:2] and reply[2] & 0x80
    finally:
        summary = server.stop()
    assert "about " in summary, summary  # the peer count became an estimate


@pytest.mark.parametrize("under, counter", [(b"\x07example", "nxdomain"), (b"\x04wild\x07example", "wildcard")],
                         ids=["names that do not exist", "names a wildcard stands for"])
@pytest.mark.parametrize("flags", [[], ["--rate-limit", "0"]], ids=["default", "answers kept in C"])
def test_a_flood_of_random_names_leaves_memory_bounded_and_real_answers_kept(lan: tuple[Host, Host],
                                                                           flags: list[str], under: bytes,
                                                                           counter: str) -> None:
    """A "random subdomain" attack: 100,000 queries for names that do not exist (or that only a
    wildcard stands for), each new, from spoofed sources. The answers come from a template, the
    ones kept stay within the table's bytes, and a legitimate client is answered (its answer kept
    before the flood is not pushed out)."""
    server_host, client = lan
    server = Server(server_host, "listen", f"{SERVER4}:{PORT}", "--respond", "dns", "--zone", ZONE, *flags,
                    "--rcvbuf", str(1 << 22))
    query = SERVICES["dns"][1]
    random_name = query[:12] + b"\x0a" + b"x" * 10 + under + b"\x04test\x00\x00\x01\x00\x01"
    try:
        wait_bound(server_host, PORT)
        assert legit(client, payload=query) is not None
        client.peer("forge", "10.98.0.2", "1", SERVER4, str(PORT), "--count", "20000", "--random-sources",
                    "--pace", "200", "--payload", random_name.hex(), "--vary", "13:23")
        time.sleep(0.5)
        before = _rss_kb(server.pid())
        client.peer("forge", "10.98.0.2", "1", SERVER4, str(PORT), "--count", "100000", "--random-sources",
                    "--pace", "200", "--payload", random_name.hex(), "--vary", "13:23", timeout=180)
        time.sleep(0.5)
        grown = _rss_kb(server.pid()) - before
        assert server.alive() and grown < 8 * 1024, f"RSS grew {grown} KiB"  # the table: 4 MiB at most
        reply = legit(client, payload=query)
        assert reply is not None and reply[:2] == query[:2] and reply[3] & 0xF == 0  # NOERROR, www's address
    finally:
        summary = server.stop()
    answered = int(summary.split(f"{counter} ")[1].split(",")[0].split()[0])
    assert answered >= 60_000, summary  # most of the flood was read and answered, not dropped


def test_heavy_dns_messages_do_not_slow_a_legitimate_client(lan: tuple[Host, Host]) -> None:
    server_host, client = lan
    server = Server(server_host, "listen", f"{SERVER4}:53", "--respond", "dns", "--zone", ZONE)
    heavy = bytes.fromhex("0001010" + "0ffff000000000000") + b"\x03www\x07example\x04test\x00\x00\x01\x00\x01"
    heavy += b"\xc0\x0c\x00\x01\x00\x01" * ((65000 - len(heavy)) // 6)
    try:
        wait_bound(server_host, 53)
        flood = start_group(client.argv([sys.executable, PEER, "send", SERVER4, "53", "--payload", heavy.hex(),
                                         "--count", "300", "--pace", "1"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _www, request = SERVICES["dns"]
            rtts = []
            for _ in range(15):
                reply = client.peer("ask", SERVER4, "53", "--payload", request.hex(), "--source", CLIENT4)
                assert reply["reply"] is not None
                rtts.append(float(reply["rtt_ms"]))  # type: ignore[arg-type]
        finally:
            flood.wait(timeout=60)
        assert server.alive()
        rtts.sort()
        assert rtts[len(rtts) // 2] < 20, rtts
    finally:
        summary = server.stop()
    assert "formerr" in summary, summary


def test_a_forged_datagram_between_two_echo_services_does_not_loop(lan: tuple[Host, Host]) -> None:
    server_host, client = lan
    a = Server(client, "listen", f"{CLIENT4}:7300", "--respond", "echo")
    b = Server(server_host, "listen", f"{SERVER4}:7301", "--respond", "daytime")
    try:
        wait_bound(client, 7300)
        wait_bound(server_host, 7301)
        client.peer("forge", CLIENT4, "7300", SERVER4, "7301", "--count", "20")  # as if from A, to B
        time.sleep(2.0)
        assert a.alive() and b.alive()
        assert legit(server_host, CLIENT4, 7300) == b"udpkit legit"
    finally:
        summary_a, summary_b = a.stop(), b.stop()
    first = summary_a.splitlines()[1]
    received = int(first.split(": ", 1)[1].split()[0])
    assert received < 1000, summary_a  # dead within milliseconds, not 70,000 a second
    assert "rate limited" in summary_a + summary_b


def test_dns_answers_do_not_amplify_a_flood_by_default(lan: tuple[Host, Host], tmp_path: Path) -> None:
    server_host, client = lan
    zone = tmp_path / "big.zone"
    strings = " ".join('"' + "x" * 200 + '"' for _ in range(5))
    zone.write_text("$ORIGIN big.test.\n$TTL 60\n@ SOA ns hostmaster 1 60 60 60 60\n@ NS ns\nns A 192.0.2.1\n"
                    f"t TXT {strings}\n")
    server = Server(server_host, "listen", f"{SERVER4}:53", "--respond", "dns", "--zone", str(zone))
    try:
        wait_bound(server_host, 53)
        flood = client.peer("dns", SERVER4, "53", "t.big.test", "--rate", "100", "--seconds", "3",
                            "--source", CLIENT4)
        assert flood["bytes_in"] / flood["bytes_out"] <= 3, flood  # type: ignore[operator]
        _sh("ip", "-n", client.name, "addr", "add", "10.98.0.3/24", "dev", client.iface)
        calm = client.peer("dns", SERVER4, "53", "t.big.test", "--rate", "10", "--seconds", "3", "--source",
                           "10.98.0.3")
        assert calm["full_answers"] == calm["asked"], calm
    finally:
        server.stop()


@pytest.mark.parametrize("fmt", ["pcap", "jsonl", "text", "hex", "raw"])
def test_a_full_disk_stops_the_recording_not_the_service(lan: tuple[Host, Host], tmp_path: Path, fmt: str) -> None:
    server_host, client = lan
    disk = tmp_path / "small"
    disk.mkdir()
    _sh("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk))
    capture = disk / f"capture.{fmt}"
    server = Server(server_host, "listen", f"{SERVER4}:{PORT}", "--respond", "echo", "--rate-limit", "0",
                    "--out", str(capture), "--format", fmt)
    try:
        wait_bound(server_host, PORT)
        for _ in range(3):
            client.peer("forge", CLIENT4, "40000", SERVER4, str(PORT), "--payload", (b"z" * 1000).hex(),
                        "--count", "200", "--pace", "20")
        time.sleep(0.3)
        assert server.alive() and legit(client) == b"udpkit legit"
        summary = server.stop()
        assert "recording stopped (No space left on device)" in summary, summary
        data = capture.read_bytes()
        if fmt == "jsonl":
            assert all(json.loads(line) for line in data.splitlines())
        elif fmt == "pcap":
            need_tool("tshark")
            read = subprocess.run(["tshark", "-r", str(capture), "-c", "100000"], capture_output=True, text=True)
            assert read.returncode == 0 and "cut short" not in read.stderr, read.stderr
        elif fmt == "raw":
            assert len(data) % 1000 == 0
        else:
            assert data.endswith(b"\n")
    finally:
        server.stop()
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_planted_symlink_is_refused_and_the_target_untouched(tmp_path: Path) -> None:
    need_root()
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    target = tmp_path / "precious"
    target.write_bytes(b"root's data\n")
    (shared / "capture.pcap").symlink_to(target)
    result = subprocess.run([sys.executable, "-m", "udpkit", "listen", "127.0.0.1:0", "--duration", "0.2",
                             "--out", str(shared / "capture.pcap"), "--format", "pcap"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "symbolic link" in result.stderr and result.stderr.count("\n") == 1
    assert target.read_bytes() == b"root's data\n"


def test_fork_sessions_on_a_privileged_port_work_after_dropping_to_nobody(lan: tuple[Host, Host]) -> None:
    server_host, client = lan
    server = Server(server_host, "listen", "123", "--respond", "ntp", "--fork", "--user", "nobody")
    try:
        wait_bound(server_host, 123, 2)
        for _ in range(2):
            assert legit(client, SERVER4, 123, NTP_REQUEST)
        listing = server_host.run("ss", "-uanpH", "sport = :123").stdout
        assert "ESTAB" in listing, listing  # the peer's own session socket, bound after the drop
        status = Path(f"/proc/{server.pid()}/status").read_text()
        uid = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert set(uid) == {"65534"}
        caps = next(line for line in status.splitlines() if line.startswith("CapEff:")).split()[1]
        assert int(caps, 16) == 1 << 10  # CAP_NET_BIND_SERVICE and nothing else
    finally:
        summary = server.stop()
    assert "sessions" in summary, summary
