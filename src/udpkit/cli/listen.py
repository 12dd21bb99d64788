"""``udpkit listen``: bind UDP sockets on IPv4 and IPv6 and serve them with a responder."""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import signal
import socket
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, BinaryIO, TextIO

from udpkit.addr import Endpoint, parse_address
from udpkit.cli._argparse import Parser
from udpkit.errors import PermissionDenied, UdpkitError, UsageError
from udpkit.listen import FORMATS, Listener, ListenerStats, Sink
from udpkit.net import BindOptions
from udpkit.services import RESPONDERS, Responder, responder

__all__ = ["drop_privileges", "endpoints_for", "install_signals", "run"]

_Handler = Callable[[int, FrameType | None], Any] | int | None

EPILOG = """\
examples:
  udpkit listen 9999                         discard on 0.0.0.0:9999 and [::]:9999 (v6-only), like the
                                             tutorial's two socat commands
  udpkit listen 7007 --respond echo          an echo service on both families
  sudo udpkit listen 123 --respond ntp --user nobody      an NTP server that ntpdig and chronyd accept
  udpkit listen 5353 --respond dns --zone example.zone    an authoritative DNS server for a zone file
  udpkit listen 127.0.0.1:5353 --out - --format hex       print every datagram as a hex dump
  udpkit listen 5353 --relay 127.0.0.1:53 --idle-timeout 30  a UDP proxy, one upstream socket per peer
  sudo udpkit listen 123 --user nobody --out ntp.pcap --format pcap
"""


def build_parser() -> Parser:
    p = Parser("udpkit listen", "Bind UDP sockets and serve them: discard, echo, daytime, time, ntp or dns.", EPILOG)
    p.add_argument("addresses", nargs="*", metavar="ADDRESS",
                   help="PORT (both families), HOST:PORT, [V6]:PORT, udp4:PORT or udp6:PORT; default: a free port")
    p.add_argument("--respond", default="discard", choices=sorted([*RESPONDERS, "dns"]),
                   help="the service to run (default: discard)")
    svc = p.add_argument_group("ntp and dns")
    svc.add_argument("--stratum", type=int, default=10, metavar="N", help="NTP stratum to report (default 10, refid LOCL)")
    svc.add_argument("--refid", default="LOCL", metavar="ID", help="NTP reference id, up to four letters")
    svc.add_argument("--leap", type=int, choices=range(4), default=0, help="NTP leap indicator to report")
    svc.add_argument("--root-delay", type=float, default=0.0, metavar="S", help="NTP root delay to report (seconds)")
    svc.add_argument("--root-dispersion", type=float, default=0.001, metavar="S",
                     help="NTP root dispersion to report (seconds; default 0.001)")
    svc.add_argument("--sync-state", action="store_true",
                     help="NTP: report the host clock's real state (adjtimex): unsynchronized -> leap 3, "
                          "its error bound as root dispersion")
    svc.add_argument("--rate-limit", type=_positive_float, metavar="PER_S",
                     help="answers a second per client (NTP: then kiss-o'-death RATE; DNS: then silence)")
    svc.add_argument("--zone", action="append", metavar="FILE",
                     help="DNS: a zone (RFC 1035 master file, or a hosts file) to answer for; repeatable")
    svc.add_argument("--origin", metavar="NAME", help="DNS: the zone's origin, for files without $ORIGIN")
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="only", action="store_const", const=socket.AF_INET, help="IPv4 only")
    fam.add_argument("-6", dest="only", action="store_const", const=socket.AF_INET6, help="IPv6 only")
    stack = p.add_mutually_exclusive_group()
    stack.add_argument("--dual-stack", action="store_true",
                       help="one IPv6 socket that also receives IPv4 (peers show as ::ffff:a.b.c.d)")
    stack.add_argument("--ipv6only", action="store_true", help="IPv6 sockets refuse IPv4 (the default)")
    p.add_argument("--reuseaddr", action="store_true", help="set SO_REUSEADDR")
    p.add_argument("--reuseport", action="store_true", help="set SO_REUSEPORT (several listeners share the port)")
    p.add_argument("--bind-device", metavar="IFACE", help="receive only through this interface (SO_BINDTODEVICE)")
    p.add_argument("--rcvbuf", type=_positive_int, metavar="BYTES", help="receive buffer size (SO_RCVBUF)")
    p.add_argument("--out", metavar="FILE", help="record every datagram to FILE ('-' for standard output)")
    p.add_argument("--format", choices=FORMATS, default=None, help="how --out records datagrams (default: text)")
    p.add_argument("--fork", action="store_true",
                   help="a session per peer: its own socket, connected to it (socat's fork, in one process)")
    p.add_argument("--idle-timeout", type=_positive_float, metavar="S", help="end a session after S quiet seconds")
    p.add_argument("--max-peers", type=_positive_int, metavar="N", help="at most N sessions; the least recently active goes first")
    p.add_argument("--allow", action="append", type=_network, metavar="CIDR",
                   help="accept datagrams only from these networks (repeatable; socat's range=)")
    p.add_argument("--relay", metavar="HOST:PORT",
                   help="forward each peer's datagrams to HOST:PORT through its own socket and send the answers back")
    p.add_argument("--count", type=_positive_int, metavar="N", help="stop after N datagrams")
    p.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds")
    p.add_argument("--user", metavar="USER", help="after binding, drop root privileges to USER")
    p.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                   help="N processes sharing each port with SO_REUSEPORT (for machines with more cores)")
    return p


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise UsageError(f"bad network {text!r}: expected an address or CIDR like 10.0.0.0/8 or ::1/128") from None


def resolve_relay(text: str) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """``HOST:PORT`` / ``[V6]:PORT`` -> (family, socket address); host names are resolved (first answer)."""
    host, colon, port_text = text.rpartition(":")
    if not colon or not host:
        raise UsageError(f"bad --relay {text!r}: expected HOST:PORT")
    from udpkit.addr import parse_port

    port = parse_port(port_text, allow_zero=False)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        family, _type, _proto, _name, sockaddr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
    except (OSError, UnicodeError) as exc:
        raise UsageError(f"bad --relay {text!r}: cannot resolve {host}: {exc}") from None
    return family, (str(sockaddr[0]), int(sockaddr[1]))


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UsageError(f"expected a positive number of seconds, got {text!r}")
    return value


def endpoints_for(addresses: Sequence[str], only: int | None, dual_stack: bool) -> list[Endpoint]:
    """The sockets to open: a bare port is both wildcards (or one dual-stack IPv6 socket)."""
    chosen: list[Endpoint] = []
    for text in addresses or ["0"]:
        eps = parse_address(text)
        if only is not None:
            eps = tuple(ep for ep in eps if ep.family == only)
            if not eps:
                raise UsageError(f"{text} is not an {'IPv4' if only == socket.AF_INET else 'IPv6'} address")
        if dual_stack and len(eps) == 2:
            eps = tuple(ep for ep in eps if ep.family == socket.AF_INET6)
        chosen.extend(eps)
    return chosen


def drop_privileges(user: str) -> None:
    """Become ``user`` (after binding). Everything the command still needs is imported already: a
    Python installed where ``user`` may not read (e.g. under /root) could not import it later."""

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"--user {user}: no such user") from None
    if os.geteuid() != 0:
        raise PermissionDenied(f"--user {user}: only root can change user")
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def build_responder(args: Any) -> Responder:
    """The responder ``--respond`` names, with the options of NTP and DNS."""
    if args.respond == "ntp":
        from udpkit.net.clock import clock_state, measure_precision
        from udpkit.services.ntp import LEAP_UNSYNCHRONIZED, NtpResponder

        if args.root_delay < 0 or args.root_dispersion < 0:
            raise UsageError("--root-delay and --root-dispersion cannot be negative")
        leap, dispersion, stratum = args.leap, args.root_dispersion, args.stratum
        if args.sync_state:
            state = clock_state()
            if state is not None:
                dispersion = state.max_error
                if not state.synchronized:
                    leap, stratum = LEAP_UNSYNCHRONIZED, 16
        try:
            return NtpResponder(stratum=stratum, refid=args.refid.encode("ascii", "replace")[:4], leap=leap,
                                root_delay=args.root_delay, root_dispersion=dispersion, precision=measure_precision(),
                                rate_limit=args.rate_limit)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.respond == "dns":
        if not args.zone:
            raise UsageError("--respond dns needs --zone FILE")
        from udpkit.services.dns import DnsResponder, load_zone

        try:
            zones = [load_zone(path, args.origin) for path in args.zone]
        except OSError as exc:
            raise UsageError(f"--zone: {exc.strerror}: {exc.filename}") from None
        return DnsResponder(zones, rate_limit=args.rate_limit)
    if args.zone:
        raise UsageError("--zone goes with --respond dns")
    return responder(args.respond)


def run(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    args = build_parser().parse_args(list(argv))
    if args.format is not None and args.out is None:
        raise UsageError("--format needs --out")
    endpoints = endpoints_for(args.addresses, args.only, args.dual_stack)
    options = BindOptions(v6only=not args.dual_stack, reuseaddr=args.reuseaddr, reuseport=args.reuseport,
                          device=args.bind_device, rcvbuf=args.rcvbuf)
    stream: BinaryIO | None = None
    if args.workers > 1:
        if args.out is not None:
            raise UsageError("--out records with one worker: drop --workers or --out")
        options = options._replace(reuseport=True)
    relay = resolve_relay(args.relay) if args.relay else None
    if relay is not None and args.respond != "discard":
        raise UsageError("--relay forwards datagrams; it cannot be combined with --respond")
    if (args.idle_timeout or args.max_peers) and not (args.fork or relay):
        raise UsageError("--idle-timeout and --max-peers need --fork (or --relay)")
    sink = None
    if args.out is not None:
        stream = getattr(out, "buffer", None) if args.out == "-" else _open_out(args.out, args.format or "text")
        if stream is None:
            raise UdpkitError("standard output does not take bytes here")
        sink = Sink(stream, args.format or "text")
    listener = Listener(endpoints, respond=build_responder(args), bind=options, count=args.count, duration=args.duration,
                        fork=args.fork, idle_timeout=args.idle_timeout, max_peers=args.max_peers,
                        allow=args.allow, relay=relay, sink=sink)
    try:
        bound = listener.open()
        if args.user:
            drop_privileges(args.user)
        where = ", ".join(f"udp {ep}{' (v6only)' if ep.family == socket.AF_INET6 and not args.dual_stack else ''}"
                          for ep in bound)
        what = f"relay to {args.relay}" if relay else args.respond
        err.write(f"udpkit listen: {what} on {where}{' (a session per peer)' if args.fork or relay else ''}\n")
        err.flush()
        workers = _start_workers(args.workers - 1, listener, bound)
        previous = install_signals(listener, err)
        try:
            stats = listener.serve()
        finally:
            install_signals(listener, err, restore=previous)
        stats = _join_workers(workers, stats)
        err.write(f"udpkit listen: {stats.summary()}{f' ({args.workers} workers)' if workers else ''}\n")
        counted = getattr(listener.responder, "stats", None)  # NTP and DNS: what was answered, what dropped, why
        if isinstance(counted, dict) and any(counted.values()):
            details = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in counted.items() if value)
            err.write(f"udpkit listen: {listener.responder.name}: {details}\n")
        return 0
    finally:
        listener.close()
        if stream is not None and args.out != "-":
            stream.close()


def _open_out(path: str, fmt: str) -> BinaryIO:
    """Text records are appended to an existing file; a pcap file starts afresh (one file header)."""
    try:
        return open(path, "wb" if fmt == "pcap" else "ab")
    except OSError as exc:
        raise UdpkitError(f"cannot open {path}: {exc.strerror}") from None


def _start_workers(count: int, listener: Listener, bound: list[Endpoint]) -> list[tuple[int, int]]:
    """Fork ``count`` more processes, each with sockets of its own on the same ports (SO_REUSEPORT,
    so the kernel spreads peers over them); each reports its statistics through a pipe at exit."""
    workers = []
    for _ in range(count):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: its own listener on the resolved ports, then report and leave
            status = 1
            try:
                os.close(read_fd)
                for sock in listener.sockets:
                    sock.close()
                mine = Listener(bound, respond=listener.responder, bind=listener.bind_options,
                                count=listener.count, duration=listener.duration, fork=listener.sessions_on,
                                idle_timeout=listener.idle_timeout, max_peers=listener.max_peers,
                                allow=listener.allow, relay=listener.relay)
                mine.open()
                signal.signal(signal.SIGTERM, lambda signum, frame: mine.stop())
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                os.write(write_fd, json.dumps(mine.serve()._asdict()).encode())
                mine.close()
                status = 0
            finally:
                os._exit(status)
        os.close(write_fd)
        workers.append((pid, read_fd))
    return workers


def _join_workers(workers: list[tuple[int, int]], stats: ListenerStats) -> ListenerStats:
    """Stop the workers (by the PIDs we forked) and add their statistics to ours."""
    totals = stats._asdict()
    for pid, read_fd in workers:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        chunks = []
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
        os.close(read_fd)
        os.waitpid(pid, 0)
        if chunks:
            for name, value in json.loads(b"".join(chunks)).items():
                totals[name] += value
    return ListenerStats(**totals)


def install_signals(
    listener: Listener, err: TextIO, name: str = "udpkit listen", restore: dict[int, _Handler] | None = None
) -> dict[int, _Handler]:
    """SIGINT/SIGTERM stop cleanly (the workers are stopped once ``serve`` returns); SIGUSR1 prints
    the statistics so far. ``restore``: put back the handlers a previous call returned."""
    if restore is not None:
        for signum, handler in restore.items():
            signal.signal(signum, handler)
        return {}

    def stop(signum: int, frame: FrameType | None) -> None:
        listener.stop()

    def report(signum: int, frame: FrameType | None) -> None:
        err.write(f"{name}: {listener.stats.summary()}\n")
        err.flush()

    previous: dict[int, _Handler] = {}
    for signum, handler in ((signal.SIGINT, stop), (signal.SIGTERM, stop), (signal.SIGUSR1, report)):
        previous[signum] = signal.signal(signum, handler)
    return previous
