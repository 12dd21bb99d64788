"""``udpkit socat ADDRESS1 ADDRESS2``: socat's UDP address syntax, served by udpkit's listener.

The tutorial's ``socat UDP4-LISTEN:123,fork /dev/null`` and ``socat UDP6-LISTEN:123,ipv6only=1,fork
/dev/null`` run as written with ``udpkit`` in front. Like socat it prints nothing unless asked
(``-d``); ``-T SECONDS`` ends idle sessions, as socat's inactivity timeout ends its children.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Sequence
from typing import BinaryIO, NamedTuple, TextIO

from udpkit.cli._stdio import stdin_fd as _stdin_fd
from udpkit.cli.listen import serve_until_stopped, switch_user
from udpkit.compat.socat import ClientPlan, parse_socat
from udpkit.compat.socat_dump import TrafficDump
from udpkit.compat.socat_listen import listener_for, open_target
from udpkit.errors import UdpkitError, UsageError
from udpkit.listen import resolve_user

__all__ = ["run"]

HELP = """\
usage: udpkit socat [-d] [-v] [-x] [-T SECONDS] [-t SECONDS] [-u|-U] [-b SIZE] ADDRESS1 ADDRESS2

socat's UDP addresses, served by udpkit's listener in one process (sessions per peer for fork,
with no moment when the port is unbound).

ADDRESS1: UDP4-LISTEN:PORT | UDP6-LISTEN:PORT | UDP-LISTEN:PORT | UDP{,4,6}-RECVFROM:PORT | UDP{,4,6}-RECV:PORT
          options: fork, ipv6only=0|1, reuseaddr, so-reuseport, bind=ADDR, range=CIDR, max-children=N,
                   rcvbuf=N, su=USER, pf=ip4|ip6, so-bindtodevice=IF,
                   ip-add-membership=GROUP:IFACE|IFADDR[:IFACE], ip-add-source-membership=GROUP:IFADDR:SOURCE,
                   ipv6-join-group=GROUP:IFACE, ipv6-join-source-group=GROUP:IFACE:SOURCE, broadcast
ADDRESS2: /dev/null | STDOUT | STDERR | STDIO | - | ./FILE or /PATH | OPEN:FILE | GOPEN:FILE | CREATE:FILE | PIPE (echo)
          (OPEN/GOPEN/CREATE options: creat, append, trunc, excl, perm=MODE)
          | UDP{,4,6}:HOST:PORT | UDP{,4,6}-SENDTO:HOST:PORT (relay)
          | EXEC:PROGRAM ARGS | SYSTEM:SHELL-COMMAND (a program per session on pipes; pty is refused)
          | TCP{,4,6}:HOST:PORT (a TCP connection per session: the UDP-to-TCP bridge)
PORT: a number or a UDP service name (ntp, domain, …).
STDOUT prints what arrives; STDIO and - also send what is read from standard input to the latest peer.

  -d           print where it listens and, at the end, what it saw (on standard error)
  -v, -x       dump the traffic to standard error as socat does: text (-v), hex (-x), or both
  -T SECONDS   end a session after SECONDS without traffic (default 60; sessions are also capped by the
               open-files limit, the least recently active making room: a flood of ports cannot end it)
  -t SECONDS   client: after standard input ends, wait this long for replies (default 0.5)
  -u, -U       client: one direction only (-u first to second, -U the reverse)
  -b SIZE      client: send datagrams of at most SIZE bytes, read replies cut to SIZE

client:   udpkit socat - UDP4:HOST:PORT   standard input out as datagrams, replies on standard output
          (STDIN sends only, STDOUT receives only; the UDP address takes sp=PORT, bind=ADDR[:PORT],
          reuseaddr; a closed peer port: "Connection refused", exit 1, as socat)
          UDP-SENDTO and UDP-DATAGRAM send without connecting (DATAGRAM hears every host: groups,
          broadcast); options broadcast, ip-multicast-if, ip-multicast-loop, ip-multicast-ttl,
          ipv6-multicast-if, ipv6-multicast-hops, ip-add-membership, ipv6-join-group

examples:
  udpkit socat UDP4-LISTEN:123,fork /dev/null &                  the tutorial's IPv4 NTP stand-in
  udpkit socat UDP6-LISTEN:123,ipv6only=1,fork /dev/null &       and its IPv6 one
  udpkit socat UDP4-LISTEN:5353,fork UDP4:127.0.0.1:53           a UDP proxy, one upstream socket per peer
  udpkit socat UDP4-LISTEN:7,fork PIPE                           an echo service
  udpkit socat UDP4-LISTEN:5353,fork TCP4:10.0.0.53:53           a UDP-to-TCP bridge, a connection per peer
  udpkit socat -u UDP4-RECV:5000,ip-add-membership=239.1.1.1:eth0 -   print a group's datagrams
  udpkit socat - UDP4-DATAGRAM:10.0.0.255:5000,broadcast         ask the link, hear every answer
"""


class SocatArgs(NamedTuple):
    """socat's global options we take, and its two addresses."""

    verbose: bool
    idle: float | None
    linger: float
    first: str
    second: str
    direction: str | None
    block: int | None
    text_dump: bool = False
    hex_dump: bool = False


def parse_argv(argv: Sequence[str]) -> SocatArgs | None:
    """socat's global options we take (``-d``, ``-T``, ``-t``, ``-u``/``-U``, ``-b``, ``-v``, ``-x``),
    then two addresses; ``None`` for ``-h``."""
    verbose = text_dump = hex_dump = False
    direction: str | None = None
    block: int | None = None
    idle = None
    linger = 0.5  # socat's -t default
    args = list(argv)
    addresses: list[str] = []
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help", "-?"):
            return None
        if arg.startswith("-d") and set(arg[1:]) == {"d"}:
            verbose = True
        elif arg == "-v":
            text_dump = True
        elif arg == "-x":
            hex_dump = True
        elif arg in ("-T", "-t"):
            if not args:
                raise UsageError(f"option {arg} needs a value")
            value = args.pop(0)
            try:
                seconds = float(value)
            except ValueError:
                raise UsageError(f"option {arg}: bad number {value!r}") from None
            if not math.isfinite(seconds) or seconds < 0 or seconds > 1e9 or (arg == "-T" and seconds == 0):
                raise UsageError(f"option {arg}: expected a positive number of seconds")
            if arg == "-T":
                idle = seconds
            else:
                linger = seconds
        elif arg in ("-u", "-U"):
            direction = arg[1]  # a listener's direction already; a client sends or receives only
        elif arg == "-b":
            if not args or not args[0].isdigit() or not 1 <= int(args[0]) <= 65507:
                raise UsageError("option -b needs a size from 1 to 65507 bytes")
            block = int(args.pop(0))
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unsupported socat option {arg!r}")
        else:
            addresses.append(arg)
    if len(addresses) != 2:
        raise UsageError(f"socat takes two addresses, got {len(addresses)}")
    return SocatArgs(verbose, idle, linger, addresses[0], addresses[1], direction, block, text_dump, hex_dump)


def _client_tap(dumps: _Dumps, stdio_first: bool) -> Callable[[bytes, bool], None]:
    """What we send moves from standard input to the UDP address: "> " when standard input is the
    first address (``socat - UDP:…``), "< " when it is the second (``socat UDP:… -``)."""
    def tap(data: bytes, sent: bool) -> None:
        dumps(data, sent != stdio_first, None)
    return tap


class _Discard:
    """Where a send-only client's replies go (socat -u: the reverse direction is not transferred)."""

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass


def run_client(plan: ClientPlan, idle: float | None, linger: float, out: TextIO, block: int | None = None,
               err: TextIO | None = None, dump: Callable[[bytes, bool], None] | None = None) -> int:
    """``socat - UDP4:HOST:PORT``: standard input out as datagrams, replies to standard output.

    ``UDP-DATAGRAM`` and ``UDP-SENDTO`` use an unconnected socket: a datagram to a group or a
    broadcast address is answered from each host's own address (DATAGRAM takes every answer,
    SENDTO its peer's only). ``dump``: shown each datagram, ``True`` for what we send (``-v``/``-x``)."""
    from udpkit.net import enable_errors, icmp_reason, pump, read_errors, upstream_socket

    target = plan.target
    assert target.host is not None and target.port is not None
    try:
        family, _type, _proto, _name, address = socket.getaddrinfo(target.host, target.port, target.family or 0,
                                                                  socket.SOCK_DGRAM)[0]
    except (OSError, UnicodeError) as exc:
        raise UsageError(f"cannot resolve {target.host}: {exc}") from None
    stdin_fd = _stdin_fd() if plan.send else None
    if plan.send and stdin_fd is None:
        raise UdpkitError("standard input is not readable here")
    sink = getattr(out, "buffer", None) if plan.receive else _Discard()
    if sink is None:
        raise UdpkitError("standard output does not take bytes here")
    connected = plan.mode == "connect"
    try:
        sock = upstream_socket(family, address, plan.source, plan.reuseaddr, connect=connected, send=plan.multicast,
                               memberships=plan.memberships)
    except OSError as exc:
        where = "" if plan.source is None else f" from {plan.source[0] or '*'}:{plan.source[1]}"
        raise UdpkitError(f"cannot reach {target.host}:{target.port}{where}: {exc.strerror or exc}") from None
    with sock:
        if err is not None:  # -d: keep the ICMP error itself, to show it as the evidence
            enable_errors(sock)
        try:
            pump(sock, stdin_fd, sink, linger=linger if plan.receive else 0.0, idle=idle, until_refused=True,
                 chunk=block, peer=None if connected else address, only_peer=plan.mode == "sendto", tap=dump)
        except PermissionError as exc:
            hint = ("" if plan.multicast is not None and plan.multicast.broadcast else
                    " (a broadcast address needs socat's broadcast option: SO_BROADCAST)")
            raise UdpkitError(f"sendto {target.host}:{target.port}: {exc.strerror or exc}{hint}") from None
        except ConnectionRefusedError:
            # socat: "E read(5, …): Connection refused" and exit 1 — the peer's ICMP port unreachable
            if err is not None:
                for error in read_errors(sock, 4):
                    err.write(f"udpkit socat: ICMP {icmp_reason(sock.family, error.type, error.code)} (type {error.type}"
                              f" code {error.code}) from {error.offender or 'an unknown sender'}\n")
                err.flush()
            raise UdpkitError(f"Connection refused (ICMP port unreachable for {target.host}:{target.port})") from None
    return 0


class _Dumps:
    """``-v``/``-x`` for a listener: one :class:`TrafficDump` per session (socat counts per child),
    the oldest forgotten past ``_KEEP`` (sessions are bounded; their dumps' counters are too)."""

    _KEEP = 4096

    def __init__(self, text: bool, hexdump: bool, err: TextIO, swapped: bool = False) -> None:
        self.text, self.hexdump, self.err, self.swapped = text, hexdump, err, swapped
        self.dumps: dict[object, TrafficDump] = {}

    def __call__(self, data: bytes, outgoing: bool, key: object) -> None:
        dump = self.dumps.get(key)
        if dump is None:
            if len(self.dumps) >= self._KEEP:
                del self.dumps[next(iter(self.dumps))]
            dump = self.dumps[key] = TrafficDump(self.text, self.hexdump)
        self.err.write(dump.block(data, outgoing != self.swapped))
        self.err.flush()


def run(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    args = parse_argv(argv)
    if args is None:
        out.write(HELP)
        return 0
    plan = parse_socat(args.first, args.second, args.direction)
    dumps = _Dumps(args.text_dump, args.hex_dump, err) if (args.text_dump or args.hex_dump) else None
    if isinstance(plan, ClientPlan):
        # the standard-input side is socat's first address unless it was written second
        tap = None if dumps is None else _client_tap(dumps, plan.stdio_first)
        if plan.to_stderr:  # socat's STDERR address: the replies go to standard error
            return run_client(plan, args.idle, args.linger, err, args.block, err if args.verbose else None, tap)
        return run_client(plan, args.idle, args.linger, out, args.block, err if args.verbose else None, tap)
    idle, verbose = args.idle, args.verbose
    user = resolve_user(plan.user) if plan.user is not None else None
    listener = listener_for(plan, idle, getattr(out, "buffer", None), _stdin_fd(), tap=dumps,
                            stderr=getattr(err, "buffer", None))
    stream: BinaryIO | None = None
    try:
        bound = listener.open()
        switch_user(user, listener, bound)
        stream = open_target(plan)  # after the drop: as the user socat's su= names
        if stream is not None and listener.sink is not None:
            listener.sink.attach(stream)
        if verbose:
            err.write(f"udpkit socat: listening on udp {bound[0]}\n")
            err.flush()
        stats = serve_until_stopped(listener, err, "udpkit socat")
        if verbose:
            err.write(f"udpkit socat: {stats.summary()}\n")
        return 0
    finally:
        listener.close()
        if stream is not None:
            stream.close()
