#!/usr/bin/env python3
"""Benchmark: ``udpkit discover`` against nmap's discovery scripts, on a bridge with ten responders.

Not a test: it prints times and what each tool found, side by side in one run. Needs root: it builds
eleven network namespaces — ten responder hosts on a bridge, each running avahi-daemon (mDNS), wsdd
(WS-Discovery), chronyd (NTP broadcast server) and ``tests/integration/lan_responders.py`` (SSDP,
NetBIOS, an SNMP agent that answers broadcasts) — and the asker, and removes them at the end.

udpkit asks all six protocols at once (``udpkit discover``, 2 s); nmap needs a script or a scan per
protocol, run one after another as a user would: ``broadcast-upnp-info``, ``broadcast-dns-service-
discovery``, ``broadcast-wsdd-discover``, ``broadcast-netbios-master-browser``, then ``-sU -p161
--script snmp-sysdescr`` and ``-sU -p123 --script ntp-info`` over the /24 (nmap has no broadcast
script for SNMP or NTP).

    sudo .venv/bin/python bench/discover_bench.py [--runs 3] [--busy [KIND]]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _load import add_busy_option, describe, start_load, stop_load

HERE = Path(__file__).resolve().parent
RESPONDERS = HERE.parent / "tests" / "integration" / "lan_responders.py"
HOSTS = 10
SUBNET = "10.94.0"
NMAP_STEPS = [
    ["--script", "broadcast-upnp-info"],
    ["--script", "broadcast-dns-service-discovery"],
    ["--script", "broadcast-wsdd-discover"],
    ["--script", "broadcast-netbios-master-browser"],
    ["-sU", "-p161", "--script", "snmp-sysdescr", f"{SUBNET}.0/24"],
    ["-sU", "-p123", "--script", "ntp-info", f"{SUBNET}.0/24"],
]


def sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)


def build(tag: str, tmp: Path) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    asker = f"udpkit-bda{tag}"
    names = [asker] + [f"udpkit-bdr{tag}-{i}" for i in range(HOSTS)]
    for name in names:
        sh("ip", "netns", "add", name)
        sh("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")
        sh("ip", "-n", name, "link", "set", "lo", "up")
    sh("ip", "-n", asker, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", asker, "addr", "add", f"{SUBNET}.254/24", "brd", "+", "dev", "br0")
    sh("ip", "-n", asker, "link", "set", "br0", "up")
    procs: list[subprocess.Popen[bytes]] = []
    for i, name in enumerate(names[1:]):
        iface = f"r{i}"
        sh("ip", "link", "add", iface, "netns", name, "type", "veth", "peer", "name", f"p{i}", "netns", asker)
        sh("ip", "-n", asker, "link", "set", f"p{i}", "master", "br0")
        sh("ip", "-n", asker, "link", "set", f"p{i}", "up")
        sh("ip", "-n", name, "addr", "add", f"{SUBNET}.{i + 1}/24", "brd", "+", "dev", iface)
        sh("ip", "-n", name, "link", "set", iface, "up")
        conf = tmp / f"h{i}"
        conf.mkdir()
        (conf / "avahi.conf").write_text(f"[server]\nhost-name=lab{i}\nallow-interfaces={iface}\nenable-dbus=no\n"
                                         "[wide-area]\nenable-wide-area=no\n[publish]\npublish-workstation=yes\n")
        (conf / "chrony.conf").write_text(f"local stratum {2 + i % 3}\nallow all\ncmdport 0\npidfile {conf}/pid\n"
                                          f"broadcast 1 {SUBNET}.255\n")
        ns = ["ip", "netns", "exec", name]
        for argv in (["unshare", "--mount", "sh", "-c", "mount -t tmpfs tmpfs /run/avahi-daemon && exec \"$@\"", "sh",
                      "avahi-daemon", "--no-drop-root", "--no-chroot", "--no-rlimits", "-f", str(conf / "avahi.conf")],
                     ["wsdd", "-i", iface, "-n", f"LAB{i}"],
                     ["chronyd", "-d", "-x", "-f", str(conf / "chrony.conf")],
                     [sys.executable, str(RESPONDERS), iface, f"lab{i}"]):
            procs.append(subprocess.Popen([*ns, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
    return procs, names


def run_udpkit(asker: str, udpkit: str) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    out = subprocess.run(["ip", "netns", "exec", asker, udpkit, "discover", "-i", "br0", "--json"], capture_output=True,
                         text=True, check=True).stdout
    took = time.perf_counter() - started
    counts: dict[str, int] = {}
    for found in json.loads(out):
        if not str(found["host"]).startswith("fe80"):
            counts[found["service"]] = counts.get(found["service"], 0) + 1
    return took, counts


def run_nmap(asker: str) -> tuple[float, list[tuple[str, float, int]]]:
    steps = []
    total = 0.0
    for step in NMAP_STEPS:
        argv = ["ip", "netns", "exec", asker, "nmap", "-e", "br0", *step]
        started = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True).stdout
        took = time.perf_counter() - started
        total += took
        hosts = len(set(re.findall(rf"{re.escape(SUBNET)}\.(\d+)", out)) - {"254", "255", "0"})
        if "sysdescr" in " ".join(step) or "ntp-info" in " ".join(step):
            script = step[-2]
            hosts = len(re.findall(rf"\|[_ ]?{script}:", out))
        steps.append((" ".join(step), took, hosts))
    return total, steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    add_busy_option(parser)
    parser.add_argument("--udpkit", default=str(Path(sys.executable).with_name("udpkit")))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("discover_bench: needs root (network namespaces)", file=sys.stderr)
        return 1
    for tool in ("ip", "nmap", "avahi-daemon", "wsdd", "chronyd", "unshare"):
        if shutil.which(tool) is None:
            print(f"discover_bench: needs {tool}", file=sys.stderr)
            return 1
    tag = str(os.getpid() % 100000)
    tmp = Path(f"/tmp/udpkit-discover-bench-{tag}")
    tmp.mkdir()
    busy = start_load(args.busy)
    procs, names = [], []
    try:
        procs, names = build(tag, tmp)
        time.sleep(3)  # avahi announces itself before it answers; chronyd's first broadcast
        print(f"{HOSTS} responder hosts x 6 services; {args.runs} runs{describe(args.busy)}\n")
        for run in range(args.runs):
            took, counts = run_udpkit(names[0], args.udpkit)
            complete = all(counts.get(s, 0) == HOSTS for s in ("ssdp", "mdns", "wsd", "netbios-ns", "snmp", "ntp"))
            total, steps = run_nmap(names[0])
            print(f"run {run + 1}: udpkit discover {took:.2f} s, {sum(counts.values())} answers "
                  f"({'complete' if complete else counts}); nmap, one after another: {total:.1f} s "
                  f"({total / took:.1f}x)")
            for label, step_took, hosts in steps:
                print(f"         nmap {label:<58} {step_took:6.1f} s  {hosts:2d} hosts")
    finally:
        stop_load(busy)
        for proc in procs:
            try:
                os.killpg(proc.pid, 15)
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        for name in names:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
