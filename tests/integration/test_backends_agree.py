"""The netlink and /proc backends report the same sockets, and the /proc one matches ss's own /proc mode."""

from __future__ import annotations

import json
import os
import sys

import pytest

from tests.integration.conftest import Netns


LIST_BOTH = """
import json
from udpkit.inventory import list_udp_sockets
out = {}
for backend in ("netlink", "proc"):
    socks = list_udp_sockets(backend=backend, processes=True)
    out[backend] = sorted([[int(s.family), int(s.state), s.recv_q, s.send_q, s.local_ip, s.local_port,
                            s.peer_ip, s.peer_port, s.uid, s.inode, s.drops,
                            [list(p) for p in s.processes]] for s in socks])
print(json.dumps(out))
"""


def test_netlink_and_proc_records_agree(ns: Netns, zoo: dict[str, object]) -> None:
    result = ns.run([sys.executable, "-c", LIST_BOTH], check=True)
    both = json.loads(result.stdout)
    ours = {str(v["port"]) for k, v in zoo.items() if not k.startswith("_")}  # type: ignore[index]

    def mine(rows: list[list[object]]) -> list[list[object]]:
        return [r for r in rows if str(r[5]) in ours] if ns.name is None else rows

    netlink, proc = mine(both["netlink"]), mine(both["proc"])
    assert len(netlink) >= 9  # zoo.py's sockets (11 with the device-bound ones, as root)
    assert netlink == proc


@pytest.mark.peer("ss")
def test_proc_backend_matches_ss_proc_mode(ns: Netns, zoo: dict[str, object]) -> None:
    """``PROC_ROOT`` makes ss read /proc/net/udp too; then both print the same table."""
    env = dict(os.environ, PROC_ROOT="/proc")
    real = ns.ss("-uanp", env=env)
    ours = ns.udpkit("ss", "-uanp", "--backend", "proc")
    if ns.name is None:
        pytest.skip("needs a namespace of our own: other sockets come and go between the two reads")
    assert ours.stdout == real.stdout


def test_owners_agree_with_psutil(ns: Netns, zoo: dict[str, object]) -> None:
    pytest.importorskip("psutil")
    pid = zoo["_pid"]
    code = (
        "import json; from udpkit.inventory import list_udp_sockets\n"
        f"print(json.dumps(sorted([p.fd, s.local_port] for s in list_udp_sockets(processes=True) "
        f"for p in s.processes if p.pid == {pid})))"
    )
    ours = json.loads(ns.run([sys.executable, "-c", code], check=True).stdout)
    # psutil reads /proc/net/udp of its own namespace: ask it from inside ours.
    psutil_code = (
        "import json, psutil\n"
        f"print(json.dumps(sorted([c.fd, c.laddr.port] for c in psutil.Process({pid}).net_connections(kind='udp'))))"
    )
    theirs = json.loads(ns.run([sys.executable, "-c", psutil_code], check=True).stdout)
    # psutil keeps one descriptor per socket inode; ss (and we) list every descriptor, so the
    # socket zoo.py dup()ed shows under both of its fds here and under one in psutil.
    dup = [zoo["_dup_fd"], zoo["v6_dual_wildcard"]["port"]]  # type: ignore[index]
    assert dup in ours
    assert {tuple(x) for x in theirs} <= {tuple(x) for x in ours}
    assert len(ours) == len(theirs) + 1
