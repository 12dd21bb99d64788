#!/usr/bin/env python3
"""Benchmark: ``udpkit exporter`` against node_exporter and blackbox_exporter, side by side in one run.

Not a test: it prints medians and ratios. Needs root (a network namespace of its own):

1. ``/metrics`` with 1,000 / 10,000 / 50,000 UDP sockets open (held by other processes): one scrape
   of ``udpkit exporter`` (per-socket series capped at ``--max-sockets``, 250 by default, the rest summed)
   against node_exporter with only its ``udp_queues`` and ``netstat`` collectors.
2. ``/probe``: probes per second with 50 scrapers at once, for an NTP and a DNS target (udpkit's
   responders), against blackbox_exporter's dns module on the same DNS target.

    sudo .venv/bin/python bench/exporter_bench.py [--sizes 1000,10000,50000|none] [--runs 5] [--busy [KIND]]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _load import add_busy_option, describe, start_load, stop_load

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ss_bench  # noqa: E402 - its namespace and socket holders

HERE = Path(__file__).resolve().parent
ZONE = HERE.parent / "tests" / "data" / "example.zone"


def scrape(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
    return time.perf_counter() - started


def wait(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            scrape(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def rate(url: str, total: int = 2000, workers: int = 50) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        ok = sum(pool.map(lambda _: b"probe_success 1" in urllib.request.urlopen(url, timeout=60).read(), range(total)))
    took = time.perf_counter() - started
    if ok != total:
        print(f"  ({total - ok} of {total} probes failed at {url})")
    return total / took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--runs", type=int, default=5)
    add_busy_option(parser)
    parser.add_argument("--udpkit", default=str(Path(sys.executable).with_name("udpkit")))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("exporter_bench: needs root (a network namespace)", file=sys.stderr)
        return 1
    ss_bench.compile_udpkit(args.udpkit)
    name = f"udpkit-exbench-{os.getpid()}"
    ss_bench.enter_new_netns(name)
    procs = []
    busy = start_load(args.busy)
    tmp = Path(f"/tmp/udpkit-exbench-{os.getpid()}")
    tmp.mkdir()
    try:
        (tmp / "blackbox.yml").write_text("modules:\n  dns: {prober: dns, dns: {transport_protocol: udp,"
                                          " preferred_ip_protocol: ip4, query_name: www.example.test, query_type: A}}\n")
        # per_target 64: the default (4 probes at once per target) would measure the limit, not the exporter
        (tmp / "udpkit.yml").write_text("limits: {concurrency: 128, per_target: 64}\nmodules:\n"
                                        "  dns: {prober: dns, preferred_ip_protocol: ip4,"
                                        " dns: {query_name: www.example.test, query_type: A}}\n"
                                        "  ntp: {prober: ntp, preferred_ip_protocol: ip4}\n")
        env = ss_bench.ENV
        for argv in ([args.udpkit, "listen", "127.0.0.1:53", "--respond", "dns", "--zone", str(ZONE), "--rate-limit", "0"],
                     [args.udpkit, "listen", "127.0.0.1:123", "--respond", "ntp", "--rate-limit", "0"],
                     [args.udpkit, "exporter", "--config.file", str(tmp / "udpkit.yml"),
                      "--web.listen-address", "127.0.0.1:10123"],
                     ["prometheus-node-exporter", "--collector.disable-defaults", "--collector.udp_queues",
                      "--collector.netstat", "--web.listen-address=127.0.0.1:9100"],
                     ["prometheus-blackbox-exporter", "--config.file", str(tmp / "blackbox.yml"),
                      "--web.listen-address=127.0.0.1:9115"]):
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        ours, node = "http://127.0.0.1:10123/metrics", "http://127.0.0.1:9100/metrics"
        wait(ours)
        wait(node)
        wait("http://127.0.0.1:9115/-/healthy")
        if busy is not None:
            print(f"udpkit exporter and node_exporter{describe(args.busy)}")
        print(f"{'sockets':>8}  {'node_exporter':>14}  {'udpkit exporter':>16}  faster")
        for size in (int(s) for s in args.sizes.split(",") if s.strip() and s != "none"):
            holders = ss_bench.open_sockets(size, "udp")
            try:
                theirs, mine = [], []
                for _ in range(args.runs):
                    theirs.append(scrape(node))
                    mine.append(scrape(ours))
                t, m = statistics.median(theirs) * 1000, statistics.median(mine) * 1000
                if os.environ.get("EXBENCH_SAMPLES"):
                    print([round(x * 1000, 1) for x in theirs], [round(x * 1000, 1) for x in mine])
                print(f"{size:>8}  {t:>11.1f} ms  {m:>13.1f} ms  {t / m:.1f}x")
            finally:
                ss_bench.close_sockets(holders)
        print("\n/probe with 50 scrapers at once, 2,000 probes each:")
        for label, url in (("udpkit exporter, ntp", "http://127.0.0.1:10123/probe?module=ntp&target=127.0.0.1:123"),
                           ("udpkit exporter, dns", "http://127.0.0.1:10123/probe?module=dns&target=127.0.0.1:53"),
                           ("blackbox_exporter, dns", "http://127.0.0.1:9115/probe?module=dns&target=127.0.0.1:53")):
            print(f"  {label:<24} {rate(url):7.0f} probes/s")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        stop_load(busy)
        subprocess.run(["ip", "netns", "delete", name], check=False)
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
