"""``udpkit discover`` on a link with real responders: avahi-daemon (mDNS), wsdd (WS-Discovery) and
chronyd (an NTP broadcast server) where Debian has them, and ``lan_responders.py`` for SSDP, NetBIOS
and an SNMP agent that answers broadcasts (see that file for why not miniupnpd, nmbd or snmpd).

Two hosts on a veth pair: the responder and the asker. A third test runs a forger on the responder's
host (a raw socket "from" the responder's address) sending forged answers to every port the asker may
use, for the whole discovery: the verified services must still show the real responder's identity.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import end_group, need_root, need_tool, start_group
from tests.integration.test_hostile import PEER, Host, _sh

HERE = Path(__file__).parent
RESPONDER, ASKER = "10.95.0.1", "10.95.0.2"


class Link:
    def __init__(self, responder: Host, asker: Host, tmp: Path) -> None:
        self.responder, self.asker, self.tmp = responder, asker, tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], *, private_run: str | None = None) -> subprocess.Popen[bytes]:
        """A responder process in the responder's namespace (``private_run``: with that directory of
        /run made private to it, for daemons whose pid file path is fixed)."""
        if private_run:
            # a machine where the daemon never ran has no such directory: then its parent is made
            # private too and the directory made there, so nothing is left behind in the real /run
            parent = str(Path(private_run).parent)
            script = (f"{{ [ -d {private_run} ] || {{ mount -t tmpfs tmpfs {parent} && mkdir {private_run}; }}; }} && "
                      f"mount -t tmpfs tmpfs {private_run} && exec \"$@\"")
            argv = ["unshare", "--mount", "sh", "-c", script, "sh", *argv]
        log = open(self.tmp / f"{Path(argv[0]).name}-{len(self.procs)}.log", "wb")  # noqa: SIM115 - closed by the child's exit
        proc = start_group(self.responder.argv(argv), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def discover(self, *args: str, timeout: float = 60) -> tuple[list[dict[str, object]], str]:
        result = self.asker.run(sys.executable, "-m", "udpkit", "discover", "-i", self.asker.iface, "--json", *args,
                                timeout=timeout)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout), result.stderr


@pytest.fixture
def link(tmp_path: Path) -> Iterator[Link]:
    need_root()
    need_tool("ip", "avahi-daemon", "wsdd", "chronyd", "unshare")
    tag = f"{os.getpid() % 100000}"
    responder, asker = Host(f"udpkit-dr{tag}", f"dr{tag}"), Host(f"udpkit-da{tag}", f"da{tag}")
    for host in (responder, asker):
        _sh("ip", "netns", "add", host.name)
        for key in ("all", "default"):
            _sh("ip", "netns", "exec", host.name, "sysctl", "-qw", f"net.ipv6.conf.{key}.accept_dad=0")
    link = Link(responder, asker, tmp_path)
    try:
        _sh("ip", "link", "add", responder.iface, "netns", responder.name, "type", "veth", "peer", "name", asker.iface,
            "netns", asker.name)
        for host, v4 in ((responder, RESPONDER), (asker, ASKER)):
            _sh("ip", "-n", host.name, "link", "set", "lo", "up")
            _sh("ip", "-n", host.name, "addr", "add", f"{v4}/24", "brd", "+", "dev", host.iface)
            _sh("ip", "-n", host.name, "link", "set", host.iface, "up")
        (tmp_path / "avahi.conf").write_text(
            f"[server]\nhost-name=udpkit-lab\nuse-ipv4=yes\nuse-ipv6=yes\nallow-interfaces={responder.iface}\n"
            "enable-dbus=no\n[wide-area]\nenable-wide-area=no\n[publish]\npublish-workstation=yes\n")
        (tmp_path / "chrony.conf").write_text(
            f"local stratum 3\nallow all\ncmdport 0\npidfile {tmp_path}/chronyd.pid\nbroadcast 1 10.95.0.255\n")
        link.start(["avahi-daemon", "--no-drop-root", "--no-chroot", "--no-rlimits", "-f", str(tmp_path / "avahi.conf")],
                   private_run="/run/avahi-daemon")
        link.start(["wsdd", "-i", responder.iface, "-n", "UDPKITLAB"])
        link.start(["chronyd", "-d", "-x", "-f", str(tmp_path / "chrony.conf")])
        stand_in = link.start([sys.executable, str(HERE / "lan_responders.py"), responder.iface, "labhost"])
        deadline = time.monotonic() + 15
        while not all(f":{port} " in responder.run("ss", "-uanH").stdout for port in (5353, 3702, 123, 1900, 137, 161)):
            assert time.monotonic() < deadline, "the responders did not start: " + ", ".join(
                f.read_text() for f in tmp_path.glob("*.log"))
            assert stand_in.poll() is None
            time.sleep(0.1)
        time.sleep(1.0)  # avahi announces itself before it answers
        yield link
    finally:
        for proc in link.procs:
            end_group(proc)
        for host in (responder, asker):
            subprocess.run(["ip", "netns", "delete", host.name], capture_output=True)


def by_service(found: list[dict[str, object]]) -> dict[tuple[str, str], dict[str, object]]:
    return {(str(f["host"]).partition("%")[0], str(f["service"])): f for f in found}


def test_every_service_on_the_link_is_found_with_who_answered(link: Link) -> None:
    found, summary = link.discover()
    got = by_service(found)
    v4 = {service for host, service in got if host == RESPONDER}
    assert v4 == {"ssdp", "mdns", "wsd", "netbios-ns", "snmp", "ntp"}, found
    assert "labhost/1.0" in str(got[(RESPONDER, "ssdp")]["identity"])
    assert got[(RESPONDER, "ssdp")]["verified"] is False  # SSDP answers carry nothing of the request
    assert "_workstation._tcp" in str(got[(RESPONDER, "mdns")]["identity"])  # avahi's own record
    assert "pub:Computer" in str(got[(RESPONDER, "wsd")]["identity"]) and got[(RESPONDER, "wsd")]["verified"] is True
    assert "LABHOST<00>" in str(got[(RESPONDER, "netbios-ns")]["identity"])
    assert "labhost snmp responder" in str(got[(RESPONDER, "snmp")]["identity"])
    assert got[(RESPONDER, "ntp")]["detail"]["stratum"] == 3  # type: ignore[index]  # chronyd's broadcasts
    # IPv6: the link-local address answers mDNS and WS-Discovery too, named with its interface
    v6 = [f for f in found if str(f["host"]).startswith("fe80::")]
    assert {f["service"] for f in v6} == {"mdns", "wsd"}
    assert all(str(f["host"]).endswith(f"%{link.asker.iface}") for f in v6)
    assert "answers from 2 hosts" in summary


def test_the_table_and_the_choices(link: Link) -> None:
    table = link.asker.run(sys.executable, "-m", "udpkit", "discover", "-i", link.asker.iface, "-4",
                           "--service", "mdns,wsd", "--timeout", "1.5")
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["HOST", "SERVICE", "PORT", "VERIFIED", "IDENTITY"]
    assert {line.split()[1] for line in lines[1:]} == {"mdns", "wsd"}
    assert all(line.startswith(RESPONDER) for line in lines[1:])
    for args, message in ((["--service", "bogus"], "known services are"), (["-i", "nosuchif0"], "no interface named"),
                          (["--timeout", "0"], "--timeout")):
        bad = link.asker.run(sys.executable, "-m", "udpkit", "discover", *args)
        assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_forged_answers_do_not_change_a_verified_identity(link: Link) -> None:
    """A raw socket on the responder's host sends, "from" the responder's WS-Discovery, SNMP and NTP
    ports, forged answers to every port the asker may be using, for the whole discovery."""
    forged_wsd = (b"<soap:Envelope><soap:Header><wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/"
                  b"ProbeMatches</wsa:Action><wsa:RelatesTo>urn:uuid:00000000-0000-0000-0000-000000000000"
                  b"</wsa:RelatesTo></soap:Header><soap:Body><wsa:Address>urn:uuid:forged</wsa:Address>"
                  b"<wsd:Types>forged:Device</wsd:Types></soap:Body></soap:Envelope>")
    forger = start_group(link.responder.argv([sys.executable, PEER, "sweep", RESPONDER, ASKER, "--reply-from",
                                              "3702,161,123", "--payload", forged_wsd.hex(), "--seconds", "4"]),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        found, _ = link.discover("-4", "--timeout", "2")
    finally:
        end_group(forger)
    got = by_service(found)
    assert "forged" not in json.dumps(found)
    assert "pub:Computer" in str(got[(RESPONDER, "wsd")]["identity"])
    assert "labhost snmp responder" in str(got[(RESPONDER, "snmp")]["identity"])
