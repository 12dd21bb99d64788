"""The prober against a remote Linux kernel's ICMP limits, and against a forger on the same link.

Three hosts on one bridge (network namespaces): the server, whose ``icmp_ratelimit`` each test
sets; the client, which runs ``udpkit probe``; and a third host that sweeps the client's ports with
forged replies and ICMP errors from a raw socket. The issue's cases, scaled to seconds: every
verdict is checked, and the time against the floor the server's budget allows —
(closed ports − burst of 6) × interval. The bounds are generous (a shared CI machine), the
benchmark (``bench/scan_bench.py --remote``) has the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import end_group, need_root, need_tool, start_group
from tests.integration.test_hostile import PEER, Host, _sh

SERVER, CLIENT, FORGER = "10.97.0.1", "10.97.0.2", "10.97.0.3"
SERVER6, CLIENT6 = "fd97::1", "fd97::2"
ALIASES = [f"10.97.0.{i}" for i in range(11, 16)]
BASE = 20000  # the probed ports: BASE .. BASE + n - 1


class Lab:
    def __init__(self, server: Host, client: Host, forger: Host) -> None:
        self.server, self.client, self.forger = server, client, forger
        self.procs: list[subprocess.Popen[str]] = []

    def limit(self, v4_ms: int | None = None, v6_ms: int | None = None) -> None:
        if v4_ms is not None:
            self.server.run("sysctl", "-qw", f"net.ipv4.icmp_ratelimit={v4_ms}")
        if v6_ms is not None:
            self.server.run("sysctl", "-qw", f"net.ipv6.icmp.ratelimit={v6_ms}")

    def serve(self, port: int, respond: str) -> None:
        proc = start_group(self.server.argv([sys.executable, "-m", "udpkit", "listen", str(port), "--respond", respond,
                                             "--rate-limit", "0"]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        deadline = time.monotonic() + 10
        while f":{port} " not in self.server.run("ss", "-uanH").stdout:
            assert time.monotonic() < deadline and proc.poll() is None, "the responder did not start"
            time.sleep(0.05)

    def drop(self, *ports: int) -> None:
        rules = ("table inet firewall {\n chain input {\n  type filter hook input priority 0;\n"
                 f"  udp dport {{ {', '.join(map(str, ports))} }} drop\n }}\n}}\n")
        applied = subprocess.run(self.server.argv(["nft", "-f", "-"]), input=rules, text=True, capture_output=True)
        assert applied.returncode == 0, applied.stderr

    def probe(self, *argv: str, timeout: float = 240) -> tuple[dict[tuple[str, int], dict[str, object]], float, str]:
        started = time.monotonic()
        result = self.client.run(sys.executable, "-m", "udpkit", "probe", *argv, "--json", timeout=timeout)
        took = time.monotonic() - started
        assert result.returncode in (0, 1), result.stderr
        docs = {(str(d["host"]), int(d["port"])): d for d in json.loads(result.stdout)}
        return docs, took, result.stderr


@pytest.fixture
def lab() -> Iterator[Lab]:
    need_root()
    need_tool("ip", "nft")
    tag = f"{os.getpid() % 100000}"
    server, client, forger = (Host(f"udpkit-l{role}{tag}", f"l{role}{tag}") for role in "scf")
    bridge = f"lbr{tag}"
    for host in (server, client, forger):
        _sh("ip", "netns", "add", host.name)
        for key in ("all", "default"):
            _sh("ip", "netns", "exec", host.name, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0")
    lab = Lab(server, client, forger)
    try:
        _sh("ip", "-n", server.name, "link", "add", bridge, "type", "bridge")
        for host, v4, v6 in ((client, CLIENT, CLIENT6), (forger, FORGER, None)):
            port = f"{host.iface}b"
            _sh("ip", "link", "add", host.iface, "netns", host.name, "type", "veth", "peer", "name", port,
                "netns", server.name)
            _sh("ip", "-n", server.name, "link", "set", port, "master", bridge)
            _sh("ip", "-n", server.name, "link", "set", port, "up")
            _sh("ip", "-n", host.name, "addr", "add", f"{v4}/24", "dev", host.iface)
            if v6:
                _sh("ip", "-n", host.name, "addr", "add", f"{v6}/64", "dev", host.iface, "nodad")
            _sh("ip", "-n", host.name, "link", "set", host.iface, "up")
            _sh("ip", "-n", host.name, "link", "set", "lo", "up")
        for address in (f"{SERVER}/24", *(f"{a}/32" for a in ALIASES)):
            _sh("ip", "-n", server.name, "addr", "add", address, "dev", bridge)
        _sh("ip", "-n", server.name, "addr", "add", f"{SERVER6}/64", "dev", bridge, "nodad")
        _sh("ip", "-n", server.name, "link", "set", bridge, "up")
        _sh("ip", "-n", server.name, "link", "set", "lo", "up")
        yield lab
    finally:
        for proc in lab.procs:
            end_group(proc)
        for host in (server, client, forger):
            subprocess.run(["ip", "netns", "delete", host.name], capture_output=True)


def floor(closed: int, interval: float, burst: int = 6) -> float:
    return max(0, closed - burst) * interval


def check(docs: dict[tuple[str, int], dict[str, object]], host: str, ports: range, *, open_: dict[int, str],
          dropped: set[int]) -> None:
    """Every verdict: open with the protocol that answered, open|filtered where the firewall drops,
    closed everywhere else."""
    for port in ports:
        doc = docs[(host, port)]
        if port in open_:
            assert (doc["state"], doc["reason"]) == ("open", open_[port]), doc
        elif port in dropped:
            assert doc["state"] == "open|filtered", doc
        else:
            assert (doc["state"], doc["reason"]) == ("closed", "port-unreachable"), doc


@pytest.mark.parametrize("family", ["4", "6"])
def test_one_limited_host_every_verdict_right_near_the_floor(lab: Lab, family: str) -> None:
    lab.limit(v4_ms=100, v6_ms=100)
    lab.serve(BASE + 5, "echo")
    lab.drop(BASE + 10, BASE + 20)
    ports = range(BASE, BASE + 60)
    host = SERVER if family == "4" else SERVER6
    docs, took, _ = lab.probe(host, "-p", f"{ports[0]}-{ports[-1]}")
    check(docs, host, ports, open_={BASE + 5: "echo"}, dropped={BASE + 10, BASE + 20})  # our nonce, echoed
    assert took <= 1.5 * floor(57, 0.1) + 4  # nmap -sU -T3 on this case: about 7 s


def test_a_budget_spent_just_before_the_scan_is_noticed(lab: Lab) -> None:
    """Another scan (here: 60 datagrams to closed ports) spent the server's budget seconds before:
    no burst comes, and still no closed port is reported open|filtered."""
    lab.limit(v4_ms=100)
    lab.client.run(sys.executable, PEER, "send", SERVER, str(BASE + 500), "--payload", "00", "--count", "60")
    ports = range(BASE, BASE + 40)
    docs, took, _ = lab.probe(SERVER, "-p", f"{ports[0]}-{ports[-1]}")
    check(docs, SERVER, ports, open_={}, dropped=set())
    assert took <= 1.5 * floor(40, 0.1, burst=0) + 4


def test_five_aliases_of_one_kernel_share_one_budget(lab: Lab) -> None:
    """One kernel, five addresses: the errors of all five come out of one budget. The address that
    got the burst is paced; the others, silent, are held until it is done, then paced in turn."""
    lab.limit(v4_ms=50)
    ports = range(BASE, BASE + 20)
    docs, took, _ = lab.probe(*ALIASES, "-p", f"{ports[0]}-{ports[-1]}")
    for alias in ALIASES:
        check(docs, alias, ports, open_={}, dropped=set())
    assert took <= 1.5 * floor(100, 0.05) + 4


def test_without_a_per_host_limit_a_thousand_ports_take_seconds(lab: Lab) -> None:
    """``icmp_ratelimit=0``: only the kernel's global 1000 errors a second remain (nmap: 96-352 s)."""
    lab.limit(v4_ms=0)
    ports = range(BASE, BASE + 1000)
    docs, took, _ = lab.probe(SERVER, "-p", f"{ports[0]}-{ports[-1]}")
    check(docs, SERVER, ports, open_={}, dropped=set())
    assert took <= 8  # the target is 5 s; the floor about 1 s


def test_a_cold_neighbour_cache_loses_no_verdict(lab: Lab) -> None:
    """The first datagrams to a host not yet resolved wait in a short kernel queue and the rest are
    dropped before they leave: those silences must not count."""
    lab.limit(v6_ms=10)
    lab.client.run("ip", "-6", "neigh", "flush", "all")
    lab.server.run("ip", "-6", "neigh", "flush", "all")
    ports = range(BASE, BASE + 300)
    docs, _took, _ = lab.probe("-6", SERVER6, "-p", f"{ports[0]}-{ports[-1]}")
    check(docs, SERVER6, ports, open_={}, dropped=set())


def test_a_forger_on_the_link_moves_no_verdict(lab: Lab) -> None:
    """The third host sweeps every ephemeral port of the client for the whole scan with datagrams
    "from" the server's silent port and its closed port, and with ICMP errors "about" them (3/3 and
    3/13, from the server's address and from its own). Nothing it sends becomes a verdict: the
    closed port stays closed (its error quotes our nonce), the silent port is never open, the echo
    and NTP services are open on their own evidence, and the user is told."""
    lab.limit(v4_ms=0)
    lab.serve(BASE + 7, "echo")
    lab.serve(123, "ntp")
    lab.drop(BASE + 9)
    silent, closed = BASE + 9, BASE + 8
    forger = start_group(lab.forger.argv([sys.executable, PEER, "sweep", SERVER, CLIENT,
                                          "--reply-from", f"{silent},{closed}",
                                          "--icmp-for", f"{silent}:3/3,{silent}:3/13@{FORGER},{closed}:3/13",
                                          "--seconds", "30"]),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lab.procs.append(forger)
    time.sleep(1.0)  # the sweep is under way before the scan starts
    try:
        docs, _took, stderr = lab.probe(SERVER, "-p", f"123,{BASE}-{BASE + 9}", "--rate", "4", "--retries", "3")
    finally:
        end_group(forger)
    assert forger.returncode is not None
    assert docs[(SERVER, closed)]["state"] == "closed"
    assert docs[(SERVER, silent)]["state"] in ("open|filtered", "conflict"), docs[(SERVER, silent)]
    assert (docs[(SERVER, BASE + 7)]["state"], docs[(SERVER, BASE + 7)]["reason"]) == ("open", "echo")
    assert (docs[(SERVER, 123)]["state"], docs[(SERVER, 123)]["reason"]) == ("open", "ntp")
    for port in range(BASE, BASE + 7):
        assert docs[(SERVER, port)]["state"] == "closed"
    assert f"warning: {SERVER}:" in stderr and "forging" in stderr


def test_two_source_addresses_halve_the_time_of_a_limited_host(lab: Lab) -> None:
    """The server's kernel keeps one ICMP budget per source address: ``--source`` with two
    addresses shares the ports between them, and each is paced on its own."""
    lab.limit(v4_ms=100)
    lab.client.run("ip", "addr", "add", "10.97.0.22/24", "dev", lab.client.iface)
    ports = range(BASE, BASE + 100)
    spec = f"{ports[0]}-{ports[-1]}"
    one, took_one, _ = lab.probe(SERVER, "-p", spec)
    time.sleep(1.0)  # the budget refills
    two, took_two, _ = lab.probe(SERVER, "-p", spec, "--source", f"{CLIENT},10.97.0.22")
    for docs in (one, two):
        check(docs, SERVER, ports, open_={}, dropped=set())
    assert took_two <= 0.75 * took_one, (took_one, took_two)  # the floors: 9.4 s and 4.4 s


def test_an_ipv6_prefix_routed_to_the_prober_gives_it_many_sources(lab: Lab) -> None:
    """``--source PREFIX``: every address of a prefix routed to this host (AnyIP: ``ip route add
    local PREFIX dev lo``), bound with IP_FREEBIND without being assigned one by one."""
    lab.limit(v6_ms=100)
    lab.client.run("ip", "-6", "route", "add", "local", "fd97:1::/126", "dev", "lo")
    lab.server.run("ip", "-6", "route", "add", "fd97:1::/126", "via", CLIENT6)
    ports = range(BASE, BASE + 80)
    docs, took, _ = lab.probe("-6", SERVER6, "-p", f"{ports[0]}-{ports[-1]}", "--source", "fd97:1::/126")
    check(docs, SERVER6, ports, open_={}, dropped=set())
    assert took <= 1.5 * floor(80, 0.1) / 4 + 4  # four budgets
