"""Our NTP and DNS responders with the clients people really use (ntpdig, chronyd, dig, nmap -sV),
and our probes against a real chronyd. Port 123 because ntpdig has no port option: root, in a
namespace of the test's own."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Netns, free_port, stop

ZONE = Path(__file__).parent.parent / "data" / "example.zone"
pytestmark = pytest.mark.root


def serve(ns: Netns, *args: str) -> subprocess.Popen[str]:
    proc = ns.start([sys.executable, "-m", "udpkit", "listen", *args])
    assert proc.stderr is not None and "udpkit listen:" in proc.stderr.readline()
    return proc


@pytest.fixture
def ntp_server(ns: Netns) -> Iterator[None]:
    # Bound to each loopback address: the listener's receive-time fast path (the wildcard path is
    # what the tour and the nmap test use).
    proc = serve(ns, "127.0.0.1:123", "[::1]:123", "--respond", "ntp")
    try:
        yield
    finally:
        stop(proc)


@pytest.mark.peer("ntpdig")
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_ntpdig_accepts_our_server(ns: Netns, ntp_server: None, host: str) -> None:
    result = ns.run(["ntpdig", "-j", "-t", "2", host])
    doc = json.loads(result.stdout)
    assert doc["stratum"] == 10 and doc["leap"] == "no-leap"
    assert abs(doc["offset"]) < 0.001


@pytest.mark.peer("chronyd")
def test_chronyd_accepts_our_server_without_touching_the_clock(ns: Netns, ntp_server: None) -> None:
    result = ns.run(["chronyd", "-Q", "-f", "/dev/null", "server 127.0.0.1 iburst maxsamples 4"], timeout=60)
    assert result.returncode == 0
    assert "System clock wrong by" in result.stderr, result.stderr
    wrong = float(result.stderr.split("System clock wrong by ")[1].split()[0])
    assert abs(wrong) < 0.001


@pytest.mark.peer("chronyd", "ntpdig")
def test_our_probe_agrees_with_ntpdig_about_a_real_chronyd(ns: Netns, tmp_path: Path) -> None:
    conf = tmp_path / "chrony.conf"
    conf.write_text(f"port 123\ncmdport 0\nlocal stratum 10\nallow\npidfile {tmp_path}/pid\n")
    chronyd = ns.start(["chronyd", "-d", "-x", "-f", str(conf)])
    try:
        time.sleep(1.0)
        ours = json.loads(ns.udpkit("probe", "127.0.0.1", "-p", "123", "--service", "auto", "--json").stdout)[0]
        theirs = json.loads(ns.run(["ntpdig", "-j", "-t", "2", "127.0.0.1"]).stdout)
    finally:
        stop(chronyd)
    assert (ours["state"], ours["reason"], ours["reply"]["protocol"]) == ("open", "ntp", "ntp")
    detail = ours["reply"]["detail"]
    assert detail["stratum"] == theirs["stratum"] == 10
    assert abs(detail["offset_ms"] / 1000 - theirs["offset"]) < 0.001


@pytest.fixture(params=[[], ["--rate-limit", "0"]], ids=["default", "answers kept and given in C"])
def dns_server(ns: Netns, request: pytest.FixtureRequest) -> Iterator[int]:
    port = free_port()
    proc = serve(ns, f"127.0.0.1:{port}", f"[::1]:{port}", "--respond", "dns", "--zone", str(ZONE), *request.param)
    try:
        yield port
    finally:
        stop(proc)


def dig(ns: Netns, port: int, *args: str) -> str:
    return ns.run(["dig", "-p", str(port), "+norec", "+tries=1", "+time=2", "+ignore", *args]).stdout


@pytest.mark.peer("dig")
@pytest.mark.parametrize("server", ["@127.0.0.1", "@::1"])
def test_dig_gets_answers_nxdomain_and_refused(ns: Netns, dns_server: int, server: str) -> None:
    answer = dig(ns, dns_server, server, "www.example.test", "A")
    assert "status: NOERROR" in answer and "flags: qr aa;" in answer and "192.0.2.80" in answer
    assert "status: NXDOMAIN" in dig(ns, dns_server, server, "nope.example.test", "A")
    assert "status: REFUSED" in dig(ns, dns_server, server, "example.org", "A")
    mx = dig(ns, dns_server, server, "example.test", "MX")
    assert "10 mail.example.test." in mx


@pytest.mark.peer("dig")
@pytest.mark.parametrize("server", ["@127.0.0.1", "@::1"])
def test_dig_asking_again_gets_the_same_answer(ns: Netns, dns_server: int, server: str) -> None:
    """Without a cookie dig asks in the same bytes but the ID: from the second time on, the answer
    comes from the answers kept (in C, without a rate limit)."""
    def asked(name: str, kind: str) -> list[str]:
        time.sleep(0.1)  # within the default rate limit (20 a second, a burst of 5) of one client
        out = dig(ns, dns_server, server, "+nocookie", name, kind)
        return [line.split(", id:")[0] for line in out.splitlines()  # (the ID changes: the rest may not)
                if "status:" in line or (line and not line.startswith(";"))]

    for name, kind in [("www.example.test", "A"), ("alias.example.test", "AAAA"), ("nope.example.test", "A")]:
        first = asked(name, kind)
        assert first and all(asked(name, kind) == first for _ in range(3))
        assert ("NXDOMAIN" in first[0]) == (name == "nope.example.test")


@pytest.mark.peer("dig")
def test_a_big_answer_is_truncated_for_a_512_byte_client(ns: Netns, dns_server: int) -> None:
    small = dig(ns, dns_server, "@127.0.0.1", "+bufsize=512", "big.example.test", "TXT")
    assert "flags: qr aa tc" in small
    size = int(small.split("MSG SIZE  rcvd: ")[1].split()[0])
    assert size <= 512
    large = dig(ns, dns_server, "@127.0.0.1", "+bufsize=1232", "txt.example.test", "TXT")
    assert "hello from udpkit" in large and " tc" not in large.split("flags:")[1].split(";")[0]


@pytest.mark.peer("dig")
def test_our_dns_probe_reads_the_answer(ns: Netns, dns_server: int) -> None:
    doc = json.loads(ns.udpkit("probe", "::1", "-p", str(dns_server), "--service", "dns", "--query",
                               "www.example.test/AAAA", "--json").stdout)[0]
    assert (doc["state"], doc["reason"]) == ("open", "dns")
    assert doc["reply"]["detail"]["rcode"] == "NOERROR"
    assert any("2001:db8::80" in a for a in doc["reply"]["detail"]["answers"])


# Asks each server every question in turn (inside the test's namespace) and prints what it
# answered: rcode, the AA and TC flags, the answer section sorted, and the authority section of
# an answer without records (NODATA, NXDOMAIN: the SOA and the TTL of the denial).
ASK_EACH = """
import json, sys
import dns.flags, dns.message, dns.query, dns.rcode
ports, questions = [int(p) for p in sys.argv[1].split(",")], sys.argv[2:]
out = []
for question in questions:
    name, kind, edns = question.split()
    seen = []
    for port in ports:
        query = dns.message.make_query(name, kind, use_edns=None if edns == "-" else 0,
                                       payload=512 if edns == "-" else int(edns))
        query.flags &= ~dns.flags.RD
        reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
        seen.append([dns.rcode.to_text(reply.rcode()), bool(reply.flags & dns.flags.AA),
                     bool(reply.flags & dns.flags.TC), sorted(r.to_text().lower() for r in reply.answer),
                     [] if reply.answer else [r.to_text().lower() for r in reply.authority]])
    out.append([question, seen])
print(json.dumps(out))
"""

NSD_QUESTIONS = [
    f"{name} {kind} {edns}" for edns in ("-", "1232") for name, kind in [
        ("www.example.test", "A"), ("WWW.Example.TEST", "AAAA"), ("www.example.test", "MX"),
        ("alias.example.test", "AAAA"), ("example.test", "MX"), ("example.test", "NS"), ("example.test", "SOA"),
        ("example.test", "ANY"), ("nope.example.test", "A"), ("x.www.example.test", "A"), ("example.org", "A"),
        ("_ntp._udp.example.test", "SRV"), ("_udp.example.test", "SRV"), ("x._udp.example.test", "SRV"),
        ("wild.example.test", "A"), ("x.wild.example.test", "A"), ("a.B.wild.example.test", "TXT"),
        ("x.wild.example.test", "AAAA"), ("x.wild.example.test", "ANY"), ("*.wild.example.test", "A"),
        ("host.wild.example.test", "A"), ("host.wild.example.test", "TXT"), ("x.host.wild.example.test", "A"),
        ("ent.wild.example.test", "A"), ("x.ent.wild.example.test", "A"), ("leaf.ent.wild.example.test", "A"),
        ("x.cname.example.test", "A"), ("x.cname.example.test", "CNAME"), ("big.example.test", "TXT"),
        ("txt.example.test", "TXT"), ("ns1.example.test", "A"), ("mail.example.test", "TYPE65000"),
    ]
]


@pytest.mark.peer("nsd", "dig")
def test_answers_match_nsd_question_for_question(ns: Netns, tmp_path: Path) -> None:
    """NSD, an authoritative server, and udpkit serve the same zone; every question, asked twice
    (the second answer is udpkit's kept one), gets the same rcode, flags and answer section from
    both, and a negative answer the same SOA and TTL: wildcards, empty non-terminals, CNAMEs,
    ANY, truncation. (NSD also adds the zone's NS and glue to positive answers; udpkit answers
    minimally, as BIND's minimal-responses does, so those sections are compared only when empty.)"""
    zone = tmp_path / "example.zone"  # without the tests' out-of-zone PTR, which NSD refuses to load
    zone.write_text("".join(line for line in ZONE.read_text().splitlines(keepends=True) if "in-addr.arpa" not in line))
    nsd_port, our_port = free_port(), free_port()
    conf = tmp_path / "nsd.conf"
    conf.write_text(f"server:\n  ip-address: 127.0.0.1@{nsd_port}\n  server-count: 1\n  username: \"\"\n"
                    f"  zonesdir: \"{tmp_path}\"\n  database: \"\"\n  pidfile: \"{tmp_path}/nsd.pid\"\n"
                    f"  xfrdfile: \"{tmp_path}/xfrd.state\"\n  zonelistfile: \"{tmp_path}/zone.list\"\n"
                    f"  logfile: \"{tmp_path}/nsd.log\"\n  rrl-ratelimit: 0\n"
                    f"remote-control:\n  control-enable: no\nzone:\n  name: example.test\n  zonefile: example.zone\n")
    nsd = ns.start(["nsd", "-d", "-c", str(conf)])
    ours = serve(ns, f"127.0.0.1:{our_port}", "--respond", "dns", "--zone", str(ZONE), "--rate-limit", "0")
    try:
        for _ in range(50):  # NSD is ready when it answers (at most 5 s)
            ready = ns.run(["dig", "-p", str(nsd_port), "@127.0.0.1", "+tries=1", "+time=1", "example.test", "SOA"])
            if "status: NOERROR" in ready.stdout:
                break
            time.sleep(0.1)
        else:
            log = tmp_path / "nsd.log"
            pytest.fail(f"nsd did not answer: {log.read_text() if log.exists() else ''}")
        result = ns.run([sys.executable, "-c", ASK_EACH, f"{nsd_port},{our_port},{our_port}", *NSD_QUESTIONS],
                        check=True)
    finally:
        stop(ours)
        stop(nsd)
    answers = json.loads(result.stdout)
    assert len(answers) == len(NSD_QUESTIONS)
    for question, (theirs, first, again) in answers:
        assert first == theirs, question
        assert again == theirs, question


@pytest.mark.peer("nmap")
def test_nmap_version_detection_names_our_services(ns: Netns) -> None:
    procs = [serve(ns, "53", "--respond", "dns", "--zone", str(ZONE)), serve(ns, "123", "--respond", "ntp")]
    try:
        out = ns.run(["nmap", "-n", "-sU", "-sV", "-p", "53,123", "127.0.0.1"], timeout=300).stdout
    finally:
        for proc in procs:
            stop(proc)
    lines = {line.split()[0]: line.split() for line in out.splitlines() if "/udp" in line}
    assert lines["53/udp"][1:3] == ["open", "domain"]
    assert lines["123/udp"][1:3] == ["open", "ntp"]


def test_service_identification_finds_ntp_and_dns_on_unusual_ports(ns: Netns) -> None:
    ntp_port, dns_port, silent_port = free_port(), free_port(), free_port()
    procs = [serve(ns, f"127.0.0.1:{ntp_port}", "--respond", "ntp"),
             serve(ns, f"127.0.0.1:{dns_port}", "--respond", "dns", "--zone", str(ZONE)),
             serve(ns, f"127.0.0.1:{silent_port}")]
    try:
        result = ns.udpkit("probe", "127.0.0.1", "-p", f"{ntp_port},{dns_port},{silent_port}", "--service", "all",
                           "--timeout", "0.3", "--json")
    finally:
        for proc in procs:
            stop(proc)
    docs = {doc["port"]: doc for doc in json.loads(result.stdout)}
    assert (docs[ntp_port]["state"], docs[ntp_port]["reason"]) == ("open", "ntp")
    assert (docs[dns_port]["state"], docs[dns_port]["reason"]) == ("open", "dns")
    assert docs[silent_port]["state"] == "open|filtered"


def test_sync_state_reports_the_host_clocks_real_state(ns: Netns) -> None:
    from udpkit.net.clock import clock_state

    port = free_port()
    proc = serve(ns, f"127.0.0.1:{port}", "--respond", "ntp", "--sync-state")
    try:
        doc = json.loads(ns.udpkit("probe", "127.0.0.1", "-p", str(port), "--service", "ntp", "--json").stdout)[0]
    finally:
        stop(proc)
    state = clock_state()
    assert state is not None
    detail = doc["reply"]["detail"]
    expected = (0, 10) if state.synchronized else (3, 16)
    assert (detail["leap"], detail["stratum"]) == expected


def test_what_the_server_reports_is_configurable(ns: Netns) -> None:
    port = free_port()
    proc = serve(ns, f"127.0.0.1:{port}", "--respond", "ntp", "--stratum", "3", "--refid", "GPS", "--leap", "1",
                 "--root-delay", "0.25", "--root-dispersion", "0.5")
    try:
        doc = json.loads(ns.udpkit("probe", "127.0.0.1", "-p", str(port), "--service", "ntp", "--json").stdout)[0]
    finally:
        stop(proc)
    detail = doc["reply"]["detail"]
    assert (detail["stratum"], detail["refid"], detail["leap"]) == (3, "GPS", 1)
    assert (detail["root_delay_ms"], detail["root_dispersion_ms"]) == (250.0, 500.0)


@pytest.mark.root
def test_default_flags_find_dns_on_53_and_ntp_on_123_open(ns: Netns) -> None:
    """Without --service, the ports the catalogue knows get a real request (nmap's habit), so a DNS
    and an NTP server are `open` with their protocol, not `open|filtered` for an empty datagram."""
    zone = str(Path(__file__).parent.parent / "data" / "example.zone")
    dns_proc = serve(ns, "127.0.0.1:53", "--respond", "dns", "--zone", zone)
    ntp_proc = serve(ns, "127.0.0.1:123", "--respond", "ntp")
    try:
        docs = json.loads(ns.udpkit("probe", "127.0.0.1", "-p", "53,123", "--json").stdout)
        assert [(d["port"], d["state"], d["reply"]["protocol"]) for d in docs] == [(53, "open", "dns"),
                                                                                  (123, "open", "ntp")]
        silent = json.loads(ns.udpkit("probe", "127.0.0.1", "-p", "53", "--payload", "x", "--json",
                                      "--timeout", "0.3", "--retries", "0").stdout)
        assert silent[0]["reply"] is None or silent[0]["reply"]["protocol"] is None  # --payload means none
    finally:
        stop(dns_proc)
        stop(ntp_proc)
