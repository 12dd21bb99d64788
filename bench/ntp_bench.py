#!/usr/bin/env python3
"""Benchmark: NTP requests per second answered by ``udpkit listen --respond ntp`` and by ``chronyd -x``,
side by side in one run, each server pinned to CPU 0 and the load generator to CPU 1.

Not a test: it prints, per offered rate, the replies a second, the fraction answered and the median
and 99th-percentile round trip (the generator stamps each request's transmit time and reads it back
from the reply's origin field). Needs root for its own network namespace and for chronyd.

    sudo .venv/bin/python bench/ntp_bench.py [--rates 20000,50000,100000,200000,0] [--seconds 2] [--busy [KIND]]

``--busy``: a competing load the whole run, as on a user's busy machine (``_load.py``: a busy loop
not pinned, ``other-core`` the same on the generator's core 1, ``stress-ng``).

Rate 0 means "as fast as the generator can send".
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _load import add_busy_option, describe, start_load, stop_load

OFFSET = 2_208_988_800
UDPKIT_PORT, CHRONY_PORT = 11123, 11124
REQUEST = struct.Struct("!B39xQ")
SO_TIMESTAMPNS = 35
_SAMPLE = itertools.count()  # every 16th reply's round trip is kept


def generate(port: int, rate: int, seconds: float, clients: int = 1, burst: int = 32,
             addresses: int = 0, read: bool = True) -> tuple[int, int, list[float], list[float]]:
    """Offer ``rate`` requests a second (0: all it can) for ``seconds`` from ``clients`` sockets,
    ``burst`` requests from each in turn; return (sent, answered, round trips). With udpkit's C
    extension built, each burst is one ``sendmmsg`` and replies are read a batch per call, so the
    generator outruns both servers and the figure is theirs, not the generator's.

    ``addresses``: instead, one socket sends each request of a burst from the next of that many
    loopback addresses (127.0.1.1, 127.0.1.2, ...; IP_PKTINFO), so no two requests in a row come
    from the same peer — a server cannot send two replies to one peer together."""
    from udpkit.net.mmsg import new_batch

    server = ("127.0.0.1", port)
    socks = []
    for _ in range(1 if addresses else clients):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # each reply's arrival, for the stamp error
        if addresses:
            sock.bind(("0.0.0.0", 0))
        else:
            sock.connect(server)
        sock.setblocking(False)
        socks.append(sock)
    sources = [f"127.0.{1 + k // 250}.{1 + k % 250}" for k in range(addresses)]
    turn = 0
    batch = new_batch(64, 2048, True, kind="c")
    sent = answered = 0
    rtts: list[float] = []
    errors: list[float] = []
    start = time.perf_counter()
    end = start + seconds
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        for sock in socks:
            due = burst if rate == 0 else min(burst, int((now - start) * rate) - sent)
            if due <= 0:
                continue
            stamp = int(time.perf_counter() * 2**32)
            request = REQUEST.pack(0x23, stamp)
            try:
                if batch is not None and sources:
                    messages = [(request, server, sources[(turn + k) % len(sources)]) for k in range(due)]
                    turn += due
                    sent += batch.send(sock.fileno(), socket.AF_INET, messages)
                elif batch is not None:
                    sent += batch.send(sock.fileno(), socket.AF_INET, [(request, server)] * due)
                else:
                    for _ in range(due):
                        sock.send(request)
                        sent += 1
            except (BlockingIOError, ConnectionRefusedError):
                pass
            if read:
                answered += drain(sock, batch, rtts, errors)
    deadline = time.perf_counter() + 0.2
    while time.perf_counter() < deadline:
        for sock in select.select(socks, [], [], 0.05)[0]:
            answered += drain(sock, batch, None, None)
    for sock in socks:
        sock.close()
    return sent, answered, rtts, errors


def drain(sock: socket.socket, batch: object, rtts: list[float] | None, errors: list[float] | None) -> int:
    """Replies waiting on ``sock``: how many. Every 16th one's round trip goes to ``rtts``, and how
    long before it reached this socket the server wrote its transmit time — the kernel's receive
    time less the transmit timestamp, on loopback the stamp's error — to ``errors``."""
    got = 0
    for _ in range(64):
        try:
            if batch is not None:
                replies = [(record[0], record[3]) for record in batch.receive(sock.fileno())]  # type: ignore[attr-defined]
            else:
                replies = [(sock.recv(128), None)]
        except (BlockingIOError, ConnectionRefusedError):
            break
        if not replies:
            break
        for reply, arrived in replies:
            got += 1
            if rtts is not None and len(reply) >= 48 and next(_SAMPLE) % 16 == 0:
                origin = struct.unpack_from("!Q", reply, 24)[0]
                rtts.append(time.perf_counter() - origin / 2**32)
                if errors is not None and arrived is not None:
                    seconds, fraction = struct.unpack_from("!II", reply, 40)
                    errors.append(arrived - (seconds - OFFSET + fraction / 2**32))
    return got


def closed_loop(port: int, seconds: float, clients: int, window: int) -> int:
    """Clients that wait for answers, as real ones do: each keeps ``window`` requests in flight and
    sends one more per reply (a lost request is replaced after 50 ms), so no CPU goes into
    requests the server would drop. Returns the replies received in ``seconds``."""
    from udpkit.net.mmsg import new_batch

    batch = new_batch(64, 2048, False, kind="c")
    assert batch is not None, "the closed-loop generator needs udpkit's C extension"
    server = ("127.0.0.1", port)
    request = REQUEST.pack(0x23, 0)
    socks = []
    for _ in range(clients):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(server)
        sock.setblocking(False)
        socks.append(sock)
    poller = select.epoll()
    for sock in socks:
        poller.register(sock.fileno(), select.EPOLLIN)
    by_fd = {sock.fileno(): sock for sock in socks}
    last = {sock.fileno(): time.perf_counter() for sock in socks}
    answered = 0
    for sock in socks:
        batch.send(sock.fileno(), socket.AF_INET, [(request, server)] * window)
    end = time.perf_counter() + seconds
    while (now := time.perf_counter()) < end:
        for fd, _mask in poller.poll(0.05):
            got = len(batch.receive(fd))
            if got:
                answered += got
                last[fd] = now
                try:
                    batch.send(fd, socket.AF_INET, [(request, server)] * got)
                except BlockingIOError:
                    pass
        for fd, when in last.items():
            if now - when > 0.05:  # its requests were dropped: a new window
                last[fd] = now
                try:
                    batch.send(fd, socket.AF_INET, [(request, server)] * window)
                except BlockingIOError:
                    pass
    poller.close()
    for sock in by_fd.values():
        sock.close()
    return answered


def percentiles(values: list[float], scale: float) -> tuple[float, float]:
    """(median, 99th percentile) of ``values`` times ``scale``; NaN when there are none."""
    if not values:
        return float("nan"), float("nan")
    ordered = sorted(values)
    return statistics.median(ordered) * scale, ordered[int(len(ordered) * 0.99)] * scale


def ntpdig_offsets(server: list[str], flood: bool, seconds: float) -> list[float]:
    """``ntpdig``'s offsets (µs) against ``server`` started on port 123 (ntpdig has no port option):
    five queries, with the generator flooding the same port during them when ``flood``."""
    import threading

    if shutil.which("ntpdig") is None:
        return []
    proc = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    offsets: list[float] = []

    def ask() -> None:
        for _ in range(5):
            # any core: this process (and so a child) is pinned to the generator's, where ntpdig
            # would wait behind the generator's loop and measure its own scheduling
            out = subprocess.run(["taskset", "-c", ",".join(map(str, range(os.cpu_count() or 1))), "ntpdig", "-j",
                                  "-t", "1", "127.0.0.1"], capture_output=True, text=True).stdout
            try:
                offsets.append(float(json.loads(out)["offset"]) * 1e6)  # signed: the caller takes |x|
            except (ValueError, KeyError):
                pass
            time.sleep(0.1)

    try:
        if flood:
            asker = threading.Thread(target=ask)
            asker.start()
            generate(123, 200_000, seconds, 1, 32)
            asker.join()
        else:
            ask()
    finally:
        proc.terminate()
        proc.wait(timeout=5)
    return offsets


def workers_scaling(udpkit: str, counts: list[int], args: argparse.Namespace) -> int:
    """``udpkit listen --workers N`` for each N, nothing pinned (workers and this generator share
    the machine's cores as they would on a server). The clients are distinct sockets: the workers'
    sockets share the port with SO_REUSEPORT, which spreads flows (not datagrams) over them.

    Two loads: a flood (all the generator can from ``--clients`` sockets, replies not read; the
    replies are udpkit's own count from its exit summary) — which on a machine with as many cores
    as workers spends the cores on requests that will be dropped — and closed-loop clients
    (``--clients`` sockets, 32 requests in flight each), where what a second worker adds shows."""
    os.sched_setaffinity(0, range(os.cpu_count() or 1))
    rates = {}
    print(f"udpkit listen --respond ntp --workers N, {args.clients} client sockets, {args.seconds:g} s, "
          f"{os.cpu_count()} cores, nothing pinned\n")
    print(f"{'workers':>8} {'offered/s':>10} {'replies/s':>10} {'answered':>9}")
    for n in counts:
        server = subprocess.Popen([udpkit, "listen", f"0.0.0.0:{UDPKIT_PORT}", "--respond", "ntp", "--workers", str(n)],
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        sent, _answered, _rtts, _errors = generate(UDPKIT_PORT, 0, args.seconds, args.clients, args.burst,
                                                   read=False)
        server.terminate()
        _out, err = server.communicate(timeout=30)
        summary = next((line for line in err.splitlines() if "datagrams (" in line), "")
        out = int(summary.split(" in, ")[1].split()[0]) if " in, " in summary else 0
        rates[n] = out / args.seconds
        print(f"{n:>8} {sent / args.seconds:>10.0f} {rates[n]:>10.0f} {out / max(1, sent):>8.1%}")
    first = rates[counts[0]]
    for n in counts[1:]:
        print(f"flood: scaling {counts[0]} -> {n} workers: {rates[n] / max(1.0, first):.2f}x")
    print(f"\n{'workers':>8} {'replies/s':>10}   closed loop: {args.clients} clients, 32 requests in flight each")
    closed = {}
    for n in counts:
        server = subprocess.Popen([udpkit, "listen", f"0.0.0.0:{UDPKIT_PORT}", "--respond", "ntp", "--workers", str(n)],
                                  stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        closed[n] = closed_loop(UDPKIT_PORT, args.seconds, args.clients, 32) / args.seconds
        server.terminate()
        server.wait(timeout=30)
        print(f"{n:>8} {closed[n]:>10.0f}")
    for n in counts[1:]:
        print(f"closed loop: scaling {counts[0]} -> {n} workers: {closed[n] / max(1.0, closed[counts[0]]):.2f}x")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="20000,50000,100000,200000,0")
    parser.add_argument("--seconds", type=float, default=2.0)
    add_busy_option(parser)
    parser.add_argument("--clients", type=int, default=1, help="client sockets (distinct source ports)")
    parser.add_argument("--burst", type=int, default=32, help="requests each client sends in turn")
    parser.add_argument("--addresses", type=int, default=0,
                        help="one socket, each request from the next of this many loopback addresses")
    parser.add_argument("--workers", default="", help="e.g. 1,2: udpkit --workers N alone, scaling printed")
    parser.add_argument("--ntpdig", action="store_true", help="also ntpdig's offsets, idle and under a flood")
    parser.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.in_netns:
        if os.geteuid() != 0 or shutil.which("chronyd") is None:
            print("ntp_bench: needs root and chronyd", file=sys.stderr)
            return 2
        name = f"udpkit-ntpbench-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        try:
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
            busy = start_load(args.busy)
            if busy is not None:
                print(f"ntp_bench{describe(args.busy)}", flush=True)
            try:
                return subprocess.run(["ip", "netns", "exec", name, "taskset", "-c", "1", sys.executable, __file__,
                                       "--in-netns", "--rates", args.rates, "--seconds", str(args.seconds),
                                       "--clients", str(args.clients), "--burst", str(args.burst),
                                       "--addresses", str(args.addresses), "--workers", args.workers]
                                      + (["--ntpdig"] if args.ntpdig else [])).returncode
            finally:
                stop_load(busy)
        finally:
            subprocess.run(["ip", "netns", "delete", name], check=False)
    udpkit = str(Path(sys.executable).with_name("udpkit"))
    if args.workers:
        return workers_scaling(udpkit, [int(n) for n in args.workers.split(",")], args)
    with tempfile.TemporaryDirectory() as work:
        conf = Path(work) / "chrony.conf"
        conf.write_text(f"port {CHRONY_PORT}\ncmdport 0\nlocal stratum 10\nallow\npidfile {work}/pid\n")
        servers = {
            "udpkit": subprocess.Popen(["taskset", "-c", "0", udpkit, "listen", f"0.0.0.0:{UDPKIT_PORT}",
                                        "--respond", "ntp"], stderr=subprocess.DEVNULL),
            "chronyd": subprocess.Popen(["taskset", "-c", "0", "chronyd", "-d", "-x", "-f", str(conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        }
        time.sleep(1.0)
        try:
            print(f"one socket, requests from {args.addresses} addresses in turn, {args.burst} per call\n" if args.addresses
                  else f"{args.clients} client socket(s), {args.burst} requests each in turn\n")
            print(f"{'offered/s':>10} {'server':>8} {'replies/s':>10} {'answered':>9} {'p50 ms':>8} {'p99 ms':>8} "
                  f"{'tx50 us':>8} {'tx99 us':>8}")
            print("(tx: how long before the reply reached the client the server wrote its transmit time)")
            best = {"udpkit": 0.0, "chronyd": 0.0}
            for rate in (int(r) for r in args.rates.split(",")):
                for name, port in (("chronyd", CHRONY_PORT), ("udpkit", UDPKIT_PORT)):
                    sent, answered, rtts, errors = generate(port, rate, args.seconds, args.clients, args.burst,
                                                            args.addresses)
                    per_second = answered / args.seconds
                    best[name] = max(best[name], per_second)
                    p50, p99 = percentiles(rtts, 1000)
                    e50, e99 = percentiles(errors, 1e6)
                    print(f"{rate or 'max':>10} {name:>8} {per_second:>10.0f} {answered / max(1, sent):>8.1%} "
                          f"{p50:>8.3f} {p99:>8.3f} {e50:>8.1f} {e99:>8.1f}")
            print(f"best reply rate: udpkit {best['udpkit']:.0f}/s, chronyd {best['chronyd']:.0f}/s, "
                  f"ratio {best['udpkit'] / max(1.0, best['chronyd']):.2f}")
        finally:
            for proc in servers.values():
                proc.terminate()
                proc.wait(timeout=5)
        if args.ntpdig:
            conf123 = Path(work) / "chrony123.conf"
            conf123.write_text(f"port 123\ncmdport 0\nlocal stratum 10\nallow\npidfile {work}/pid123\n")
            print("\nntpdig |offset| on loopback, port 123, five queries (us): median, max")
            for name, argv in (("udpkit", ["taskset", "-c", "0", udpkit, "listen", "0.0.0.0:123", "--respond", "ntp"]),
                               ("chronyd", ["taskset", "-c", "0", "chronyd", "-d", "-x", "-f", str(conf123)])):
                for flood in (False, True):
                    found = [abs(o) for o in ntpdig_offsets(argv, flood, 3.0)]
                    shown = f"{statistics.median(found):8.1f} {max(found):8.1f}" if found else "  (no answer)"
                    print(f"{name:>8} {'under a 200,000/s flood' if flood else 'idle':<24} {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
