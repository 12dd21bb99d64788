#!/usr/bin/env python3
"""Soak: what floods cost a udpkit listener, measured as a user would (the console script, in a
network namespace of its own on loopback; root, for the raw socket that forges sources).

1. Distinct-peer flood: 150,000 datagrams from forged distinct sources (198.18.0.0/15, random
   ports) at ``listen --respond echo`` and ``listen --fork --respond echo``: RSS and open fds
   before and after, and whether a legitimate client is still answered.
2. Heavy-DNS flood: 64 KB queries of 65,535 compressed questions beside a legitimate client asking
   ``www.example.test A`` once every 20 ms: its p50/p99 round trip with and without the flood, and
   the ratio (the same run, the same machine).

Three runs each; ranges printed. ``--busy [KIND]`` keeps a competing load running meanwhile (``_load.py``).

    sudo .venv/bin/python bench/soak_bench.py [--runs 3] [--busy [KIND]]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from _load import add_busy_option, start_load, stop_load

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / "tests" / "integration" / "hostile_peer.py"
ZONE = ROOT / "tests" / "data" / "example.zone"
NS = f"udpkit-soak-{os.getpid()}"
QUERY = bytes.fromhex("12340100000100000000000003777777076578616d706c6504746573740000010001")


def netns(*argv: str) -> list[str]:
    return ["ip", "netns", "exec", NS, *argv]


def udpkit(*argv: str) -> subprocess.Popen[bytes]:
    exe = str(Path(sys.executable).with_name("udpkit"))
    return subprocess.Popen(netns(exe, *argv), stderr=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)


def rss_fds(pid: int) -> tuple[int, int]:
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def wait_bound(port: int) -> None:
    for _ in range(200):
        if f":{port} " in subprocess.run(netns("ss", "-uanH"), capture_output=True, text=True).stdout:
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing bound on {port}")


def ask_rtts(port: int, count: int) -> list[float]:
    code = (
        "import socket, time, json, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n"
        "out = []\n"
        f"for _ in range({count}):\n"
        f"    t = time.perf_counter(); s.sendto(bytes.fromhex('{QUERY.hex()}'), ('127.0.0.1', {port}))\n"
        "    try:\n        s.recv(4096); out.append((time.perf_counter() - t) * 1000)\n"
        "    except TimeoutError:\n        out.append(2000.0)\n"
        "    time.sleep(0.02)\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(netns(sys.executable, "-c", code), capture_output=True, text=True, timeout=120)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def peer_flood(proc: subprocess.Popen[bytes], port: int) -> None:
    subprocess.run(netns(sys.executable, str(PEER), "forge", "127.0.0.1", "1", "127.0.0.2", str(port), "--count",
                         "150000", "--random-sources", "--pace", "200"), check=True, capture_output=True, timeout=300)


def distinct_peers(runs: int) -> None:
    for mode in (["--respond", "echo"], ["--respond", "echo", "--fork"]):
        grown, fds_after, served = [], [], []
        for _ in range(runs):
            port = 7400
            proc = udpkit("listen", f"0.0.0.0:{port}", *mode, "--rcvbuf", str(1 << 22))
            wait_bound(port)
            before = rss_fds(proc.pid)
            peer_flood(proc, port)
            time.sleep(1)
            after = rss_fds(proc.pid)
            grown.append((after[0] - before[0]) / 1024)
            fds_after.append(after[1])
            ok = subprocess.run(netns(sys.executable, str(PEER), "ask", "127.0.0.1", str(port)), capture_output=True,
                                text=True).stdout
            served.append('"reply": "' in ok)
            stop(proc)
        print(f"distinct-peer flood, listen {' '.join(mode)}: RSS +{min(grown):.1f}..{max(grown):.1f} MiB for 150,000"
              f" forged peers, fds after {min(fds_after)}..{max(fds_after)}, legitimate client served {sum(served)}/{runs}")


def heavy_dns(runs: int) -> None:
    heavy = b"\x00\x01\x01\x00\xff\xff\x00\x00\x00\x00\x00\x00" + b"\x03www\x07example\x04test\x00\x00\x01\x00\x01"
    heavy += b"\xc0\x0c\x00\x01\x00\x01" * ((65000 - len(heavy)) // 6)
    ratios50, ratios99, quiet50, loud50 = [], [], [], []
    for _ in range(runs):
        port = 5353
        proc = udpkit("listen", f"127.0.0.1:{port}", "--respond", "dns", "--zone", str(ZONE))
        wait_bound(port)
        quiet = sorted(ask_rtts(port, 100))
        flood = subprocess.Popen(netns(sys.executable, str(PEER), "send", "127.0.0.1", str(port), "--payload",
                                       heavy.hex(), "--count", "4000", "--pace", "1"), stdout=subprocess.DEVNULL,
                                 start_new_session=True)
        loud = sorted(ask_rtts(port, 100))
        flood.wait(timeout=300)
        stop(proc)
        p50 = lambda xs: xs[len(xs) // 2]  # noqa: E731
        p99 = lambda xs: xs[int(len(xs) * 0.99)]  # noqa: E731
        quiet50.append(p50(quiet))
        loud50.append(p50(loud))
        ratios50.append(p50(loud) / p50(quiet))
        ratios99.append(p99(loud) / p99(quiet))
    print(f"heavy-DNS flood (64 KB, 65,535 questions, ~1,000/s): legitimate p50 {min(quiet50):.2f}..{max(quiet50):.2f} ms"
          f" quiet, {min(loud50):.2f}..{max(loud50):.2f} ms flooded; ratio p50 {min(ratios50):.2f}..{max(ratios50):.2f},"
          f" p99 {min(ratios99):.2f}..{max(ratios99):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    add_busy_option(parser)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("soak_bench.py needs root (a network namespace and a raw socket)")
    subprocess.run(["ip", "netns", "add", NS], check=True)
    busy = start_load(args.busy)
    try:
        subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", NS, "route", "add", "198.18.0.0/15", "dev", "lo"], check=True)
        distinct_peers(args.runs)
        heavy_dns(args.runs)
    finally:
        stop_load(busy)
        subprocess.run(["ip", "netns", "delete", NS], check=False)


if __name__ == "__main__":
    socket.setdefaulttimeout(5)
    main()
