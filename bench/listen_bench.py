#!/usr/bin/env python3
"""Benchmark: ``udpkit listen`` against ``sockperf server`` and ``socat`` on loopback, side by side.

Not a test: the machine is shared and noisy, so every figure is measured in the same run and shown
next to its peer's. Throughput: ``sockperf throughput`` offers a stream of 64-byte datagrams (about
260,000/s, one core each side with taskset) and the kernel's own counters (``Udp: InDatagrams`` and
``RcvbufErrors`` in /proc/net/snmp, in a network namespace of our own when root) say how much of it
each server took; udpkit's own count is shown beside. Ping-pong: one client, one request in flight,
round trips per second and the p50/p99 round-trip time, medians of alternating half-second
rounds with every server up (udpkit with its busy poll, without it (``--busy-poll 0``), on a
wildcard address, and on the port alone: a socket a family, the default), and a second ``sockperf
server`` as the control: each round's ratio to the first, as quartiles (printed for every row),
is how far two equal servers measure apart in that run, which a ratio of udpkit's must be read
against. Window: one client with 1 to 128 requests in flight (``--windows``; udpkit on 127.0.0.1,
or ``--window-on``), answers a second, the same way.

``sockperf ping-pong`` cannot measure an RFC 862 echo service — it discards any answer that still
carries its "client" flag, and an echo sends the request back unchanged — so the ping-pong client
here is ours: it sends sockperf-format requests (which ``sockperf server`` answers) and accepts any
answer with its sequence number. The same client measures both servers.

    sudo .venv/bin/python bench/listen_bench.py [--seconds 5] [--rate 260000] [--busy [KIND]] [--only PART]

``--busy``: a competing busy loop (not pinned) the whole run, as on a user's busy machine;
``--busy other-core``: that loop pinned to the core the servers are not on; ``--busy stress-ng``:
``stress-ng --cpu 1`` (not pinned) instead (``_load.py``, which every benchmark shares). The servers
are pinned to the first core.

Needs sockperf and socat (``apt-get install sockperf socat``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

from _load import add_busy_option, describe, start_load, stop_load

CLONE_NEWNET = 0x40000000
SNMP = "/proc/net/snmp"
# sockperf's message header, big-endian: sequence number (u64), flags (u16: 1 client, 2 pong
# request), length (u32) — as captured from sockperf 3.7's own ping-pong client
SOCKPERF_HEADER = struct.Struct(">QHI")


def udp_counters() -> tuple[int, int]:
    with open(SNMP, encoding="ascii") as fh:
        rows = [line.split() for line in fh if line.startswith("Udp:")]
    names, values = rows[0], rows[1]
    row = dict(zip(names[1:], map(int, values[1:])))
    return row["InDatagrams"], row["RcvbufErrors"]


def enter_netns() -> str | None:
    if os.geteuid() != 0:
        return None
    name = f"udpkit-lbench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    return name


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else argv


def start_server(argv: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(pinned(0, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.8)
    if proc.poll() is not None:
        raise SystemExit(f"listen_bench: {argv[0]} did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc


def stop_server(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    return err or ""


def throughput(port: int, seconds: float, rate: int) -> tuple[int, int]:
    """Offer the stream; return (datagrams the kernel delivered to sockets, datagrams it dropped)."""
    before = udp_counters()
    subprocess.run(pinned(1, ["sockperf", "throughput", "-i", "127.0.0.1", "-p", str(port), "-m", "64",
                              "-t", str(seconds), "--mps", str(rate)]),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=seconds + 30)
    time.sleep(0.5)
    after = udp_counters()
    return after[0] - before[0], after[1] - before[1]


CONTROL = "  ... a second sockperf server (control)"
RECORDING = "/tmp/udpkit-bench.out"


def ping_pong(port: int, seconds: float) -> tuple[float, float, float]:
    """One request in flight for ``seconds``: (round trips/s, p50 µs, p99 µs)."""
    rtts: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", port))
        sock.settimeout(1.0)
        pad = b"\0" * (64 - SOCKPERF_HEADER.size)
        end = time.perf_counter() + seconds
        seq = 0
        clock = time.perf_counter
        while clock() < end:
            seq += 1
            start = clock()
            sock.send(SOCKPERF_HEADER.pack(seq, 3, 64) + pad)
            while True:
                try:
                    reply = sock.recv(2048)
                except TimeoutError:
                    break
                if len(reply) >= 8 and struct.unpack_from(">Q", reply)[0] == seq:
                    rtts.append(clock() - start)
                    break
    rtts.sort()
    if not rtts:
        return 0.0, 0.0, 0.0
    return len(rtts) / seconds, rtts[len(rtts) // 2] * 1e6, rtts[int(len(rtts) * 0.99)] * 1e6


def open_sessions(port: int, count: int) -> list[socket.socket]:
    """``count`` peers that each said hello, so a --fork listener holds ``count`` live sessions."""
    peers = []
    for n in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"hello", ("127.0.0.1", port))
        peers.append(s)
        if n % 50 == 49:
            time.sleep(0.02)  # paced, so that no hello is dropped before its session exists
    time.sleep(1.0)
    return peers


def throughput_part(args: argparse.Namespace, udpkit: list[str], port: int) -> None:
    """The stream: each server in turn, the share of it the kernel delivered (``--rounds``: that
    many times, each case's share set against discard's in the same round)."""
    cases = [
        ("sockperf server", ["sockperf", "server", "-i", "127.0.0.1", "-p", "{port}"], 0),
        ("udpkit listen --respond discard", [*udpkit, "127.0.0.1:{port}", "--respond", "discard"], 0),
        ("socat UDP4-LISTEN:P,fork /dev/null", ["socat", "UDP4-LISTEN:{port},fork", "/dev/null"], 0),
        ("udpkit listen ... --out FILE --format raw", [*udpkit, "127.0.0.1:{port}", "--out",
                                                       args.record_to, "--format", "raw"], 0),
        ("udpkit listen ... --out FILE --format pcap", [*udpkit, "127.0.0.1:{port}", "--out",
                                                        args.record_to, "--format", "pcap"], 0),
        ("udpkit listen ... --out FILE --format jsonl", [*udpkit, "127.0.0.1:{port}", "--out",
                                                         args.record_to, "--format", "jsonl"], 0),
        ("udpkit listen ... --fork, 1000 sessions", [*udpkit, "127.0.0.1:{port}", "--fork"], 1000),
    ]
    # Each round runs every case in turn, the order reversed each round, so that a load whose
    # effect drifts over the run (stress-ng cycles through its methods) falls on every case alike.
    fractions: dict[str, list[float]] = {label: [] for label, _argv, _sessions in cases}
    totals: dict[str, list[int]] = {label: [0, 0] for label, _argv, _sessions in cases}
    own: dict[str, str] = {}
    for turn in range(args.rounds):
        for label, argv, sessions in (cases if turn % 2 == 0 else cases[::-1]):
            port += 1
            server = start_server([a.replace("{port}", str(port)) for a in argv])
            peers = open_sessions(port, sessions) if sessions else []
            delivered, dropped = throughput(port, args.seconds, args.rate)
            err = stop_server(server)
            for s in peers:
                s.close()
            own[label] = next((line.split(":", 1)[1].strip() for line in err.splitlines() if "datagrams (" in line), "")
            fractions[label].append(delivered / max(delivered + dropped, 1))
            totals[label][0] += delivered
            totals[label][1] += dropped
    labels = [label for label, _argv, _sessions in cases]
    reference, discard = labels[0], labels[1]
    rounds = f", {args.rounds} rounds" if args.rounds > 1 else ""
    print(f"{'throughput' + rounds:<42}{'delivered':>10}{'dropped':>10}{'fraction':>10}  vs discard")
    whole = totals[discard][0] / max(sum(totals[discard]), 1)
    for label in labels:
        delivered, dropped = totals[label]
        fraction = delivered / max(delivered + dropped, 1)
        print(f"{label:<42}{delivered:>10}{dropped:>10}{fraction:>9.1%}  {fraction / whole:>6.2f}x"
              + (f"   (udpkit, last round: {own[label]})" if own[label] else ""))
    if args.rounds > 1:
        print("each round's fraction over discard's in that round (min, median, max):")
        for label in labels:
            if label != discard:
                ratios = [ours / max(theirs, 1e-9) for ours, theirs in zip(fractions[label], fractions[discard])]
                print(f"  {label:<40}{min(ratios):>7.2f}{statistics.median(ratios):>7.2f}{max(ratios):>7.2f}")
    print(f"\nudpkit discard / sockperf server delivered fraction: "
          f"{sum(fractions[discard]) / max(sum(fractions[reference]), 1e-9):.3f}")
    if args.record_to == RECORDING:
        try:
            os.unlink(RECORDING)
        except OSError:
            pass


def ping_pong_part(args: argparse.Namespace, udpkit: list[str], port: int) -> None:
    """One request in flight: round trips a second, both servers up, asked in turns."""
    print(f"\n{'ping-pong (one request in flight)':<42}{'trips/s':>10}{'p50 us':>10}{'p99 us':>10}")
    # Both servers run at once (each pinned to the first core, idle while the other is asked) and
    # are asked in alternating half-second rounds, 2 × seconds / 0.5 each: the machine's drift
    # over the run falls on both.
    servers, samples = {}, {}
    for label, argv in (
        ("sockperf server", ["sockperf", "server", "-i", "127.0.0.1", "-p", "{port}"]),
        # the control: the same peer again, so the run shows how far a server measures from an equal one
        (CONTROL, ["sockperf", "server", "-i", "127.0.0.1", "-p", "{port}"]),
        # no reply budget: one client at full speed is the point here (by default echo answers a peer
        # address at most 100 times a second, which would measure the budget, not the server)
        ("udpkit listen --respond echo", [*udpkit, "127.0.0.1:{port}", "--respond", "echo", "--rate-limit", "0"]),
        # the same without its busy poll (each wait sleeps at once, as sockperf's does)
        ("  ... --busy-poll 0", [*udpkit, "127.0.0.1:{port}", "--respond", "echo", "--rate-limit", "0",
                                 "--busy-poll", "0"]),
        # one wildcard socket: each reply from the address its request came to (IP_PKTINFO)
        ("  ... on 0.0.0.0", [*udpkit, "0.0.0.0:{port}", "--respond", "echo", "--rate-limit", "0"]),
        # the default: a port alone, so one socket for each family, waited on together with epoll
        ("  ... PORT (both families)", [*udpkit, "{port}", "--respond", "echo", "--rate-limit", "0"]),
    ):
        port += 1
        servers[label] = (port, start_server([a.replace("{port}", str(port)) for a in argv]))
        samples[label] = []
    try:
        # the order turns every round (ABC, CBA, ...): whichever goes first in a round measured up
        # to 3 % apart from the others on a quiet machine, where each wake-up from idle dominates
        for turn in range(2 * max(1, round(args.seconds / 0.5))):
            for label in list(servers)[:: 1 if turn % 2 == 0 else -1]:
                samples[label].append(ping_pong(servers[label][0], 0.5))
    finally:
        for _port, proc in servers.values():
            stop_server(proc)
    results = {}
    for label, got in samples.items():
        rate = statistics.median(s[0] for s in got)
        p50 = statistics.median(s[1] for s in got)
        p99 = statistics.median(s[2] for s in got)
        results[label] = rate
        print(f"{label:<42}{rate:>10.0f}{p50:>10.1f}{p99:>10.1f}")
    ratio = results["udpkit listen --respond echo"] / max(results["sockperf server"], 1)
    unpolled = results["  ... --busy-poll 0"] / max(results["sockperf server"], 1)
    wildcard = results["  ... on 0.0.0.0"] / max(results["sockperf server"], 1)
    both = results["  ... PORT (both families)"] / max(results["sockperf server"], 1)
    print(f"\nudpkit echo / sockperf server round trips per second: {ratio:.3f} (--busy-poll 0: {unpolled:.3f};"
          f" on 0.0.0.0: {wildcard:.3f}; PORT, both families: {both:.3f})")
    print("each round's ratio to sockperf server in that round (quartiles; the control is the noise floor):")
    for label in list(samples)[1:]:
        low, mid, high = round_quartiles(samples[label], samples["sockperf server"])
        print(f"  {label.strip(' .'):<40}{low:>8.3f}{mid:>8.3f}{high:>8.3f}")


def round_quartiles(ours: list[tuple[float, float, float]],
                    theirs: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """The quartiles of one server's round-trip rate over the reference's, round by round: each
    pair was measured within a second of each other, so the machine's drift over the run cancels
    and the spread is what one half-second round can tell apart."""
    ratios = [a[0] / b[0] for a, b in zip(ours, theirs) if b[0] > 0]
    if len(ratios) < 2:
        only = ratios[0] if ratios else 0.0
        return only, only, only
    low, mid, high = statistics.quantiles(ratios, n=4)
    return low, mid, high


def windowed(port: int, seconds: float, width: int) -> float:
    """``width`` requests in flight from one client for ``seconds``: answers a second. The client
    is cheap enough not to be the limit: it sends what is missing from the window with one
    ``sendmmsg`` and reads what came back with one ``recvmmsg`` (udpkit's C batch); a window that
    nothing answers for 100 ms is sent again whole (requests lost to a full buffer)."""
    from udpkit.net.mmsg import MSG_WAITFORONE, new_batch

    batch = new_batch(64, 2048, kind="c")
    assert batch is not None
    request = SOCKPERF_HEADER.pack(1, 3, 64) + b"\0" * (64 - SOCKPERF_HEADER.size)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 100_000))
        messages, fd = [(request, None)] * width, sock.fileno()
        answers = in_flight = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = 0
            while in_flight < width and start < width:  # (the batch sends 64 at most a call)
                took = batch.send(fd, socket.AF_INET, messages[: width - in_flight], 0)
                in_flight, start = in_flight + took, start + max(took, 1)
            try:
                got, _bytes, _senders = batch.tally(fd, MSG_WAITFORONE)
            except (BlockingIOError, TimeoutError):
                in_flight = 0
                continue
            answers, in_flight = answers + got, in_flight - got
    return answers / seconds


def window_part(args: argparse.Namespace, udpkit: list[str], port: int) -> None:
    """Several requests in flight from one client: where batching and segmented sends pay, and
    where (a few in flight) they must not cost round trips."""
    from udpkit.net.mmsg import implementations

    if "c" not in implementations():
        print("\nwindow: needs udpkit's C extension for its client; skipped")
        return
    print(f"\n{'requests in flight (answers/s)':<42}{'sockperf':>10}{'udpkit':>10}{'ratio':>8}")
    servers = {}
    for label, argv in (
        ("sockperf", ["sockperf", "server", "-i", "127.0.0.1", "-p", "{port}"]),
        ("udpkit", [*udpkit, {"port": "{port}"}.get(args.window_on, args.window_on + ":{port}"), "--respond", "echo",
                    "--rate-limit", "0", *args.udpkit_args]),
    ):
        port += 1
        servers[label] = (port, start_server([a.replace("{port}", str(port)) for a in argv]))
    mask = os.sched_getaffinity(0)
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the client on the other core than the servers
    try:
        for width in (int(w) for w in args.windows.split(",")):
            samples: dict[str, list[float]] = {label: [] for label in servers}
            for turn in range(2 * max(1, round(args.seconds / 2))):  # ABBA, half-second rounds
                for label in list(servers)[:: 1 if turn % 2 == 0 else -1]:
                    samples[label].append(windowed(servers[label][0], 0.5, width))
            theirs, ours = (statistics.median(samples[label]) for label in servers)
            print(f"{f'{width} in flight':<42}{theirs:>10.0f}{ours:>10.0f}{ours / max(theirs, 1):>7.2f}x")
    finally:
        os.sched_setaffinity(0, mask)
        for _port, proc in servers.values():
            stop_server(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=260_000)
    parser.add_argument("--record-to", default=RECORDING,
                        help="the recorders' file (/dev/shm/...: no disk writeback; /dev/null: no page cache)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="throughput: run the cases this many times, the order reversed each time")
    parser.add_argument("--udpkit", default=str(Path(sys.executable).with_name("udpkit")))
    add_busy_option(parser)
    parser.add_argument("--only", choices=["throughput", "ping-pong", "window"], help="run one of the parts")
    parser.add_argument("--windows", default="1,4,8,16,32,64,128", help="requests in flight, for the window part")
    parser.add_argument("--window-on", choices=["127.0.0.1", "0.0.0.0", "port"], default="127.0.0.1",
                        help="where udpkit's echo listens in the window part (port: the port alone, both families)")
    parser.add_argument("--udpkit-arg", dest="udpkit_args", action="append", default=[], metavar="ARG",
                        help="one more argument for udpkit's echo in the window part (e.g. --udpkit-arg=--busy-poll"
                             " --udpkit-arg=0); repeatable")
    args = parser.parse_args()
    for tool in ("sockperf", "socat"):
        if shutil.which(tool) is None:
            print(f"listen_bench: needs {tool} (apt-get install {tool})", file=sys.stderr)
            return 1
    netns = enter_netns()
    busy = start_load(args.busy)
    udpkit = [args.udpkit, "listen"]
    port = 11000
    try:
        print(f"udpkit: {args.udpkit}; {'own network namespace' if netns else 'host namespace (not root)'}; "
              f"{args.seconds:g} s per run, {args.rate} datagrams/s of 64 bytes offered"
              f"{describe(args.busy)}\n")
        if args.only in (None, "throughput"):
            throughput_part(args, udpkit, port)
        if args.only in (None, "ping-pong"):
            ping_pong_part(args, udpkit, port + 100)
        if args.only in (None, "window"):
            window_part(args, udpkit, port + 200)
    finally:
        stop_load(busy)
        if netns:
            subprocess.run(["ip", "netns", "delete", netns], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
