"""``udpkit listen``: bind UDP sockets on IPv4 and IPv6 and serve them with a responder."""

from __future__ import annotations

import ipaddress
import math
import pwd
import socket
from collections.abc import Sequence
from typing import Any, BinaryIO, TextIO

from udpkit.addr import Endpoint, parse_address
from udpkit.cli._argparse import Parser
from udpkit.errors import UdpkitError, UsageError
from udpkit.files import open_output
from udpkit.listen import (
    DEFAULT_BUSY_POLL_US,
    DEFAULT_IDLE_TIMEOUT,
    FORMATS,
    Listener,
    ListenerStats,
    Sink,
    Workers,
    drop_privileges,
    install_signals,
    resolve_user,
)
from udpkit.net import BindOptions, Membership, parse_membership
from udpkit.net.bind import receive_buffer, rmem_max, unprivileged_port_start
from udpkit.services import RESPONDERS, Responder

__all__ = ["endpoints_for", "report_to", "run", "serve_until_stopped", "switch_user"]

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
    svc.add_argument("--stratum", type=_positive_int, default=10, metavar="N",
                     help="NTP stratum to report, 1..15 (default 10, refid LOCL)")
    svc.add_argument("--refid", default="LOCL", metavar="ID", help="NTP reference id, up to four letters")
    svc.add_argument("--leap", type=int, choices=range(4), default=0, help="NTP leap indicator to report")
    svc.add_argument("--root-delay", type=_number, default=0.0, metavar="S", help="NTP root delay to report (seconds)")
    svc.add_argument("--root-dispersion", type=_number, default=0.001, metavar="S",
                     help="NTP root dispersion to report (seconds; default 0.001)")
    svc.add_argument("--sync-state", action="store_true",
                     help="NTP: report the host clock's real state (adjtimex): unsynchronized -> leap 3, "
                          "its error bound as root dispersion")
    svc.add_argument("--rate-limit", type=_number, metavar="PER_S",
                     help="answers a second per client address; 0 turns it off. Default: echo, daytime and time"
                          " 100 (a burst of 200: a reflection loop between two services dies within"
                          " milliseconds), dns 20 (BIND-style RRL: then silence, every 2nd time a truncated"
                          " answer), ntp none (it never answers a server, nor more bytes than it got; with a"
                          " limit, kiss-o'-death RATE)")
    svc.add_argument("--low-ports", action="store_true",
                     help="echo, daytime, time: also answer peers whose source port is below 1024 (refused"
                          " by default: another service's port, the start of a reflection loop)")
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
    p.add_argument("--rcvbuf", type=_positive_int, metavar="BYTES",
                   help="receive buffer size (SO_RCVBUF) of every socket: listening, sessions, relay upstreams")
    p.add_argument("--out", metavar="FILE", help="record every datagram to FILE ('-' for standard output)")
    p.add_argument("--format", choices=FORMATS, default=None, help="how --out records datagrams (default: text)")
    p.add_argument("--fork", action="store_true",
                   help="a session per peer: its own socket, connected to it (socat's fork, in one process)")
    p.add_argument("--idle-timeout", type=_number, metavar="S",
                   help=f"end a session after S quiet seconds (default {DEFAULT_IDLE_TIMEOUT:.0f}; 0: never)")
    p.add_argument("--max-peers", type=_positive_int, metavar="N",
                   help="at most N sessions; the least recently active goes first (default: what the open-files"
                        " limit allows, less a margin: 896 sessions under ulimit -n 1024)")
    p.add_argument("--answer-groups", action="store_true",
                   help="also answer datagrams sent to a multicast or broadcast address (not answered by default:"
                        " one datagram would draw an answer from every host of the link)")
    p.add_argument("--join", action="append", type=parse_membership, default=[], metavar="GROUP[%IFACE]",
                   help="join a multicast group (repeatable; SOURCE@GROUP%%IFACE for one sender only) and answer"
                        " its datagrams, from the interface's own address")
    p.add_argument("--broadcast", action="store_true",
                   help="answer datagrams sent to a broadcast address (received, not answered, without it)")
    p.add_argument("--allow", action="append", type=_network, metavar="CIDR",
                   help="accept datagrams only from these networks (repeatable; socat's range=)")
    p.add_argument("--relay", metavar="HOST:PORT",
                   help="forward each peer's datagrams to HOST:PORT through its own socket and send the answers back")
    p.add_argument("--count", type=_positive_int, metavar="N", help="stop after N datagrams")
    p.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds")
    p.add_argument("--user", metavar="USER",
                   help="after binding, drop root privileges to USER (keeping only CAP_NET_BIND_SERVICE when"
                        " --fork sessions need a port below 1024); --out is then opened as USER")
    p.add_argument("--busy-poll", type=_whole_number, metavar="USEC",
                   help=f"answering without sessions (echo, DNS; not ntp, time or daytime, which read receive times):"
                        f" poll up to USEC microseconds for the next request before sleeping (default"
                        f" {DEFAULT_BUSY_POLL_US}; 0: never); a client waiting for each answer then finds the core"
                        f" awake. It backs off when the core is wanted or requests come slower, so an idle or shared"
                        f" server costs next to nothing")
    p.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                   help="N processes sharing each port with SO_REUSEPORT (for machines with more cores)")
    return p


def _say_if_capped(asked: int, sockets: list[socket.socket], err: TextIO) -> None:
    """One line when the kernel gave a smaller receive buffer than --rcvbuf asked for (an
    unprivileged process is capped at net.core.rmem_max; socat says nothing), with the way out."""
    got = min((receive_buffer(sock) for sock in sockets), default=asked)
    if got < asked:
        cap = rmem_max()
        err.write(f"udpkit listen: --rcvbuf {asked} gave {got} bytes: the kernel caps it at net.core.rmem_max"
                  f"{f' ({cap})' if cap is not None else ''}; raise that (sysctl -w net.core.rmem_max={asked}) "
                  f"or run with CAP_NET_ADMIN\n")


def _positive_int(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1 << 31:
        raise UsageError(f"expected a positive whole number up to {1 << 31}, got {text!r}")
    return int(text)


def _whole_number(text: str) -> int:
    if not text.isdigit() or len(text) > 12:
        raise UsageError(f"expected a whole number, got {text!r}")
    return int(text)


def _number(text: str) -> float:
    """A finite number from 0 to 1e9 (seconds, answers a second): ``nan``, ``inf``, ``1e400`` refused."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or value > 1e9:
        raise UsageError(f"expected a number from 0 to 1e9, got {text!r}")
    return value


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
    value = _number(text)
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


def build_responder(args: Any) -> Responder:
    """The responder ``--respond`` names, with the options of NTP and DNS."""
    if args.respond == "ntp":
        from udpkit.net.clock import clock_state, measure_precision
        from udpkit.services.ntp import LEAP_UNSYNCHRONIZED, NtpResponder

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
        from udpkit.services.dns import DEFAULT_RATE_LIMIT, DnsResponder, load_zone

        zones = [load_zone(path, args.origin) for path in args.zone]
        return DnsResponder(zones, rate_limit=DEFAULT_RATE_LIMIT if args.rate_limit is None else args.rate_limit)
    if args.zone:
        raise UsageError("--zone goes with --respond dns")
    from udpkit.services import classic

    if args.respond == "discard":
        if args.rate_limit is not None:
            raise UsageError("--rate-limit limits answers, and discard never answers")
        return classic.Discard()
    factory = {"echo": classic.Echo, "daytime": classic.Daytime, "time": classic.Time}[args.respond]
    return factory(rate_limit=classic.DEFAULT_RATE_LIMIT if args.rate_limit is None else args.rate_limit,
                   low_ports=args.low_ports)


def switch_user(user: pwd.struct_passwd | None, listener: Listener, bound: Sequence[Endpoint]) -> None:
    """Drop root for ``user`` after binding, keeping ``CAP_NET_BIND_SERVICE`` only if sessions will
    bind the listening port again and it is a privileged one."""
    if user is None:
        return
    keep = listener.config.sessions and any(0 < ep.port < unprivileged_port_start() for ep in bound)
    drop_privileges(user, keep_bind=keep)


def report_to(err: TextIO, name: str) -> Any:
    """SIGUSR1's report: the statistics so far, one line on ``err``."""
    def report(stats: ListenerStats) -> None:
        err.write(f"{name}: {stats.summary()}\n")
        err.flush()
    return report


def check_memberships(memberships: Sequence[Membership], endpoints: Sequence[Endpoint]) -> None:
    """Every group needs a socket that receives it: one of its family, bound to the wildcard or the
    group itself (Linux does not hand group datagrams to a socket bound to a unicast address)."""
    for membership in memberships:
        if not any(ep.family == membership.family and ep.ip.partition("%")[0] in ("0.0.0.0", "::", membership.group)
                   for ep in endpoints):
            kind = "IPv4" if membership.family == socket.AF_INET else "IPv6"
            raise UsageError(f"--join {membership}: nothing listens on an {kind} wildcard or on the group itself"
                             f" (listen on PORT, {'0.0.0.0' if kind == 'IPv4' else '[::]'}:PORT or the group)")


def serve_until_stopped(listener: Listener, err: TextIO, name: str) -> ListenerStats:
    """Serve with SIGINT/SIGTERM stopping and SIGUSR1 reporting; then say whether recording failed."""
    previous = install_signals(listener, report_to(err, name))
    try:
        stats = listener.serve()
    finally:
        install_signals(listener, report_to(err, name), restore=previous)
    sink = listener.sink
    if sink is not None and sink.failure is not None:
        err.write(f"{name}: recording stopped ({sink.failure}): {sink.recorded} datagrams recorded,"
                  f" {sink.not_recorded} not\n")
    return stats


def run(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    args = build_parser().parse_args(list(argv))
    if args.format is not None and args.out is None:
        raise UsageError("--format needs --out")
    endpoints = endpoints_for(args.addresses, args.only, args.dual_stack)
    options = BindOptions(v6only=not args.dual_stack, reuseaddr=args.reuseaddr, reuseport=args.reuseport,
                          device=args.bind_device, rcvbuf=args.rcvbuf, memberships=tuple(args.join))
    check_memberships(args.join, endpoints)
    if args.workers > 1:
        if args.out is not None:
            raise UsageError("--out records with one worker: drop --workers or --out")
        if args.workers > 64:
            raise UsageError("--workers: at most 64")
        options = options._replace(reuseport=True)
    relay = resolve_relay(args.relay) if args.relay else None
    if args.busy_poll is not None and args.respond == "discard" and relay is None:
        raise UsageError("--busy-poll is for a listener that answers: discard never does")
    if relay is not None and args.respond != "discard":
        raise UsageError("--relay forwards datagrams; it cannot be combined with --respond")
    if (args.idle_timeout is not None or args.max_peers) and not (args.fork or relay):
        raise UsageError("--idle-timeout and --max-peers need --fork (or --relay)")
    user = resolve_user(args.user) if args.user is not None else None
    stdout = None
    sink = None
    if args.out is not None:
        if args.out == "-":
            stdout = getattr(out, "buffer", None)
            if stdout is None:
                raise UdpkitError("standard output does not take bytes here")
        sink = Sink(stdout, args.format or "text")
    listener = Listener(endpoints, respond=build_responder(args), bind=options, count=args.count, duration=args.duration,
                        fork=args.fork, idle_timeout=args.idle_timeout, max_peers=args.max_peers,
                        allow=args.allow, relay=relay, sink=sink, answer_groups=args.answer_groups,
                        answer_multicast=bool(args.join), answer_broadcast=args.broadcast,
                        busy_poll_us=DEFAULT_BUSY_POLL_US if args.busy_poll is None else args.busy_poll)
    stream: BinaryIO | None = None
    try:
        bound = listener.open()
        switch_user(user, listener, bound)
        if sink is not None and stdout is None:
            # opened after the drop, as the user the server runs as; a pcap file starts afresh
            stream = open_output(args.out, truncate=(args.format == "pcap"))
            sink.attach(stream)
        where = ", ".join(f"udp {ep}{' (v6only)' if ep.family == socket.AF_INET6 and not args.dual_stack else ''}"
                          for ep in bound)
        what = f"relay to {args.relay}" if relay else args.respond
        sessions = ""
        if listener.config.sessions:
            idle = listener.config.idle_timeout
            sessions = (f" (a session per peer, at most {listener.config.max_sessions},"
                        f" ending after {'never' if idle is None else f'{idle:g} s'} idle)")
        joined = f"; joined {', '.join(map(str, args.join))}" if args.join else ""
        err.write(f"udpkit listen: {what} on {where}{sessions}{joined}\n")
        if args.rcvbuf:
            _say_if_capped(args.rcvbuf, listener.sockets, err)
        err.flush()
        from udpkit.cli import debugging

        if debugging():
            for line in listener.receive_paths():
                err.write(f"udpkit listen: receive path: {line}\n")
            err.flush()
        workers = Workers(listener, args.workers - 1, bound)
        stats = serve_until_stopped(listener, err, "udpkit listen")
        stats = workers.join(stats)
        err.write(f"udpkit listen: {stats.summary()}{f' ({args.workers} workers)' if args.workers > 1 else ''}\n")
        polled = listener.busy_poll()
        if debugging() and polled is not None and any(polled):
            err.write(f"udpkit listen: busy poll: {polled[0]} requests caught awake, {polled[1]} windows ran out,"
                      f" {polled[2]} cut short (the core was wanted)\n")
        return 0
    finally:
        listener.close()
        if stream is not None:
            stream.close()
