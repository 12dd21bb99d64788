"""The other host in the hostile-traffic tests: run inside a test's namespace, it sends what a
network may send — a legitimate request, datagrams to groups and broadcast addresses, forged
datagrams from a raw socket, many source ports — and prints what came back as one JSON line.

    python hostile_peer.py ask HOST PORT [--source IP] [--payload HEX] [--timeout S] [--port P]
    python hostile_peer.py forge SRC SPORT DST DPORT [--payload HEX] [--count N] [--random-sources: 198.18/15]
        [--vary START:END: those payload bytes random letters, each datagram]
    python hostile_peer.py send HOST PORT --payload HEX [--count N] [--pace K]
    python hostile_peer.py group GROUP PORT --iface IF     (a multicast or, with --broadcast, a broadcast)
    python hostile_peer.py ports HOST PORT N                (N datagrams, each from a new source port)
    python hostile_peer.py dns HOST PORT NAME --rate R --seconds S   (bytes in and out, answers)
    python hostile_peer.py sweep TARGET VICTIM --reply-from P,P --icmp-for P:T/C[@SENDER] --seconds S
        (an off-path forger: for S seconds, to every ephemeral port of VICTIM, datagrams "from"
        TARGET:P and ICMP errors "about" TARGET:P, quoting a datagram it can only guess; IPv4)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
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
        start, _, end = (args.vary or "0:0").partition(":")
        letters = b"abcdefghijklmnopqrstuvwxyz0123456789"
        for n in range(args.count):
            src, sport = args.src, args.sport
            if args.random_sources:
                src = f"198.{rng.randrange(18, 20)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                sport = rng.randrange(1024, 65536)
            if args.vary:  # e.g. a DNS question's first label: a random name each time
                payload = payload[: int(start)] + bytes(rng.choices(letters, k=int(end) - int(start))) + \
                    payload[int(end) :]
            raw.sendto(ip_udp_packet(src, sport, args.dst, args.dport, payload), (args.dst, 0))
            if args.pace and n % args.pace == 0:
                time.sleep(0.001)
    return {"sent": args.count}


def sweep(args: argparse.Namespace) -> dict[str, object]:
    low, high = 32768, 60999  # Linux's default ip_local_port_range: where the prober's port is
    replies = [int(p) for p in args.reply_from.split(",") if p]
    errors = []
    for item in filter(None, args.icmp_for.split(",")):
        port, _, rest = item.partition(":")
        kind, _, sender = rest.partition("@")
        icmp_type, _, code = kind.partition("/")
        errors.append((int(port), int(icmp_type), int(code), sender or args.target))
    packets = 0
    payload = bytes.fromhex(args.payload) if args.payload else b"forged"
    deadline = time.monotonic() + args.seconds
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        while time.monotonic() < deadline:
            for port in range(low, high + 1):
                for source in replies:
                    raw.sendto(ip_udp_packet(args.target, source, args.victim, port, payload), (args.victim, 0))
                    packets += 1
                for about, icmp_type, code, sender in errors:
                    quoted = ip_udp_packet(args.victim, port, args.target, about, bytes(8))[:36]  # a guessed nonce
                    raw.sendto(icmp_packet(sender, args.victim, icmp_type, code, quoted), (args.victim, 0))
                    packets += 1
                if time.monotonic() >= deadline:
                    break
    return {"sent": packets}


def icmp_packet(src: str, dst: str, icmp_type: int, code: int, quoted: bytes) -> bytes:
    """An IPv4 ICMP error from ``src`` to ``dst`` quoting ``quoted`` (an IP header and the start of its payload)."""
    def checksum(data: bytes) -> int:
        data += b"\0" * (len(data) % 2)
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF

    body = struct.pack("!BBHI", icmp_type, code, 0, 0) + quoted
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, socket.IPPROTO_ICMP, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + body


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
        if args.source:
            sock.bind((args.source, 0))
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
        senders = []
        try:
            while True:
                _reply, sender = sock.recvfrom(65535)
                replies += 1
                senders.append(sender[0])
        except (TimeoutError, OSError):
            pass
    return {"replies": replies, "from": senders}


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
    p.add_argument("--vary", help="START:END: these payload bytes random letters, each datagram anew")
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
    p.add_argument("--source", help="send from this address of ours")
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
    p = sub.add_parser("sweep")
    p.add_argument("target")
    p.add_argument("victim")
    p.add_argument("--reply-from", default="")
    p.add_argument("--icmp-for", default="")
    p.add_argument("--seconds", type=float, default=3)
    p.add_argument("--payload", default="", help="the forged datagrams' bytes, in hex (default: 'forged')")
    args = parser.parse_args()
    result = {"ask": ask, "send": send, "forge": forge, "group": group, "ports": ports, "dns": dns_load,
              "sweep": sweep}[args.cmd](args)
    print(json.dumps(result), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
