#!/usr/bin/env python3
"""Benchmark: ``udpkit ss`` (the table, and ``--json``) against iproute2 ``ss`` and psutil on 1,000 / 10,000 /
50,000 UDP sockets (``--tcp``: half TCP listeners, half UDP, timing ``-tuln`` and ``-tulpn``).

Not a test: timings on a shared machine are noisy, so it prints medians and ratios measured side by
side in one run. Needs root: it makes a network namespace of its own (so only its sockets are
listed), enters it, opens the sockets in holder processes (the open-files limit is per process),
times each command as a whole process, checks that both tools print the same table, and cleans up.

    sudo .venv/bin/python bench/ss_bench.py [--sizes 1000,10000,50000] [--runs 7] [--tcp] [--busy [KIND]]

``--busy`` keeps a competing load running for the whole run (a user's machine is rarely idle; the kinds
are ``_load.py``'s: a busy loop, the same on core 1, ``stress-ng --cpu 1``).

``udpkit`` is run as the console script beside this interpreter (a virtual environment's
``bin/udpkit``): pyenv shims add ~60 ms to every start and would swamp the comparison. Its modules
are byte-compiled first and ``PYTHONDONTWRITEBYTECODE`` is dropped for the timed runs, as after a
``pip install`` (which compiles them): compiling ~150 modules from source costs ~25 ms a start.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _load import add_busy_option, describe, start_load, stop_load

CLONE_NEWNET = 0x40000000
PSUTIL = "psutil.net_connections()"
PER_HOLDER = 15_000

HOLDER = r"""
import socket, sys, time
index, count, mix = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "tcp"
socks = []
for i in range(count):
    tcp = mix and i % 2
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    j = i // 2 if mix else i
    if j % 2:
        s = socket.socket(socket.AF_INET6, kind)
        s.bind((f"fd00::{index + 1}", 10000 + j // 2))
    else:
        s = socket.socket(socket.AF_INET, kind)
        s.bind((f"127.0.{index}.1", 10000 + j // 2))
    if tcp:
        s.listen(1)
    socks.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


def enter_new_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for k in range(8):
        subprocess.run(["ip", "-6", "addr", "add", f"fd00::{k + 1}/128", "dev", "lo", "nodad"], check=True)


def open_sockets(total: int, mix: str) -> list[subprocess.Popen[str]]:
    holders = []
    for index in range((total + PER_HOLDER - 1) // PER_HOLDER):
        count = min(PER_HOLDER, total - index * PER_HOLDER)
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(index), str(count), mix],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        holders.append(proc)
    for proc in holders:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return holders


def close_sockets(holders: list[subprocess.Popen[str]]) -> None:
    for proc in holders:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=30)


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def compile_udpkit(udpkit: str) -> None:
    """Byte-compile the udpkit package the script imports, as pip does when it installs it."""
    python = str(Path(udpkit).with_name("python"))
    where = subprocess.run([python, "-c", "import udpkit, os; print(os.path.dirname(udpkit.__file__))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([python, "-m", "compileall", "-q", where], check=True, env=ENV)


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=ENV)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--udpkit", default=str(Path(sys.executable).with_name("udpkit")))
    parser.add_argument("--tcp", action="store_true", help="half TCP listeners; time -tuln and -tulpn")
    add_busy_option(parser)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("ss_bench: needs root (it makes a network namespace)", file=sys.stderr)
        return 1
    for tool in ("ss", "ip"):
        if shutil.which(tool) is None:
            print(f"ss_bench: needs {tool}", file=sys.stderr)
            return 1
    if not os.access(args.udpkit, os.X_OK):
        print(f"ss_bench: no udpkit script at {args.udpkit} (install udpkit in this interpreter's venv)", file=sys.stderr)
        return 1
    compile_udpkit(args.udpkit)
    name = f"udpkit-bench-{os.getpid()}"
    enter_new_netns(name)
    flags, kind = ("-tuln", "inet") if args.tcp else ("-uln", "udp")
    commands = {
        f"ss {flags}": ["ss", flags],
        f"udpkit ss {flags}": [args.udpkit, "ss", flags],
        f"udpkit ss {flags} --backend proc": [args.udpkit, "ss", flags, "--backend", "proc"],
        f"udpkit ss {flags} --json": [args.udpkit, "ss", flags, "--json"],  # (ss has no JSON: to its table)
        f"ss {flags}p": ["ss", flags + "p"],
        f"udpkit ss {flags}p": [args.udpkit, "ss", flags + "p"],
        PSUTIL: [sys.executable, "-c", f"import psutil; psutil.net_connections('{kind}')"],
    }
    busy = start_load(args.busy)
    print(f"udpkit: {args.udpkit} (python {sys.version.split()[0]}); ss: {subprocess.run(['ss', '-V'], capture_output=True, text=True).stdout.strip()}")
    print(f"{args.runs} runs each, interleaved; medians in ms{describe(args.busy)}\n")
    print(f"{'sockets':>8}  {'command':<34}{'median ms':>10}  ratio")
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            holders = open_sockets(size, "tcp" if args.tcp else "udp")
            try:
                same = subprocess.run(["ss", flags], capture_output=True).stdout == subprocess.run(
                    [args.udpkit, "ss", flags], capture_output=True).stdout
                samples: dict[str, list[float]] = {label: [] for label in commands}
                for _ in range(args.runs):
                    for label, argv in commands.items():
                        samples[label].append(timed(argv))
                med = {label: statistics.median(values) * 1000 for label, values in samples.items()}
                f, fp = flags, flags + "p"
                rows = [
                    (f"ss {f}", "1.00 (reference)"),
                    (f"udpkit ss {f}", f"{med[f'udpkit ss {f}'] / med[f'ss {f}']:.2f}x ss {f}"),
                    (f"udpkit ss {f} --backend proc", f"{med[f'udpkit ss {f} --backend proc'] / med[f'ss {f}']:.2f}x ss {f}"),
                    (f"udpkit ss {f} --json", f"{med[f'udpkit ss {f} --json'] / med[f'ss {f}']:.2f}x ss {f}'s table"),
                    (f"ss {fp}", "1.00 (reference)"),
                    (f"udpkit ss {fp}", f"{med[f'udpkit ss {fp}'] / med[f'ss {fp}']:.2f}x ss {fp}"),
                    (PSUTIL, f"{med[PSUTIL] / med[f'udpkit ss {f}']:.1f}x udpkit ss {f}, "
                             f"{med[PSUTIL] / med[f'udpkit ss {fp}']:.1f}x udpkit ss {fp}"),
                ]
                for label, ratio in rows:
                    print(f"{size:>8}  {label:<34}{med[label]:>10.1f}  {ratio}")
                print(f"{size:>8}  same table as ss {f}: {'yes' if same else 'NO'}\n")
            finally:
                close_sockets(holders)
    finally:
        stop_load(busy)
        subprocess.run(["ip", "netns", "delete", name], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
