#!/usr/bin/env python3
"""Benchmark: ``udpkit listen --relay`` against ``socat UDP4-LISTEN:P,fork UDP4:UPSTREAM`` on loopback.

Not a test: the machine is shared and noisy, so both relays are measured in the same run, one after
the other, three times, and shown as ranges with the ratio of each pair. Two workloads:

- a stream: ``sockperf throughput`` offers 64-byte datagrams (``--rate`` a second) to the relay,
  whose one session forwards them to an upstream that counts them (``udpkit listen --respond
  discard``, the same for both); the figure is the share of what was offered that reached it;
- ping-pong: one client, one request in flight, through the relay to ``sockperf server`` and back:
  round trips a second.

The relay is pinned to the first core, the traffic's source to the second. ``--busy [KIND]`` adds a
competing load for the whole run, as on a user's busy machine (``_load.py``).

    sudo .venv/bin/python bench/relay_bench.py [--seconds 4] [--rate 200000] [--busy [KIND]]

Needs sockperf and socat (``apt-get install sockperf socat``); root for a network namespace of its own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _load import add_busy_option, describe, start_load, stop_load

sys.path.insert(0, str(Path(__file__).resolve().parent))
from listen_bench import enter_netns, ping_pong, pinned  # noqa: E402


def start_server(argv: list[str]) -> subprocess.Popen[str]:
    """The relay, pinned to the first core, in a process group of its own: socat's fork makes a
    child per session, which its parent's end does not end."""
    proc = subprocess.Popen(pinned(0, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    time.sleep(0.8)
    if proc.poll() is not None:
        raise SystemExit(f"relay_bench: {argv[0]} did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc


def stop_server(proc: subprocess.Popen[str]) -> str:
    """SIGTERM to the group we started (the relay and its children), SIGKILL if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _out, err = proc.communicate()
    except ProcessLookupError:
        _out, err = proc.communicate()
    return err or ""


def relays(udpkit: str, port: int, upstream: int) -> dict[str, list[str]]:
    return {
        "socat fork": ["socat", f"UDP4-LISTEN:{port},fork,reuseaddr", f"UDP4:127.0.0.1:{upstream}"],
        "udpkit --relay": [udpkit, "listen", f"127.0.0.1:{port}", "--relay", f"127.0.0.1:{upstream}"],
    }


def stream(udpkit: str, relay: list[str], port: int, upstream: int, seconds: float, rate: int) -> float:
    """The share of an offered stream that went through ``relay`` to a counting upstream."""
    sink = subprocess.Popen([udpkit, "listen", f"127.0.0.1:{upstream}", "--respond", "discard", "--rcvbuf", "8388608"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(0.8)
    server = start_server(relay)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hello:  # not the stream's session
            hello.sendto(b"x", ("127.0.0.1", port))
        time.sleep(0.3)
        offered = int(seconds * rate)
        subprocess.run(pinned(1, ["sockperf", "throughput", "-i", "127.0.0.1", "-p", str(port), "-m", "64",
                                  "-t", str(seconds), "--mps", str(rate)]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=seconds + 30)
        time.sleep(0.5)
    finally:
        stop_server(server)
        err = stop_server(sink)
    line = next((line for line in err.splitlines() if "datagrams (" in line), "")
    received = int(line.split(":", 1)[1].split()[0]) if line else 0
    return max(0, received - 1) / max(offered, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rate", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--udpkit", default=str(Path(sys.executable).with_name("udpkit")))
    add_busy_option(parser)
    args = parser.parse_args()
    for tool in ("sockperf", "socat"):
        if shutil.which(tool) is None:
            print(f"relay_bench: needs {tool} (apt-get install {tool})", file=sys.stderr)
            return 1
    netns = enter_netns()
    busy = start_load(args.busy)
    port = 14000
    shares: dict[str, list[float]] = {}
    trips: dict[str, list[float]] = {}
    try:
        print(f"udpkit: {args.udpkit}; {'own network namespace' if netns else 'host namespace (not root)'}; "
              f"{args.seconds:g} s per run, {args.runs} runs{describe(args.busy)}\n")
        for _ in range(args.runs):
            for label in relays(args.udpkit, 0, 0):
                port += 2
                argv = relays(args.udpkit, port, port + 1)[label]
                shares.setdefault(label, []).append(stream(args.udpkit, argv, port, port + 1, args.seconds, args.rate))
                port += 2
                upstream = subprocess.Popen(["sockperf", "server", "-i", "127.0.0.1", "-p", str(port + 1)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                            start_new_session=True)
                time.sleep(0.5)
                server = start_server(relays(args.udpkit, port, port + 1)[label])
                try:
                    trips.setdefault(label, []).append(ping_pong(port, args.seconds / 2)[0])
                finally:
                    stop_server(server)
                    stop_server(upstream)
        print(f"{'relay':<20}{'stream: share through (' + str(args.rate) + '/s offered)':<52}{'ping-pong trips/s'}")
        for label in shares:
            share = ", ".join(f"{x:.1%}" for x in shares[label])
            trip = ", ".join(f"{x:.0f}" for x in trips[label])
            print(f"{label:<20}{share:<52}{trip}")
        ours, theirs = "udpkit --relay", "socat fork"
        ratio_share = [a / max(b, 1e-9) for a, b in zip(shares[ours], shares[theirs])]
        ratio_trips = [a / max(b, 1e-9) for a, b in zip(trips[ours], trips[theirs])]
        print(f"\nudpkit / socat, stream share: {min(ratio_share):.2f}-{max(ratio_share):.2f}x "
              f"(median {statistics.median(ratio_share):.2f}); ping-pong: {min(ratio_trips):.2f}-"
              f"{max(ratio_trips):.2f}x (median {statistics.median(ratio_trips):.2f})")
    finally:
        stop_load(busy)
        if netns:
            subprocess.run(["ip", "netns", "delete", netns], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
