"""The verdict matrix: real listeners and nftables rules in namespaces the tests create, probed on
loopback and across a veth pair (so the ICMP comes from the other host's address), with real nc's
verdict beside ours — and a host that rate-limits its ICMP errors, scanned without misjudging it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import start_group
from tests.integration.conftest import stop

pytestmark = [pytest.mark.root, pytest.mark.peer("nft", "nc")]

ECHO, DISCARD, CLOSED, DROP, PROHIBITED, UNREACHABLE = 7007, 7009, 7011, 7013, 7015, 7017
RULES = f"""\
add table inet matrix
add chain inet matrix input {{ type filter hook input priority 0 ; }}
add rule inet matrix input udp dport {DROP} drop
add rule inet matrix input meta nfproto ipv4 udp dport {PROHIBITED} reject with icmp type admin-prohibited
add rule inet matrix input meta nfproto ipv6 udp dport {PROHIBITED} reject with icmpv6 type admin-prohibited
add rule inet matrix input udp dport {UNREACHABLE} reject with icmpx type host-unreachable
"""


@dataclass
class Hosts:
    server: str
    client: str

    def run(self, where: str, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", where, *argv], capture_output=True, text=True,
                              timeout=timeout)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    """Two namespaces joined by a veth pair: server 10.77.0.1 / fd77::1, client .2 / ::2; the server
    runs an echo and a discard listener on every address and the nftables rules above."""
    tag = f"{os.getpid() % 100000}"
    server, client = f"udpkit-srv{tag}", f"udpkit-cli{tag}"
    procs: list[subprocess.Popen[str]] = []
    for name in (server, client):
        _ip("netns", "add", name)
    try:
        _ip("link", "add", f"vs{tag}", "netns", server, "type", "veth", "peer", "name", f"vc{tag}", "netns", client)
        for name, dev, n in ((server, f"vs{tag}", 1), (client, f"vc{tag}", 2)):
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "addr", "add", f"10.77.0.{n}/24", "dev", dev)
            _ip("-n", name, "addr", "add", f"fd77::{n}/64", "dev", dev, "nodad")
            _ip("-n", name, "link", "set", dev, "up")
        applied = subprocess.run(["ip", "netns", "exec", server, "nft", "-f", "-"], input=RULES, text=True,
                                 capture_output=True, timeout=20)
        assert applied.returncode == 0, applied.stderr
        for respond, port in (("echo", ECHO), ("discard", DISCARD)):
            proc = start_group(["ip", "netns", "exec", server, sys.executable, "-m", "udpkit", "listen",
                                str(port), "--respond", respond], stderr=subprocess.PIPE, text=True)
            procs.append(proc)
            assert proc.stderr is not None and "listen" in proc.stderr.readline()
        yield Hosts(server, client)
    finally:
        for proc in procs:
            stop(proc)
        for name in (server, client):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=20)


EXPECTED = {
    ECHO: ("open", "udp-response"),
    DISCARD: ("open|filtered", "no-response"),
    CLOSED: ("closed", "port-unreachable"),
    DROP: ("open|filtered", "no-response"),
    PROHIBITED: ("filtered", "admin-prohibited"),
}


@pytest.mark.parametrize(
    "where, target, sender",
    [("server", "127.0.0.1", "127.0.0.1"), ("server", "::1", "::1"),
     ("client", "10.77.0.1", "10.77.0.1"), ("client", "fd77::1", "fd77::1")],
)
def test_each_port_gets_the_verdict_its_evidence_supports(hosts: Hosts, where: str, target: str, sender: str) -> None:
    ns = hosts.server if where == "server" else hosts.client
    ports = ",".join(str(p) for p in (ECHO, DISCARD, CLOSED, DROP, PROHIBITED, UNREACHABLE))
    result = hosts.run(ns, [sys.executable, "-m", "udpkit", "probe", target, "-p", ports, "--payload", "hi",
                            "--timeout", "0.3", "--retries", "1", "--json"])
    assert result.stdout, result.stderr
    docs = {doc["port"]: doc for doc in json.loads(result.stdout)}
    for port, (state, reason) in EXPECTED.items():
        assert (docs[port]["state"], docs[port]["reason"]) == (state, reason), port
    for port in (CLOSED, PROHIBITED, UNREACHABLE):
        assert docs[port]["icmp"]["from"] == sender
    unreachable = docs[UNREACHABLE]
    v6 = ":" in target
    assert unreachable["state"] == "filtered"
    assert (unreachable["icmp"]["type"], unreachable["icmp"]["code"]) == ((1, 3) if v6 else (3, 1))
    assert unreachable["reason"] == ("address-unreachable" if v6 else "host-unreachable")
    assert docs[ECHO]["reply"]["bytes"] == 2
    assert result.returncode == 1


@pytest.mark.parametrize("target", ["10.77.0.1", "fd77::1"])
def test_nc_calls_the_silent_port_a_success_and_so_does_udpkit_nc(hosts: Hosts, target: str) -> None:
    for port, status in ((DISCARD, 0), (DROP, 0), (CLOSED, 1)):
        real = hosts.run(hosts.client, ["nc", "-u", "-vz", "-w", "1", target, str(port)])
        ours = hosts.run(hosts.client, [sys.executable, "-m", "udpkit", "nc", "-u", "-vz", "-w", "1", target, str(port)])
        assert (ours.stderr, ours.returncode) == (real.stderr, real.returncode)
        assert real.returncode == status


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_a_host_that_rate_limits_icmp_errors_is_paced_not_misjudged(hosts: Hosts, family: str) -> None:
    # Ten ICMP errors a second per peer (Linux's default is one), burst of six: 40 closed ports
    # cannot all be answered at once, so silence would be misread without pacing.
    key = "net.ipv4.icmp_ratelimit" if family == "ipv4" else "net.ipv6.icmp.ratelimit"
    hosts.run(hosts.server, ["sysctl", "-w", f"{key}=100"])
    target = "10.77.0.1" if family == "ipv4" else "fd77::1"
    started = time.monotonic()
    result = hosts.run(hosts.client, [sys.executable, "-m", "udpkit", "probe", target, "-p", "20001-20040",
                                      "--json"], timeout=120)
    took = time.monotonic() - started
    states = [doc["state"] for doc in json.loads(result.stdout)]
    assert states == ["closed"] * 40
    assert took >= 2.0  # paced: (40 - 6) errors at ten a second


@pytest.mark.peer("nmap")
def test_nmaps_habits_beside_nmap(hosts: Hosts) -> None:
    """``-p U:…`` as nmap takes it, the same verdicts as ``nmap -sU``; ``--open`` lists only what
    answered and counts the rest in the "Not shown" line — deliberately unlike nmap, which lists
    open|filtered ports under ``--open`` as if they had answered; and an echo service on a port
    registered for something else is named ``echo`` by its reply, as ``nmap -sV`` names it."""
    ports = f"U:{ECHO},{DISCARD},{CLOSED}"
    theirs = hosts.run(hosts.client, ["nmap", "-n", "-sU", "-p", ports, "10.77.0.1"]).stdout
    ours = hosts.run(hosts.client, [sys.executable, "-m", "udpkit", "probe", "10.77.0.1", "-p", ports])
    for port, state in ((ECHO, "open"), (DISCARD, "open|filtered"), (CLOSED, "closed")):
        assert f"{port}/udp open " in theirs if state == "open" else f"{port}/udp {state}" in theirs
        assert any(line.startswith(f"{port}/udp") and line.split()[1] == state for line in ours.stdout.splitlines())
    assert f"{ECHO}/udp  open           echo" in ours.stdout
    refused = hosts.run(hosts.client, [sys.executable, "-m", "udpkit", "probe", "10.77.0.1", "-p", "U:53,T:80"])
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "T: names TCP" in refused.stderr
    only_open = hosts.run(hosts.client, [sys.executable, "-m", "udpkit", "probe", "10.77.0.1", "-p", ports, "--open"])
    assert "Not shown: 1 closed udp port (port-unreachable), 1 open|filtered udp port (no-response)" in only_open.stdout
    assert f"{DISCARD}/udp" not in only_open.stdout
    nmap_open = hosts.run(hosts.client, ["nmap", "-n", "-sU", "-p", ports, "--open", "10.77.0.1"]).stdout
    assert f"{DISCARD}/udp open|filtered" in nmap_open  # what nmap does, and udpkit does not
    top = hosts.run(hosts.client, [sys.executable, "-m", "udpkit", "probe", "10.77.0.1", "--top-ports", "20", "--jsonl"])
    assert len(top.stdout.splitlines()) == 20
