#!/usr/bin/env python3
"""Benchmark: a full UDP port scan (1-65535) of 127.0.0.1 and of ::1, ``udpkit probe`` against
``nmap -n -sU -T4 -p-`` in the same run, with every udpkit verdict checked against the truth.

Not a test: timings on a shared machine are noisy, so it prints medians and ratios measured side by
side. Needs root (nmap's UDP scan needs raw sockets; the namespace needs root; udpkit does not):
it makes a network namespace of its own holding a handful of listeners — an echo service, a silent
(discard) one, an NTP server (chronyd, if installed; our own NTP responder once it exists), and one
bound to 127.0.0.1 only — times each scanner as a whole process, and cleans up.

    sudo .venv/bin/python bench/scan_bench.py [--runs 3]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("scan_bench: needs root (a namespace of its own, and nmap's raw sockets)", file=sys.stderr)
        return 2
    if shutil.which("nmap") is None:
        print("scan_bench: nmap is not installed", file=sys.stderr)
        return 2
    udpkit = str(Path(sys.executable).with_name("udpkit"))
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
