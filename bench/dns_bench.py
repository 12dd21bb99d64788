#!/usr/bin/env python3
"""Benchmark: DNS queries a second answered by ``udpkit listen --respond dns`` and by NSD (an
authoritative server in C), from one zone, side by side in one run: each server pinned to CPU 0,
``dnsperf`` (the DNS-OARC load generator) to CPU 1.

Not a test: it prints, per load and server, dnsperf's completed queries a second, what was lost,
the average latency and the server's user and system CPU time per answer (from ``/proc/PID/stat``: a server under
100 % of its core was offered less than it could answer). The servers take turns, the order flipped
every round (ABBA). Needs ``dnsperf`` and ``nsd`` (``apt-get install dnsperf nsd``); no root.

    .venv/bin/python bench/dns_bench.py [--loads repeated,zone,distinct] [--seconds 5] [--rounds 2] [--busy [KIND]]

Loads (the zone is ``tests/data/example.zone`` plus 5,000 generated hosts):

- ``repeated``: eight questions (A, AAAA, CNAME, MX, SRV, TXT, SOA, an NXDOMAIN) over and over;
- ``zone``: every one of the 5,000 hosts in turn, each asked again 5,000 queries later;
- ``distinct``: 300,000 names that do not exist, a random-subdomain flood: no question repeats
  within udpkit's kept answers, so each is answered from a template of dnspython's bytes;
- ``wildcard``: 300,000 names only the zone's ``*.wild`` stands for, the same flood against a zone
  with a wildcard (``--loads repeated,zone,distinct,wildcard``).

``--busy``: a competing load the whole run, as on a user's busy machine (``_load.py``: a busy loop
not pinned, ``other-core`` the same on core 1, ``stress-ng``).
Rate limits are off on both (NSD's RRL is on by default in Debian's build, udpkit's RRL by default),
and udpkit is given NSD's receive buffer (``--rcvbuf 1048576``: NSD sets 1 MiB on its sockets).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _load import add_busy_option, describe, start_load, stop_load

ROOT = Path(__file__).resolve().parent.parent
UDPKIT_PORT, NSD_PORT = 11253, 11254
HOSTS = 5000
BASIC = ["www.example.test A", "www.example.test AAAA", "alias.example.test A", "example.test MX",
         "nope.example.test A", "_ntp._udp.example.test SRV", "txt.example.test TXT", "example.test SOA"]


def write_inputs(work: Path) -> tuple[Path, dict[str, Path]]:
    """The zone (the tests' zone without its out-of-zone PTR, which NSD refuses, plus the hosts)
    and one query file per load."""
    zone = work / "example.zone"
    lines = [line for line in (ROOT / "tests" / "data" / "example.zone").read_text().splitlines()
             if "in-addr.arpa" not in line]
    lines += [f"h{i} IN A 198.51.{i // 250}.{1 + i % 250}" for i in range(HOSTS)]
    zone.write_text("\n".join(lines) + "\n")
    loads = {"repeated": BASIC, "zone": [f"h{i}.example.test A" for i in range(HOSTS)]}
    rng = random.Random(7)
    loads["distinct"] = [f"x{rng.getrandbits(48):012x}.example.test A" for _ in range(300_000)]
    loads["wildcard"] = [f"x{rng.getrandbits(48):012x}.wild.example.test A" for _ in range(300_000)]
    files = {}
    for name, queries in loads.items():
        files[name] = work / f"{name}.txt"
        files[name].write_text("\n".join(queries) + "\n")
    return zone, files


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """User and system time of ``pids`` so far (NSD answers in a child of its main process)."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
    return user / os.sysconf("SC_CLK_TCK"), system / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid`` and its descendants (NSD's server process is forked by a process it forked)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += parents.get(found[-1], [])
    return found


def dnsperf(port: int, queries: Path, seconds: float, clients: int) -> dict[str, float]:
    out = subprocess.run(["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
                          "-l", str(seconds), "-c", str(clients), "-q", "256", "-t", "2"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    found = {key: float(re.search(pattern, out).group(1))  # type: ignore[union-attr]
             for key, pattern in (("completed", r"Queries completed:\s+(\d+)"), ("lost", r"Queries lost:\s+(\d+)"),
                                  ("qps", r"Queries per second:\s+([\d.]+)"),
                                  ("latency", r"Average Latency \(s\):\s+([\d.]+)"))}
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", default="repeated,zone,distinct")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2, help="turns per server and load (ABBA order)")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf's client sockets (source ports)")
    add_busy_option(parser)
    parser.add_argument("--udpkit", default=str(Path(sys.executable).with_name("udpkit")),
                        help="the udpkit command to measure (default: the one beside this Python)")
    parser.add_argument("--both-families", action="store_true",
                        help="udpkit on the port alone (a socket a family, as `udpkit listen 53`), not 127.0.0.1")
    parser.add_argument("--udpkit-arg", dest="udpkit_args", action="append", default=[], metavar="ARG",
                        help="one more argument for udpkit listen (e.g. --udpkit-arg=--busy-poll --udpkit-arg=0)")
    args = parser.parse_args()
    if shutil.which("dnsperf") is None or shutil.which("nsd") is None:
        print("dns_bench: needs dnsperf and nsd (apt-get install dnsperf nsd)", file=sys.stderr)
        return 2
    udpkit = args.udpkit
    busy = start_load(args.busy)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            zone, files = write_inputs(work)
            conf = work / "nsd.conf"
            conf.write_text(f"server:\n  ip-address: 127.0.0.1@{NSD_PORT}\n  server-count: 1\n  username: \"\"\n"
                            f"  zonesdir: \"{work}\"\n  database: \"\"\n  pidfile: \"{work}/nsd.pid\"\n"
                            f"  xfrdfile: \"{work}/xfrd.state\"\n  zonelistfile: \"{work}/zone.list\"\n"
                            f"  logfile: \"{work}/nsd.log\"\n  verbosity: 0\n  rrl-ratelimit: 0\n"
                            f"  rrl-whitelist-ratelimit: 0\nremote-control:\n  control-enable: no\n"
                            f"zone:\n  name: example.test\n  zonefile: {zone.name}\n")
            servers = {
                "udpkit": subprocess.Popen(["taskset", "-c", "0", udpkit, "listen",
                                            str(UDPKIT_PORT) if args.both_families else f"127.0.0.1:{UDPKIT_PORT}",
                                            "--respond", "dns", "--zone", str(zone), "--rate-limit", "0",
                                            "--rcvbuf", str(1 << 20), *args.udpkit_args],
                                           stderr=subprocess.DEVNULL),
                "nsd": subprocess.Popen(["taskset", "-c", "0", "nsd", "-d", "-c", str(conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            }
            ports = {"udpkit": UDPKIT_PORT, "nsd": NSD_PORT}
            try:
                time.sleep(2.0)
                pids = {name: descendants(proc.pid) for name, proc in servers.items()}
                print(f"dnsperf, {args.clients} client sockets, 256 outstanding, {args.seconds:g} s a turn"
                      f"{describe(args.busy)}\n")
                print(f"{'load':>9} {'server':>7} {'queries/s':>10} {'lost':>7} {'avg ms':>7} {'user us':>7} "
                      f"{'sys us':>7}")
                print("(user, sys: the server's CPU time per answer; one core is 1e6 / queries/s)")
                for load in args.loads.split(","):
                    totals = {"udpkit": 0.0, "nsd": 0.0}
                    order = ["udpkit", "nsd"]
                    for _ in range(args.rounds):
                        for name in order:
                            user, system = cpu_seconds(pids[name])
                            got = dnsperf(ports[name], files[load], args.seconds, args.clients)
                            after = cpu_seconds(pids[name])
                            totals[name] += got["completed"]
                            per = 1e6 / max(1.0, got["completed"])
                            print(f"{load:>9} {name:>7} {got['qps']:>10.0f} {got['lost']:>7.0f} "
                                  f"{got['latency'] * 1000:>7.3f} {(after[0] - user) * per:>7.2f} "
                                  f"{(after[1] - system) * per:>7.2f}")
                        order.reverse()
                    print(f"{load:>9}   ratio udpkit / nsd: {totals['udpkit'] / max(1.0, totals['nsd']):.3f}\n")
            finally:
                for proc in servers.values():
                    proc.terminate()
                    proc.wait(timeout=10)
    finally:
        stop_load(busy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
