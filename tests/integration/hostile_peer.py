"""The other host in the hostile-traffic tests: run inside a test's namespace, it sends what a
network may send — a legitimate request, datagrams to groups and broadcast addresses, forged
datagrams from a raw socket, many source ports — and prints what came back as one JSON line.

    python hostile_peer.py ask HOST PORT [--source IP] [--payload HEX] [--timeout S] [--port P]
    python hostile_peer.py forge SRC SPORT DST DPORT [--payload HEX] [--count N] [--random-sources: 198.18/15]
    python hostile_peer.py send HOST PORT --payload HEX [--count N] [--pace K]
    python hostile_peer.py group GROUP PORT --iface IF     (a multicast or, with --broadcast, a broadcast)
    python hostile_peer.py ports HOST PORT N                (N datagrams, each from a new source port)
    python hostile_peer.py dns HOST PORT NAME --rate R --seconds S   (bytes in and out, answers)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from udpkit.listen.pcap import ip_udp_packet  # noqa: E402


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def address(host: str, port: int) -> tuple[object, ...]:
    return socket.getaddrinfo(host, port, family_of(host.partition("%")[0]), socket.SOCK_DGRAM)[0][4]


def ask(args: argparse.Namespace) -> dict[str, object]:
    with socket.socket(family_of(args.host), socket.SOCK_DGRAM) as sock:
        if args.source or args.port:
            sock.bind(address(args.source or ("::" if ":" in args.host else "0.0.0.0"), args.port or 0))
        sock.settimeout(args.timeout)
        sent = time.monotonic()
        sock.sendto(bytes.fromhex(args.payload), address(args.host, args.port_to))
        try:
            reply, peer = sock.recvfrom(65535)
        except TimeoutError:
            return {"reply": None}
        except OSError as exc:
            return {"reply": None, "error": exc.strerror}
        return {"reply": reply.hex(), "from": peer[0], "rtt_ms": (time.monotonic() - sent) * 1000}


def forge(args: argparse.Namespace) -> dict[str, object]:
    family = family_of(args.dst)
    with socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        payload = bytes.fromhex(args.payload)
        rng = random.Random(1)
        for n in range(args.count):
            src, sport = args.src, args.sport
            if args.random_sources:
                src = f"198.{rng.randrange(18, 20)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                sport = rng.randrange(1024, 65536)
            raw.sendto(ip_udp_packet(src, sport, args.dst, args.dport, payload), (args.dst, 0))
            if args.pace and n % args.pace == 0:
                time.sleep(0.001)
    return {"sent": args.count}


def send(args: argparse.Namespace) -> dict[str, object]:
    with socket.socket(family_of(args.host), socket.SOCK_DGRAM) as sock:
        payload = bytes.fromhex(args.payload)
        for n in range(args.count):
            sock.sendto(payload, address(args.host, args.port))
            if args.pace and n % args.pace == 0:
                time.sleep(0.001)
    return {"sent": args.count}


def group(args: argparse.Namespace) -> dict[str, object]:
    family = family_of(args.group)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if args.broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, args.iface.encode())
        elif family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(args.iface))
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, args.iface.encode())
        sock.settimeout(0.5)
        target = (args.group, args.port, 0, socket.if_nametoindex(args.iface)) if family == socket.AF_INET6 \
            else (args.group, args.port)
        for _ in range(args.count):
            sock.sendto(bytes.fromhex(args.payload), target)
        replies = 0
        try:
            while True:
                sock.recvfrom(65535)
                replies += 1
        except (TimeoutError, OSError):
            pass
    return {"replies": replies}


def ports(args: argparse.Namespace) -> dict[str, object]:
    target = address(args.host, args.port)
    for _ in range(args.n):
        with socket.socket(family_of(args.host), socket.SOCK_DGRAM) as sock:
            sock.sendto(b"hello", target)
    return {"sent": args.n}


def dns_load(args: argparse.Namespace) -> dict[str, object]:
    import dns.message

    query = dns.message.make_query(args.name, "TXT", use_edns=0, payload=1232).to_wire()
    sent = asked = 0
    replies: list[int] = []  # the size of each reply
    with socket.socket(family_of(args.host), socket.SOCK_DGRAM) as sock:
        sock.bind((args.source or "0.0.0.0", 0))
        sock.setblocking(False)

        def drain() -> None:
            try:
                while True:
                    replies.append(len(sock.recv(65535)))
            except BlockingIOError:
                pass

        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            due = start + asked / args.rate
            while time.monotonic() < due:
                time.sleep(max(0.0, due - time.monotonic()))
            sock.sendto(query, (args.host, args.port))
            sent += len(query)
            asked += 1
            drain()
        time.sleep(0.3)
        drain()
    received, answers = sum(replies), sum(size > 100 for size in replies)
    return {"asked": asked, "bytes_out": sent, "bytes_in": received, "full_answers": answers}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ask")
    p.add_argument("host")
    p.add_argument("port_to", type=int)
    p.add_argument("--source")
    p.add_argument("--port", type=int)
    p.add_argument("--payload", default=b"udpkit legit".hex())
    p.add_argument("--timeout", type=float, default=3.0)
    p = sub.add_parser("forge")
    for name in ("src", "sport", "dst", "dport"):
        p.add_argument(name, type=int if "port" in name else str)
    p.add_argument("--payload", default=b"forged".hex())
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--random-sources", action="store_true")
    p.add_argument("--pace", type=int, default=0)
    p = sub.add_parser("send")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--payload", required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--pace", type=int, default=0)
    p = sub.add_parser("group")
    p.add_argument("group")
    p.add_argument("port", type=int)
    p.add_argument("--iface", required=True)
    p.add_argument("--broadcast", action="store_true")
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--payload", default=(b"\x23" + bytes(47)).hex())  # an NTP client request fits every service
    p = sub.add_parser("ports")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("n", type=int)
    p = sub.add_parser("dns")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("name")
    p.add_argument("--rate", type=float, default=10)
    p.add_argument("--seconds", type=float, default=3)
    p.add_argument("--source")
    args = parser.parse_args()
    result = {"ask": ask, "send": send, "forge": forge, "group": group, "ports": ports, "dns": dns_load}[args.cmd](args)
    print(json.dumps(result), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
