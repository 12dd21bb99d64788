"""``udpkit ss`` against the real iproute2 ``ss`` on the same sockets: same lines, same fields.

As root each test runs in its own network namespace, so the outputs must be identical byte for
byte; as a normal user only the lines of our own sockets are compared, field by field.
"""

from __future__ import annotations

import os
import sys

import pytest

from tests.integration.conftest import Netns, stop

pytestmark = pytest.mark.peer("ss")

FLAG_SETS = [
    ["-uln"], ["-4", "-uln"], ["-6", "-uln"], ["-u"], ["-ua"], ["-uan"], ["-ul"], ["-uanp"],
    ["-uane"], ["-uanm"], ["-uanpem"], ["-uaH"], ["-uanO", "-em"], ["-ulnH"], ["-uanp", "-4"],
    ["-f", "inet6", "-ua"], ["-A", "udp", "-an"], ["--all", "--numeric", "--udp", "--processes"],
    ["-u", "state", "established"], ["-ua", "exclude", "established"], ["-un", "state", "all"],
    ["-uan", "--cgroup"],
]


def compare(ns: Netns, zoo: dict[str, object], args: list[str]) -> None:
    real = ns.ss(*args)
    ours = ns.udpkit("ss", *args)
    assert ours.returncode == real.returncode == 0, ours.stderr + real.stderr
    assert ours.stderr == ""
    if ns.name is not None:
        # Only our sockets exist in this namespace: the whole output must be identical.
        assert ours.stdout.splitlines() == real.stdout.splitlines()
        return
    # In the shared namespace other programs' sockets come and go between the two reads: compare
    # only the lines of our zoo's sockets (by its pid with -p, else by its ports).
    ports = {str(v["port"]) for k, v in zoo.items() if not k.startswith("_")}  # type: ignore[index]
    owner = f"pid={zoo['_pid']},"

    def ours_only(text: str) -> list[list[str]]:
        if owner in text:
            return [line.split() for line in text.splitlines() if owner in line]
        return [line.split() for line in text.splitlines() if any(f":{p} " in line + " " for p in ports)]

    assert ours_only(ours.stdout) == ours_only(real.stdout)


@pytest.mark.parametrize("args", FLAG_SETS, ids=" ".join)
def test_flags_match_real_ss(ns: Netns, zoo: dict[str, object], args: list[str]) -> None:
    compare(ns, zoo, args)


def filters(zoo: dict[str, object]) -> list[list[str]]:
    a = zoo["v4_loopback"]["port"]  # type: ignore[index]
    b = zoo["v6_loopback"]["port"]  # type: ignore[index]
    c = zoo["v6_dual_wildcard"]["port"]  # type: ignore[index]
    return [
        [f"sport = :{a}"], ["sport", "==", f":{b}"], [f"sport eq :{c}"], [f"dport = :{a}"],
        [f"dport != :{a}"], [f"sport ne :{a}"], [f"sport neq {a}"], [f"sport > :{a}"], [f"sport gt :{a}"],
        [f"sport < :{b}"], [f"sport lt :{b}"], [f"sport >= :{a}"], [f"sport ge :{a}"], [f"sport <= :{a}"],
        [f"sport le :{a}"], ["dst 127.0.0.1"], ["dst = 127.0.0.1"], ["src [::1]"], [f"src [::1]:{b}"],
        ["src 127.0.0.0/8"], ["src 127.0.0.1/32"], [f"src 127.0.0.1:{a}"], ["src ::/0"], ["dst [::ffff:127.0.0.1]"],
        ["not src [::1]"], ["!", "dport", "=", ":0"], [f"( sport = :{a} or sport = :{b} ) and dport = :0"],
        [f"sport = :{a} or sport = :{c} and dport = :{a}"], [f"dport = :{a} and sport = :{c} or sport = :{b}"],
        [f"sport = :{a} dport = :0"], [f"sport = :{a} || sport = :{b}"], [f"sport = :{a} && dport = :0"],
        [f"src *:{c}"], ["src localhost"], ["dport = :domain"], ["autobound"], [f"sport = :{a} or autobound"],
        ["dev = lo"], ["dev != lo"], ["dev = 1"], ["fwmark = 0"], ["fwmark = 0x0/0x0"],
        ["state", "established", f"sport > :{a}"], ["src inet6:[::1]"], ["dst inet:127.0.0.1"],
    ]


def test_filters_match_real_ss(ns: Netns, zoo: dict[str, object]) -> None:
    for expression in filters(zoo):
        if expression[0].startswith("fwmark") and os.geteuid() != 0:
            # Without CAP_NET_ADMIN the kernel refuses ss's mark bytecode and ss silently falls back to
            # /proc/net/udp, losing IPV6_V6ONLY (it prints "*:*" for a v6-only socket's peer). udpkit
            # filters in user space and keeps the kernel's answer, so the two differ on purpose here.
            continue
        compare(ns, zoo, ["-uanp", *expression])


@pytest.mark.root
def test_device_bound_sockets_show_the_interface(ns: Netns, zoo: dict[str, object]) -> None:
    out = ns.udpkit("ss", "-uln").stdout
    assert f"0.0.0.0%lo:{zoo['v4_device']['port']}" in out  # type: ignore[index]
    assert f"*%lo:{zoo['v6_device']['port']}" in out  # type: ignore[index]


def test_service_names_without_n(ns: Netns) -> None:
    """Without -n, well-known ports are named from the services database, as ss does (port 53: domain)."""
    code = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "s.connect(('127.0.0.1',53))\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)")
    proc = ns.start([sys.executable, "-c", code])
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        ours = ns.udpkit("ss", "-u", f"sport = :{port}").stdout
        real = ns.ss("-u", f"sport = :{port}").stdout
        assert "127.0.0.1:domain" in ours
        assert ours.split() == real.split()
    finally:
        stop(proc)
