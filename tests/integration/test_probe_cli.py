"""``udpkit probe`` on loopback and through nftables rules in a namespace of our own."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.conftest import Netns, free_port, stop


@pytest.fixture
def services(ns: Netns) -> Iterator[dict[str, int]]:
    """An echo and a discard listener on 127.0.0.1 and ::1, in the test's namespace."""
    procs = []
    ports = {}
    try:
        for name in ("echo", "discard"):
            proc = ns.start([sys.executable, "-m", "udpkit", "listen", "127.0.0.1:0", "[::1]:0", "--respond", name])
            procs.append(proc)
            assert proc.stderr is not None
            line = proc.stderr.readline()
            ports[name] = int(line.split(",")[0].rsplit(":", 1)[1].split()[0])
        yield ports
    finally:
        for proc in procs:
            stop(proc)




def probe(ns: Netns, *args: str) -> subprocess.CompletedProcess[str]:
    return ns.udpkit("probe", "--timeout", "0.3", "--retries", "1", *args)


def test_the_table_shows_each_verdict_with_its_evidence(ns: Netns, services: dict[str, int]) -> None:
    free = free_port()
    result = probe(ns, "127.0.0.1", "::1", "-p", f"{services['echo']},{services['discard']},{free}", "--payload", "hi")
    assert result.returncode == 1  # not every port is open
    rows = {(block_host, line.split()[0]): line.split()[1]
            for block_host, line in _rows(result.stdout)}
    for host in ("127.0.0.1", "::1"):
        assert rows[(host, f"{services['echo']}/udp")] == "open"
        assert rows[(host, f"{services['discard']}/udp")] == "open|filtered"
        assert rows[(host, f"{free}/udp")] == "closed"
    assert "port-unreachable from ::1" in result.stdout


def _rows(text: str) -> Iterator[tuple[str, str]]:
    host = ""
    for line in text.splitlines():
        if line.startswith("udpkit probe report for "):
            host = line.rsplit(" ", 1)[1]
        elif line and line[0].isdigit():
            yield host, line


def test_json_carries_the_fields_and_all_open_exits_0(ns: Netns, services: dict[str, int]) -> None:
    result = probe(ns, "127.0.0.1", "-p", str(services["echo"]), "--payload-hex", "00ff", "--json")
    assert result.returncode == 0, result.stderr
    (doc,) = json.loads(result.stdout)
    assert doc["state"] == "open" and doc["reason"] == "udp-response" and doc["reply"]["bytes"] == 2
    assert set(doc) == {"host", "family", "port", "state", "service", "reason", "rtt_ms", "tries", "icmp", "reply"}
    lines = probe(ns, "127.0.0.1", "-p", f"{services['echo']},{free_port()}", "--jsonl").stdout.splitlines()
    assert sorted(json.loads(line)["state"] for line in lines) == ["closed", "open"]


@pytest.mark.root
@pytest.mark.peer("nft")
def test_firewall_verdicts_through_nftables(ns: Netns, services: dict[str, int]) -> None:
    reject, drop = 40001, 40002  # nothing listens in a fresh namespace
    rules = (
        "add table inet udpkit_test\n"
        "add chain inet udpkit_test input { type filter hook input priority 0 ; }\n"
        f"add rule inet udpkit_test input udp dport {reject} reject with icmpx type admin-prohibited\n"
        f"add rule inet udpkit_test input udp dport {drop} drop\n"
    )
    applied = subprocess.run(ns.argv(["nft", "-f", "-"]), input=rules, capture_output=True, text=True, timeout=20)
    assert applied.returncode == 0, applied.stderr
    result = probe(ns, "127.0.0.1", "-p", f"{reject},{drop}", "--json")
    states = {doc["port"]: doc for doc in json.loads(result.stdout)}
    assert states[reject]["state"] == "filtered" and states[reject]["reason"] == "admin-prohibited"
    assert states[reject]["icmp"] == {"type": 3, "code": 13, "from": "127.0.0.1"}
    assert states[drop]["state"] == "open|filtered" and states[drop]["tries"] == 2


@pytest.mark.parametrize(
    "args, message",
    [(["127.0.0.1", "-p", "0"], "out of range"), (["127.0.0.1", "-p", "70000"], "out of range"),
     (["127.0.0.1", "--payload-hex", "zz"], "bad --payload-hex"), (["127.0.0.1", "--timeout", "0"], "--timeout must"),
     (["127.0.0.1", "--timeout", "nan"], "--timeout must"), (["127.0.0.1", "--rate", "inf"], "--rate must"),
     (["127.0.0.1", "--retries", "1000"], "--retries must"),
     (["255.255.255.255"], "broadcast address"), (["224.0.0.1"], "multicast address"), (["ff02::1"], "multicast"),
     (["127.0.0.1", "--payload-hex", "00" * 65508], "does not fit"),
     (["127.0.0.1", "--payload-file", "/dev/zero"], "not a regular file"),
     (["127.0.0.1", "--source", "example.org"], "bad --source"), (["127.0.0.1", "--source", "10.0.0.0/8"], "at most 256"),
     (["127.0.0.1", "--source", "224.0.0.1"], "unicast"),
     (["127.0.0.1", "--bogus"], "unrecognized arguments"), ([], "required")],
)
def test_bad_probe_input_is_one_line_and_exit_2(ns: Netns, args: list[str], message: str) -> None:
    result = ns.udpkit("probe", *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_a_service_probe_names_the_protocol_that_answered(ns: Netns, services: dict[str, int]) -> None:
    result = probe(ns, "127.0.0.1", "-p", str(services["echo"]), "--service", "echo", "--json")
    (doc,) = json.loads(result.stdout)
    assert (doc["state"], doc["reason"], doc["reply"]["protocol"]) == ("open", "echo", "echo")
    assert result.returncode == 0


def test_the_library_call_returns_typed_results(services: dict[str, int], ns: Netns) -> None:
    code = ("import json, udpkit; r = udpkit.probe('127.0.0.1', [%d], service='echo', timeout=0.3);"
            "print(json.dumps([(x.state, x.reason, x.evidence.protocol) for x in r]))" % services["echo"])
    result = ns.run([sys.executable, "-c", code])
    assert json.loads(result.stdout) == [["open", "echo", "echo"]], result.stderr


def test_a_source_address_this_host_does_not_have_is_one_line_and_exit_1(ns: Netns) -> None:
    result = ns.udpkit("probe", "127.0.0.1", "-p", "9", "--source", "192.0.2.99")
    assert result.returncode == 1 and result.stderr == (
        "udpkit probe: cannot send from 192.0.2.99: Cannot assign requested address\n")
