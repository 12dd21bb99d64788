"""The prober across a router: only the target can say its port is closed. A router that rejects
for the target with a port unreachable (an nftables ``reject`` in its forward chain, as firewalls
do) is reported as ``filtered``, with the router as the sender — never as ``closed``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import need_root, need_tool

CLIENT, ROUTER_IN, ROUTER_OUT, SERVER = "10.96.1.2", "10.96.1.1", "10.96.2.1", "10.96.2.2"


def _sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)


@pytest.fixture
def routed() -> Iterator[tuple[str, str, str]]:
    """client — router — server, each a namespace; the router forwards between two veth pairs."""
    need_root()
    need_tool("ip", "nft")
    tag = f"{os.getpid() % 100000}"
    client, router, server = (f"udpkit-r{part}{tag}" for part in ("c", "r", "s"))
    for name in (client, router, server):
        _sh("ip", "netns", "add", name)
    try:
        _sh("ip", "link", "add", f"rc{tag}", "netns", client, "type", "veth", "peer", "name", f"ra{tag}", "netns", router)
        _sh("ip", "link", "add", f"rb{tag}", "netns", router, "type", "veth", "peer", "name", f"rs{tag}", "netns", server)
        for name, dev, address in ((client, f"rc{tag}", CLIENT), (router, f"ra{tag}", ROUTER_IN),
                                   (router, f"rb{tag}", ROUTER_OUT), (server, f"rs{tag}", SERVER)):
            _sh("ip", "-n", name, "addr", "add", f"{address}/24", "dev", dev)
            _sh("ip", "-n", name, "link", "set", dev, "up")
            _sh("ip", "-n", name, "link", "set", "lo", "up")
        _sh("ip", "-n", client, "route", "add", "default", "via", ROUTER_IN)
        _sh("ip", "-n", server, "route", "add", "default", "via", ROUTER_OUT)
        _sh("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        rules = ("table ip fw {\n chain forward {\n  type filter hook forward priority 0;\n"
                 "  udp dport 9998 reject with icmp type port-unreachable\n }\n}\n")
        applied = subprocess.run(["ip", "netns", "exec", router, "nft", "-f", "-"], input=rules, text=True,
                                 capture_output=True)
        assert applied.returncode == 0, applied.stderr
        yield client, router, server
    finally:
        for name in (client, router, server):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def test_a_routers_port_unreachable_is_filtered_with_the_router_as_sender(routed: tuple[str, str, str]) -> None:
    client, _router, _server = routed
    result = subprocess.run(["ip", "netns", "exec", client, sys.executable, "-m", "udpkit", "probe", SERVER,
                             "-p", "9997,9998", "--json", "--timeout", "0.5", "--retries", "0"],
                            capture_output=True, text=True, timeout=60)
    docs = {doc["port"]: doc for doc in json.loads(result.stdout)}
    assert (docs[9998]["state"], docs[9998]["reason"]) == ("filtered", "port-unreachable-from-another-host")
    assert docs[9998]["icmp"] == {"type": 3, "code": 3, "from": ROUTER_IN}
    assert (docs[9997]["state"], docs[9997]["icmp"]["from"]) == ("closed", SERVER)  # the server's own answer
