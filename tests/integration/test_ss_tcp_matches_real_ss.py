"""``udpkit ss`` lists TCP too: ``-tulpn``, ``-ta``, ``-s``, ``-f inet`` with the Netid column, and
TCP's timers (``-o``), ``-e``, ``-m`` and ``-i``, byte for byte as iproute2 ss 6.1 on the same sockets.

Each test runs in a namespace of its own holding only the UDP and TCP zoos, so whole outputs are
compared. The only fields rewritten before comparing are those the kernel changes between the two
reads: the milliseconds since the last send/receive/ack, the time left on a timer (padding that
follows them is not compared either), and ``-s``'s "Total", which counts every socket of the
namespace, including the netlink socket of the command run just before while the kernel frees it
(``test_the_summary_counts_what_the_kernel_counts`` compares it, read again until quiet).
"""

from __future__ import annotations

import re
import time

import pytest

from tests.integration.conftest import Netns

pytestmark = [pytest.mark.peer("ss"), pytest.mark.root]

FLAG_SETS = [
    ["-t"], ["-ta"], ["-tan"], ["-tl"], ["-tln"], ["-tuln"], ["-tulpn"], ["-tua"], ["-tuan"], ["-tuanp"],
    ["-tan", "state", "established"], ["-tn", "state", "close-wait"], ["-ta", "exclude", "listening"],
    ["-tn", "state", "time-wait"], ["-tn", "state", "connected"], ["-tn", "state", "synchronized"],
    ["-taoe"], ["-tanm"], ["-tanpem"], ["-taO", "-em"], ["-tai"], ["-tain"], ["-taiom"], ["-taiO"],
    ["-tano", "state", "time-wait"], ["-tain", "state", "time-wait"],
    ["-f", "inet", "-an"], ["-f", "inet6", "-an"], ["-4", "-an"], ["-6", "-ln"], ["-4", "-ln"],
    ["-A", "inet", "-an"], ["-A", "tcp,udp", "-ln"], ["-A", "tcp", "-an"], ["--tcp", "--udp", "--listening"],
    ["-s"], ["-uas"], ["-tas"], ["-tanH"], ["-tlnp", "-4"], ["-tan", "--cgroup"], ["-6", "-tan"],
]

_VOLATILE = [
    (re.compile(r"last(snd|rcv|ack):\d+"), r"last\1:N"),
    (re.compile(r"timer:\((\w+),[^,]*,"), r"timer:(\1,T,"),
    (re.compile(r"^Total: \d+$", re.M), "Total: N"),
]


def normalise(text: str) -> list[str]:
    """The lines with volatile values replaced; where there were any, without the padding after them."""
    changed = text
    for pattern, repl in _VOLATILE:
        changed = pattern.sub(repl, changed)
    if changed == text:
        return text.splitlines()
    return [line.rstrip() for line in changed.splitlines()]


def compare(ns: Netns, args: list[str]) -> None:
    real = ns.ss(*args)
    ours = ns.udpkit("ss", *args)
    assert ours.returncode == real.returncode == 0, ours.stderr + real.stderr
    assert ours.stderr == ""
    assert normalise(ours.stdout) == normalise(real.stdout)


@pytest.mark.parametrize("args", FLAG_SETS, ids=" ".join)
def test_tcp_listings_match_real_ss(ns: Netns, zoo: dict[str, object], tcp_zoo: dict[str, object],
                                    args: list[str]) -> None:
    compare(ns, args)


def test_tcp_filters_match_real_ss(ns: Netns, zoo: dict[str, object], tcp_zoo: dict[str, object]) -> None:
    port = tcp_zoo["tcp_v4_loopback"]["port"]  # type: ignore[index]
    v6 = tcp_zoo["tcp_v6_loopback"]["port"]  # type: ignore[index]
    for expression in ([f"sport = :{port}"], [f"dport = :{port}"], [f"sport = :{port} or dport = :{v6}"],
                       ["src [::1]"], ["dst 127.0.0.1"], ["state", "established", f"dport = :{port}"]):
        compare(ns, ["-tanp", *expression])
        compare(ns, ["-tuan", *expression])


def test_the_summary_counts_what_the_kernel_counts(ns: Netns, tcp_zoo: dict[str, object]) -> None:
    for _ in range(10):  # sockets of the commands just run are freed a moment later
        time.sleep(0.1)
        before, ours, after = ns.ss("-s").stdout, ns.udpkit("ss", "-s").stdout, ns.ss("-s").stdout
        if before == ours == after:
            break
    assert ours == after
    assert "timewait 1)" in ours  # the zoo's TIME-WAIT entry
    assert ours.startswith("Total: ")


def test_other_socket_kinds_are_refused_by_name(ns: Netns) -> None:
    for flag, kind in (("-x", "Unix"), ("-w", "raw"), ("-S", "SCTP"), ("--packet", "packet")):
        result = ns.udpkit("ss", flag)
        assert result.returncode == 2
        assert f"not {kind}" in result.stderr
        assert len(result.stderr.splitlines()) == 1
    for flag in ("-K", "-E", "-T"):
        result = ns.udpkit("ss", flag)
        assert result.returncode == 2 and "not supported" in result.stderr
