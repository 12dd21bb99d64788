#!/usr/bin/env python3
"""Benchmark: ``udpkit ss`` against iproute2 ``ss`` and psutil on 1,000 / 10,000 / 50,000 UDP sockets.

Not a test: timings on a shared machine are noisy, so it prints medians and ratios measured side by
side in one run. Needs root: it makes a network namespace of its own (so only its sockets are
listed), enters it, opens the sockets in holder processes (the open-files limit is per process),
times each command as a whole process, checks that both tools print the same table, and cleans up.

    sudo .venv/bin/python bench/ss_bench.py [--sizes 1000,10000,50000] [--runs 7]

``udpkit`` is run as the console script beside this interpreter (a virtual environment's
``bin/udpkit``): pyenv shims add ~60 ms to every start and would swamp the comparison.
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

CLONE_NEWNET = 0x40000000
PSUTIL = "psutil.net_connections('udp')"
PER_HOLDER = 15_000

HOLDER = r"""
import socket, sys, time
index, count = int(sys.argv[1]), int(sys.argv[2])
socks = []
for i in range(count):
    if i % 2:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind((f"fd00::{index + 1}", 10000 + i // 2))
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.{index}.1", 10000 + i // 2))
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


def open_sockets(total: int) -> list[subprocess.Popen[str]]:
    holders = []
    for index in range((total + PER_HOLDER - 1) // PER_HOLDER):
        count = min(PER_HOLDER, total - index * PER_HOLDER)
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(index), str(count)],
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


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--udpkit", default=str(Path(sys.executable).with_name("udpkit")))
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
    name = f"udpkit-bench-{os.getpid()}"
    enter_new_netns(name)
    commands = {
        "ss -uln": ["ss", "-uln"],
        "udpkit ss -uln": [args.udpkit, "ss", "-uln"],
        "udpkit ss -uln --backend proc": [args.udpkit, "ss", "-uln", "--backend", "proc"],
        "ss -ulnp": ["ss", "-ulnp"],
        "udpkit ss -ulnp": [args.udpkit, "ss", "-ulnp"],
        PSUTIL: [sys.executable, "-c", "import psutil; psutil.net_connections('udp')"],
    }
    print(f"udpkit: {args.udpkit} (python {sys.version.split()[0]}); ss: {subprocess.run(['ss', '-V'], capture_output=True, text=True).stdout.strip()}")
    print(f"{args.runs} runs each, interleaved; medians in ms\n")
    print(f"{'sockets':>8}  {'command':<32}{'median ms':>10}  ratio")
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            holders = open_sockets(size)
            try:
                same = subprocess.run(["ss", "-uln"], capture_output=True).stdout == subprocess.run(
                    [args.udpkit, "ss", "-uln"], capture_output=True).stdout
                samples: dict[str, list[float]] = {label: [] for label in commands}
                for _ in range(args.runs):
                    for label, argv in commands.items():
                        samples[label].append(timed(argv))
                med = {label: statistics.median(values) * 1000 for label, values in samples.items()}
                rows = [
                    ("ss -uln", "1.00 (reference)"),
                    ("udpkit ss -uln", f"{med['udpkit ss -uln'] / med['ss -uln']:.2f}x ss -uln"),
                    ("udpkit ss -uln --backend proc", f"{med['udpkit ss -uln --backend proc'] / med['ss -uln']:.2f}x ss -uln"),
                    ("ss -ulnp", "1.00 (reference)"),
                    ("udpkit ss -ulnp", f"{med['udpkit ss -ulnp'] / med['ss -ulnp']:.2f}x ss -ulnp"),
                    (PSUTIL, f"{med[PSUTIL] / med['udpkit ss -uln']:.1f}x udpkit ss -uln, "
                             f"{med[PSUTIL] / med['udpkit ss -ulnp']:.1f}x udpkit ss -ulnp"),
                ]
                for label, ratio in rows:
                    print(f"{size:>8}  {label:<32}{med[label]:>10.1f}  {ratio}")
                print(f"{size:>8}  same table as ss -uln: {'yes' if same else 'NO'}\n")
            finally:
                close_sockets(holders)
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
