#!/usr/bin/env python3
"""Benchmark: a full UDP port scan (1-65535) of 127.0.0.1 and of ::1, ``udpkit probe`` against
``nmap -n -sU -T4 -p-`` in the same run, with every udpkit verdict checked against the truth.

Not a test: timings on a shared machine are noisy, so it prints medians and ratios measured side by
side. Needs root (nmap's UDP scan needs raw sockets; the namespace needs root; udpkit does not):
it makes a network namespace of its own holding a handful of listeners — an echo service, a silent
(discard) one, an NTP server (chronyd, if installed; our own NTP responder once it exists), and one
bound to 127.0.0.1 only — times each scanner as a whole process, and cleans up.

    sudo .venv/bin/python bench/scan_bench.py [--runs 3]

``--remote``: the field cases instead — a server namespace behind a veth with a chosen
``icmp_ratelimit``, an echo service and a firewall that drops two ports; udpkit and ``nmap -sU -T3``
scan it from a client namespace, every verdict is checked, and each time is printed beside the
floor the server's budget allows ((closed ports − 6) × interval). ``--busy [KIND]`` keeps a
competing load running during every run (``_load.py``).

    sudo .venv/bin/python bench/scan_bench.py --remote [--runs 3] [--busy [KIND]] [--cases v4,v6,zero,spent,aliases]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _load import add_busy_option, describe, start_load, stop_load

ECHO, SILENT, NTP, ONE_ADDRESS = 7, 9999, 11123, 40404


def netns(name: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", name, *argv]


def start_listeners(name: str, udpkit: str, workdir: Path) -> tuple[list[subprocess.Popen[bytes]], dict[str, dict[int, str]]]:
    """The listeners and the truth they make: per family, port -> expected state."""
    procs = []
    for argv in ([udpkit, "listen", str(ECHO), "--respond", "echo"],
                 [udpkit, "listen", str(SILENT)],
                 [udpkit, "listen", f"127.0.0.1:{ONE_ADDRESS}"]):
        procs.append(subprocess.Popen(netns(name, argv), stderr=subprocess.DEVNULL))
    truth = {"127.0.0.1": {ECHO: "open", SILENT: "open|filtered", ONE_ADDRESS: "open|filtered"},
             "::1": {ECHO: "open", SILENT: "open|filtered"}}
    chronyd = shutil.which("chronyd")
    if chronyd:
        conf = workdir / "chrony.conf"
        conf.write_text(f"port {NTP}\ncmdport 0\nlocal stratum 10\nallow\ndriftfile {workdir}/drift\n"
                        f"pidfile {workdir}/chronyd.pid\n")
        procs.append(subprocess.Popen(netns(name, [chronyd, "-d", "-x", "-f", str(conf)]),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for host in truth:  # an empty datagram is not NTP: chronyd stays silent
            truth[host][NTP] = "open|filtered"
    time.sleep(1.0)
    return procs, truth


FORMS = {"table": [], "--json": ["--json"], "--jsonl": ["--jsonl"]}


def run_udpkit(name: str, udpkit: str, host: str) -> tuple[dict[str, float], list[dict[str, object]]]:
    """One timed full-range scan per output form (the table, as a user reads it; ``--json``; ``--jsonl``),
    output to a pipe as a script would take it; the ``--jsonl`` run's verdicts are checked."""
    times: dict[str, float] = {}
    docs: list[dict[str, object]] = []
    for form, extra in FORMS.items():
        started = time.perf_counter()
        out = subprocess.run(netns(name, [udpkit, "probe", host, "-p", "1-65535", *extra]), capture_output=True,
                             text=True, timeout=600).stdout
        times[form] = time.perf_counter() - started
        if form == "--jsonl":
            docs = [json.loads(line) for line in out.splitlines()]
        elif form == "--json":
            assert len(json.loads(out)) == 65535
    return times, docs


def run_nmap(name: str, host: str) -> tuple[float, str]:
    flag = ["-6"] if ":" in host else []
    started = time.perf_counter()
    out = subprocess.run(netns(name, ["nmap", "-n", "-sU", "-T4", "-p-", *flag, host]), capture_output=True,
                         text=True, timeout=900).stdout
    return time.perf_counter() - started, out


def wrong_verdicts(docs: list[dict[str, object]], truth: dict[int, str]) -> list[str]:
    wrong = []
    seen = set()
    for doc in docs:
        port = int(doc["port"])  # type: ignore[call-overload]
        seen.add(port)
        expected = truth.get(port, "closed")
        if doc["reason"] == "own-socket" and port not in truth:
            continue  # the prober's own socket: open, and said so
        if doc["state"] != expected:
            wrong.append(f"{port}: {doc['state']} ({doc['reason']}), truth {expected}")
    missing = set(range(1, 65536)) - seen
    if missing:
        wrong.append(f"{len(missing)} ports without a verdict")
    return wrong


#: The remote cases, scaled from the issue's table to minutes: (IP version, icmp_ratelimit ms,
#: ports, addresses of the one server kernel, whether a scan spends the budget just before,
#: the prober's source addresses).
REMOTE = {
    "v4": (4, 100, range(1, 201), 1, False, 1),
    "v6": (6, 100, range(1, 201), 1, False, 1),
    "zero": (4, 0, range(1, 1001), 1, False, 1),
    "spent": (4, 100, range(1, 102), 1, True, 1),
    "aliases": (4, 50, range(1, 41), 5, False, 1),
    "sources": (4, 100, range(1, 201), 1, False, 2),
    "default": (4, 1000, range(1, 28), 1, False, 1),  # Linux's own limit, the small scan
}
OPEN_PORT, DROPPED = 7, (50, 150)


def remote_lab(tag: str, udpkit: str) -> tuple[str, str, list[subprocess.Popen[bytes]]]:
    server, client = f"udpkit-rs{tag}", f"udpkit-rc{tag}"
    for name in (server, client):
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"], check=True)
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"], check=True)
    subprocess.run(["ip", "link", "add", "rbs" + tag, "netns", server, "type", "veth", "peer", "name", "rbc" + tag,
                    "netns", client], check=True)
    for name, dev, v4, v6 in ((server, "rbs" + tag, "10.95.0.1/24", "fd95::1/64"),
                              (client, "rbc" + tag, "10.95.0.2/24", "fd95::2/64")):
        subprocess.run(["ip", "-n", name, "addr", "add", v4, "dev", dev], check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", v6, "dev", dev, "nodad"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", dev, "up"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    for i in range(11, 15):
        subprocess.run(["ip", "-n", server, "addr", "add", f"10.95.0.{i}/32", "dev", "rbs" + tag], check=True)
    subprocess.run(["ip", "-n", client, "addr", "add", "10.95.0.3/24", "dev", "rbc" + tag], check=True)
    rules = ("table inet firewall {\n chain input {\n  type filter hook input priority 0;\n"
             f"  udp dport {{ {DROPPED[0]}, {DROPPED[1]} }} drop\n }}\n}}\n")
    subprocess.run(netns(server, ["nft", "-f", "-"]), input=rules.encode(), check=True)
    echo = subprocess.Popen(netns(server, [udpkit, "listen", str(OPEN_PORT), "--respond", "echo", "--rate-limit", "0"]),
                            stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return server, client, [echo]


def remote_case(server: str, client: str, udpkit: str, case: str, runs: int) -> None:
    version, limit_ms, ports, addresses, spent, sources = REMOTE[case]
    hosts = (["10.95.0.1", *(f"10.95.0.{i}" for i in range(11, 10 + addresses))] if version == 4 else ["fd95::1"])
    key = "net.ipv4.icmp_ratelimit" if version == 4 else "net.ipv6.icmp.ratelimit"
    subprocess.run(netns(server, ["sysctl", "-qw", f"{key}={limit_ms}"]), check=True)
    closed = sum(1 for p in ports if p != OPEN_PORT and p not in DROPPED) * len(hosts)
    interval = max(limit_ms / 1000, 0.001)  # with no per-host limit, the global 1000/s remains
    floor = max(0, closed - (0 if spent else 6) * sources) * interval / sources
    source = ["--source", "10.95.0.2,10.95.0.3"] if sources == 2 else []
    spec = f"{ports[0]}-{ports[-1]}"
    ours: list[float] = []
    theirs: list[float] = []
    wrong: list[str] = []
    nmap_wrong: list[int] = []
    for _ in range(runs):
        for tool in ("udpkit", "nmap"):
            time.sleep(max(1.0, 6 * interval))  # the budget refills between scans, except on purpose:
            if spent:
                subprocess.run(netns(client, [udpkit, "probe", hosts[0], "-p", "1000-1060", "--retries", "0",
                                              "--timeout", "0.2", "--jsonl"]), capture_output=True)
            started = time.perf_counter()
            if tool == "udpkit":
                out = subprocess.run(netns(client, [udpkit, "probe", *hosts, "-p", spec, "--jsonl", *source]),
                                     capture_output=True, text=True, timeout=3600).stdout
                ours.append(time.perf_counter() - started)
                for line in out.splitlines():
                    doc = json.loads(line)
                    port = int(doc["port"])
                    want = "open" if port == OPEN_PORT else "open|filtered" if port in DROPPED else "closed"
                    if doc["state"] != want:
                        wrong.append(f"{doc['host']}:{port} {doc['state']}")
            else:
                grep = subprocess.run(netns(client, ["nmap", "-n", "-sU", "-T3", "-p", spec, "-oG", "-",
                                                     *(["-6"] if version == 6 else []), *hosts]),
                                      capture_output=True, text=True, timeout=3600).stdout
                theirs.append(time.perf_counter() - started)
                nmap_wrong.append(nmap_mistakes(grep, hosts, ports))
    mine, nmap = statistics.median(ours), statistics.median(theirs)
    print(f"{case:<8} {len(hosts)}x{len(ports):<5} limit {limit_ms:>3} ms  floor {floor:7.1f}s  "
          f"udpkit {mine:7.1f}s ({min(ours):.1f}-{max(ours):.1f}) = {mine / max(floor, 1e-9):5.2f}x floor  "
          f"nmap -T3 {nmap:7.1f}s ({min(theirs):.1f}-{max(theirs):.1f}, wrong {min(nmap_wrong)}-{max(nmap_wrong)})  "
          f"nmap/udpkit {nmap / mine:5.2f}x  "
          f"udpkit verdicts: {'all right' if not wrong else f'{len(wrong)} wrong: ' + ', '.join(wrong[:4])}",
          flush=True)


def nmap_mistakes(grepable: str, hosts: list[str], ports: range) -> int:
    """Ports nmap got wrong, from its ``-oG`` lines (closed ports are summed up as the ignored state)."""
    wrong = 0
    for host in hosts:
        line = next((row for row in grepable.splitlines() if row.startswith(f"Host: {host} ") and "Ports:" in row), "")
        listed = {}
        for item in line.partition("Ports: ")[2].partition("\t")[0].split(", "):
            fields = item.strip().split("/")
            if len(fields) > 2 and fields[0].isdigit():
                listed[int(fields[0])] = fields[1]
        ignored = line.partition("Ignored State: ")[2].split(" ")[0] or "closed"
        for port in ports:
            want = "open" if port == OPEN_PORT else "open|filtered" if port in DROPPED else "closed"
            wrong += listed.get(port, ignored) != want
    return wrong


def remote_main(args: argparse.Namespace, udpkit: str) -> int:
    tag = str(os.getpid() % 10000)
    busy = start_load(args.busy)
    server, client, procs = remote_lab(tag, udpkit)
    try:
        print(f"remote cases, {args.runs} runs each, medians (ranges){describe(args.busy)}")
        for case in args.cases.split(","):
            remote_case(server, client, udpkit, case, args.runs)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        stop_load(busy)
        for name in (server, client):
            subprocess.run(["ip", "netns", "delete", name], check=False)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--remote", action="store_true", help="the field cases (see the module's docstring)")
    add_busy_option(parser)
    parser.add_argument("--cases", default=",".join(REMOTE), help="with --remote: which cases")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("scan_bench: needs root (a namespace of its own, and nmap's raw sockets)", file=sys.stderr)
        return 2
    if shutil.which("nmap") is None:
        print("scan_bench: nmap is not installed", file=sys.stderr)
        return 2
    udpkit = str(Path(sys.executable).with_name("udpkit"))
    if args.remote:
        return remote_main(args, udpkit)
    name = f"udpkit-scanbench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        with tempfile.TemporaryDirectory() as workdir:
            procs, truth = start_listeners(name, udpkit, Path(workdir))
            print(f"listeners: echo {ECHO}, silent {SILENT}, ntp {NTP if NTP in truth['::1'] else '-'}, "
                  f"127.0.0.1 only {ONE_ADDRESS}; {args.runs} runs, medians")
            print(f"{'target':<10} {'form':<8} {'udpkit':>16} {'nmap':>16} {'nmap/udpkit':>12} {'form/table':>11}")
            for host in ("127.0.0.1", "::1"):
                ours: dict[str, list[float]] = {form: [] for form in FORMS}
                theirs: list[float] = []
                problems: list[str] = []
                for _ in range(args.runs):
                    took, docs = run_udpkit(name, udpkit, host)
                    for form, seconds in took.items():
                        ours[form].append(seconds)
                    problems = wrong_verdicts(docs, truth[host]) or problems
                    theirs.append(run_nmap(name, host)[0])
                nmap = statistics.median(theirs)
                table = statistics.median(ours["table"])
                for form, values in ours.items():
                    mine = statistics.median(values)
                    print(f"{host:<10} {form:<8} {mine:>6.3f}s ({min(values):.2f}-{max(values):.2f}) "
                          f"{nmap:>6.3f}s ({min(theirs):.1f}-{max(theirs):.1f}) {nmap / mine:>11.2f}x"
                          f" {mine / table:>10.2f}x")
                verdict = "all right" if not problems else f"{len(problems)} wrong: " + "; ".join(problems[:5])
                print(f"{host:<10} verdicts: {verdict}")
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["ip", "netns", "delete", name], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
