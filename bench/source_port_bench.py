#!/usr/bin/env python3
"""Benchmark: two ways to make a prober's source port unpredictable, on the same ports.

- **one random port per scan** (what ``udpkit probe`` does): one unconnected socket per family,
  bound to port 0 (the kernel draws the port at random), every probe sent from it;
- **a connected socket per target**: a new socket for each port probed, connected to it (the kernel
  then also drops datagrams from anyone else), its ICMP error read from its own error queue.

Both run as whole processes, 3 runs each, over ports 20000-29999 of 127.0.0.1 (closed), and the
ratio is printed. Not a test: the machine is shared, only the ratio in one run means something.

    .venv/bin/python bench/source_port_bench.py [--ports 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

PER_TARGET = r"""
import os, socket, sys
IP_RECVERR, MSG_ERRQUEUE = 11, 0x2000
low, count = int(sys.argv[1]), int(sys.argv[2])
closed = 0
for port in range(low, low + count):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK) as sock:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        sock.connect(("127.0.0.1", port))
        sock.send(os.urandom(8))
        try:
            sock.recvmsg(16, 512, MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            closed += 1
        except BlockingIOError:
            pass
print(closed)
"""


def timed(argv: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout  # probe: 1 unless all open
    return time.perf_counter() - started, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    udpkit = str(Path(sys.executable).with_name("udpkit"))
    low = 20000
    ours, theirs = [], []
    for _ in range(args.runs):
        seconds, out = timed([udpkit, "probe", "127.0.0.1", "-p", f"{low}-{low + args.ports - 1}", "--retries", "0",
                              "--jsonl"])
        ours.append(seconds)
        assert out.count('"closed"') >= args.ports - 2, "udpkit did not see the closed ports"
        seconds, out = timed([sys.executable, "-c", PER_TARGET, str(low), str(args.ports)])
        theirs.append(seconds)
        assert int(out) >= args.ports - 2, "the per-target prober did not see the closed ports"
    one, many = statistics.median(ours), statistics.median(theirs)
    print(f"{args.ports} closed ports of 127.0.0.1, {args.runs} runs, medians (ranges)")
    print(f"one random port per scan (udpkit probe):  {one:6.3f}s ({min(ours):.3f}-{max(ours):.3f})")
    print(f"a connected socket per target:           {many:6.3f}s ({min(theirs):.3f}-{max(theirs):.3f})")
    print(f"per-target / per-scan: {many / one:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
