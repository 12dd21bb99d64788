"""``udpkit ss``: iproute2's ``ss`` for UDP and TCP sockets — same flags, same selection, same columns.

Parsing follows ``ss``'s getopt string, its protocol and family selection and its ``state``/``exclude``
words; the listings come from :func:`udpkit.inventory.scan_udp_sockets` and ``scan_tcp_sockets``;
``-s`` reads ``/proc/net/sockstat{,6}`` and ``/proc/net/snmp`` as ss does; the table is laid out by
:mod:`udpkit.cli._sstable` over every listed socket at once, so the columns line up across protocols.
"""

from __future__ import annotations

import gc
import os
from _socket import AF_INET, AF_INET6  # not socket: see udpkit.inventory._netlink
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, compress, repeat
from operator import is_
from udpkit.errors import UsageError
from udpkit.inventory import Backend, Process, SocketTable, TcpSocket, UdpSocket, scan_tcp_sockets
from udpkit.inventory import _records as _S  # the kernel's state numbers, and ss's names for them
from udpkit.inventory import cgroup_path_for_id, scan_udp_sockets, service_name, socket_owners
from udpkit.inventory.summary import read_summary

TYPE_CHECKING = False  # typing is not imported at run time: see udpkit._typing
if TYPE_CHECKING:
    from typing import Any, NamedTuple, TextIO
else:
    from udpkit._typing import NamedTuple

__all__ = ["SsOptions", "parse_args", "render_text", "run"]

HELP = """\
usage: udpkit ss [OPTIONS] [FILTER]

List UDP and TCP sockets as iproute2's ss does, from the kernel's sock_diag netlink interface
(or /proc/net/{udp,tcp} where netlink is refused). Without -t, -u, -A, -f, -4 or -6 it lists UDP
sockets (ss would list every kind); -4, -6 and -f list UDP and TCP with the Netid column.

  -h, --help          this message
  -V, --version       output version information
  -n, --numeric       don't resolve service names
  -a, --all           display connected and unconnected sockets
  -l, --listening     display unconnected (listening) sockets only
  -e, --extended      show uid, inode, cookie, cgroup, v6only, shutdown
  -m, --memory        show socket memory usage (skmem, with the drop count)
  -p, --processes     show the processes using each socket
  -o, --options       show timer information (TCP; UDP sockets have none)
  -i, --info          show internal TCP information (tcp_info; nothing more for UDP)
  -s, --summary       show the socket usage summary (/proc/net/sockstat{,6})
      --cgroup        show cgroup information
  -4, --ipv4          display only IPv4 sockets
  -6, --ipv6          display only IPv6 sockets
  -u, --udp           display UDP sockets
  -t, --tcp           display TCP sockets
  -f, --family=FAMILY inet or inet6
  -A, --query=QUERY   udp, tcp or inet (both), comma-separated
  -H, --no-header     suppress the header line
  -O, --oneline       print each socket on a single line
  -F, --filter=FILE   read the filter from FILE
      --json          print a JSON list of sockets instead of the table
      --backend=NAME  auto (default: netlink, or /proc/net/udp where netlink is
                      refused), netlink, or proc

FILTER := [ state STATE ]... [ exclude STATE ]... [ EXPRESSION ]
  STATE := all | connected | established | unconnected | closed | listening | …
  EXPRESSION := sport|dport OP [:PORT] | src|dst [=] ADDRESS[/LEN][:PORT] | dev = IFACE
                | fwmark = MARK[/MASK] | cgroup = PATH | autobound
                | not EXPRESSION | EXPRESSION and|or EXPRESSION | ( EXPRESSION )
  OP := = | == | eq | != | ne | < | lt | > | gt | <= | le | >= | ge

examples:
  udpkit ss -4 -uln                  IPv4 sockets waiting for datagrams, as the tutorial's 'ss -4 -uln'
  udpkit ss -tulpn                   every listening socket and who owns it
  udpkit ss -ulnp 'sport = :123'     who serves NTP
  udpkit ss -uan 'dport = :53 or src [::1]' --json
"""

SHORT = "hVnraloempu46HOisf:A:F:tSxwdM0TKEbZzDN:y"
LONG = {
    "help": False, "version": False, "numeric": False, "resolve": False, "all": False,
    "listening": False, "options": False, "extended": False, "memory": False, "processes": False,
    "udp": False, "ipv4": False, "ipv6": False, "no-header": False, "oneline": False, "info": False,
    "summary": False, "family": True, "query": True, "socket": True, "filter": True, "tcp": False,
    "sctp": False, "unix": False, "raw": False, "dccp": False, "mptcp": False, "packet": False,
    "threads": False, "kill": False, "events": False, "bpf": False, "context": False, "contexts": False,
    "diag": True, "net": True, "cgroup": False, "json": False, "backend": True, "tos": False,
    "inet-sockopt": False, "tipc": False, "vsock": False, "xdp": False, "tipcinfo": False,
}
_OTHER_PROTOCOLS = {"-S": "SCTP", "--sctp": "SCTP", "-x": "Unix", "--unix": "Unix", "-w": "raw",
                    "--raw": "raw", "-d": "DCCP", "--dccp": "DCCP", "-M": "MPTCP", "--mptcp": "MPTCP",
                    "-0": "packet", "--packet": "packet", "--tipc": "TIPC", "--vsock": "vsock", "--xdp": "XDP"}
_QUERIES = {"udp": ("udp",), "tcp": ("tcp",), "inet": ("udp", "tcp")}
_UNSUPPORTED = {
    "-r": "resolving host names", "--resolve": "resolving host names",
    "-T": "threads", "--threads": "threads",
    "-K": "killing sockets", "--kill": "killing sockets", "-E": "events", "--events": "events",
    "-b": "BPF filters", "--bpf": "BPF filters", "-Z": "SELinux contexts", "--context": "SELinux contexts",
    "-z": "SELinux contexts", "--contexts": "SELinux contexts", "-D": "raw diag dumps", "--diag": "raw diag dumps",
    "-N": "switching network namespace (use 'ip netns exec NAME udpkit ss')", "--net": "switching network namespace",
    "--tos": "TOS information", "--inet-sockopt": "socket options", "--tipcinfo": "TIPC information",
    "-y": "this option",
}

# ss's state-filter words (misc/ss.c scan_state) as bit masks over the kernel's state numbers
# (SocketState's values, named in _records without the enum: see there).
_ALL = (1 << len(_S.STATE_LABELS)) - 1
_STATE_WORDS = {
    "all": _ALL,
    "connected": _ALL & ~((1 << _S.LISTEN) | (1 << _S.CLOSE)),
    "synchronized": _ALL & ~((1 << _S.LISTEN) | (1 << _S.CLOSE) | (1 << _S.SYN_SENT)),
    "bucket": (1 << _S.SYN_RECV) | (1 << _S.TIME_WAIT),
    "big": _ALL & ~((1 << _S.SYN_RECV) | (1 << _S.TIME_WAIT)),
    "established": 1 << _S.ESTABLISHED, "syn-sent": 1 << _S.SYN_SENT, "syn-recv": 1 << _S.SYN_RECV,
    "fin-wait-1": 1 << _S.FIN_WAIT1, "fin-wait-2": 1 << _S.FIN_WAIT2, "time-wait": 1 << _S.TIME_WAIT,
    "unconnected": 1 << _S.CLOSE, "close": 1 << _S.CLOSE, "closed": 1 << _S.CLOSE,
    "close-wait": 1 << _S.CLOSE_WAIT, "last-ack": 1 << _S.LAST_ACK, "listening": 1 << _S.LISTEN,
    "closing": 1 << _S.CLOSING,
}
# ss's default states per table: SS_CONN for TCP (and for a family), ESTAB for UDP.
_SS_CONN = _ALL & ~((1 << _S.LISTEN) | (1 << _S.CLOSE) | (1 << _S.TIME_WAIT) | (1 << _S.SYN_RECV))


class SsOptions(NamedTuple):
    numeric: bool = False
    extended: bool = False
    memory: bool = False
    processes: bool = False
    header: bool = True
    oneline: bool = False
    cgroup: bool = False
    json: bool = False
    timers: bool = False
    info: bool = False
    summary: bool = False
    families: frozenset[int] = frozenset((AF_INET, AF_INET6))
    states: int = 1 << _S.ESTABLISHED
    filter_words: tuple[str, ...] = ()
    backend: Backend = "auto"
    action: str = "list"  # or "help", "version"
    #: The tables to list, in ss's order (UDP before TCP); ``netid``: ss shows the Netid column when
    #: more than one of its tables is selected (a family selects all of inet's, SCTP and raw included).
    protocols: tuple[str, ...] = ("udp",)
    netid: bool = False
    #: ``-s`` alone (no table, family or filter chosen): ss prints the summary and nothing else.
    summary_only: bool = False


def parse_args(argv: Sequence[str]) -> SsOptions:
    """ss's command line -> options; raises UsageError for anything ss would refuse or we do not support."""
    opts, operands = getopt_ss(argv)
    o: dict[str, Any] = {}
    families: set[int] = set()
    protocols: set[str] = set()
    state_filter = 0
    for flag, value in opts:
        if flag in ("-h", "--help"):
            return SsOptions(action="help")
        if flag in ("-V", "--version"):
            return SsOptions(action="version")
        if flag in _OTHER_PROTOCOLS:
            raise UsageError(f"{flag}: udpkit ss lists UDP and TCP sockets only, not {_OTHER_PROTOCOLS[flag]}")
        if flag in _UNSUPPORTED:
            raise UsageError(f"{flag}: {_UNSUPPORTED[flag]} is not supported by udpkit ss")
        if flag in ("-n", "--numeric"):
            o["numeric"] = True
        elif flag in ("-a", "--all"):
            state_filter = _ALL
        elif flag in ("-l", "--listening"):
            state_filter = (1 << _S.LISTEN) | (1 << _S.CLOSE)
        elif flag in ("-e", "--extended"):
            o["extended"] = True
            o["timers"] = True  # ss's -e shows the timers too
        elif flag in ("-m", "--memory"):
            o["memory"] = True
        elif flag in ("-p", "--processes"):
            o["processes"] = True
        elif flag in ("-H", "--no-header"):
            o["header"] = False
        elif flag in ("-O", "--oneline"):
            o["oneline"] = True
        elif flag == "--cgroup":
            o["cgroup"] = True
        elif flag == "--json":
            o["json"] = True
        elif flag in ("-o", "--options"):
            o["timers"] = True
        elif flag in ("-i", "--info"):
            o["info"] = True
        elif flag in ("-s", "--summary"):
            o["summary"] = True
        elif flag in ("-u", "--udp"):
            protocols.add("udp")
        elif flag in ("-t", "--tcp"):
            protocols.add("tcp")
        elif flag in ("-4", "--ipv4"):
            families.add(AF_INET)
        elif flag in ("-6", "--ipv6"):
            families.add(AF_INET6)
        elif flag in ("-f", "--family"):
            if value == "inet":
                families.add(AF_INET)
            elif value == "inet6":
                families.add(AF_INET6)
            else:
                raise UsageError(f"-f {value}: udpkit ss knows the families inet and inet6 only")
        elif flag in ("-A", "--query", "--socket"):
            for query in (value or "").split(","):
                if query not in _QUERIES:
                    raise UsageError(f"-A {query}: udpkit ss lists UDP and TCP sockets only (use -A udp, tcp or inet)")
                protocols.update(_QUERIES[query])
                if query == "inet":
                    o["netid"] = True
        elif flag in ("-F", "--filter"):
            operands.extend(_read_filter_file(value or ""))
        elif flag == "--backend":
            if value not in ("netlink", "proc", "auto"):
                raise UsageError(f"--backend {value}: expected netlink, proc or auto")
            o["backend"] = value
    chose_table = bool(protocols or families)
    if not protocols:
        protocols = {"udp", "tcp"} if families else {"udp"}
        # A family selects every inet table in ss (raw, SCTP… too), so the Netid column shows.
        o["netid"] = o.get("netid", False) or bool(families)
    if len(protocols) > 1:
        o["netid"] = True
    default_states = _SS_CONN if ("tcp" in protocols or families) else 1 << _S.ESTABLISHED
    words = list(operands)
    saw_states = False
    while words and words[0] in ("state", "exclude", "excl"):
        word = words.pop(0)
        if not words:
            raise UsageError(f'"{word}" needs a state name')
        name = words.pop(0).lower()
        if name not in _STATE_WORDS:
            raise UsageError(f"wrong state name: {name}")
        if word == "state":
            state_filter = (state_filter if saw_states else 0) | _STATE_WORDS[name]
        else:
            state_filter = (state_filter if saw_states else _ALL) & ~_STATE_WORDS[name]
        saw_states = True
    return SsOptions(
        families=frozenset(families) or SsOptions().families,
        states=state_filter or default_states,
        filter_words=tuple(words),
        protocols=tuple(p for p in ("udp", "tcp") if p in protocols),
        summary_only=bool(o.get("summary")) and not chose_table and not operands,
        **o,
    )


def getopt_ss(argv: Sequence[str]) -> tuple[list[tuple[str, str | None]], list[str]]:
    from udpkit.cli._getopt import getopt

    return getopt(argv, SHORT, LONG)


def _read_filter_file(path: str) -> list[str]:
    """``-F FILE``: ss reads filter words from a file, skipping lines that start with ``#``."""
    try:
        with open(path, encoding="utf-8") as fh:
            return [line.strip() for line in fh if line.strip() and not line.startswith("#")]
    except OSError as exc:
        raise UsageError(f"-F {path}: {exc.strerror}") from None


def run(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    options = parse_args(argv)
    if options.action == "help":
        out.write(HELP)
        return 0
    if options.action == "version":
        from udpkit import __version__

        out.write(f"udpkit ss, udpkit {__version__}\n")
        return 0
    gc.disable()  # a one-shot listing of up to 10^5 sockets: collection cycles only cost time here
    if options.summary:
        out.write(render_summary(read_summary()))
        if options.summary_only:
            return 0
    families = set(options.families)
    predicate = None
    if options.filter_words:
        from udpkit.inventory.filter import parse_filter

        parsed = parse_filter(options.filter_words)
        if parsed.families:
            families = set(parsed.families)
        predicate = parsed.matches
    states = {s for s in range(len(_S.STATE_LABELS)) if options.states & (1 << s)}
    tables: list[SocketTable[Any]] = []
    owners = socket_owners() if options.processes else None  # one walk of /proc for every table
    for protocol in options.protocols:
        if protocol == "udp":
            tables.append(scan_udp_sockets(
                families=families, states=states, memory=options.memory or options.json,
                where=predicate, backend=options.backend, owners=owners,
            ))
        else:
            tables.append(scan_tcp_sockets(
                families=families, states=states, memory=options.memory or options.json,
                info=options.info or options.json, where=predicate, backend=options.backend, owners=owners,
            ))
    if options.json:
        import json

        # One object a line, in one write, as ``udpkit probe --json``: json.dump with indent uses the
        # pure-Python encoder and writes chunk by chunk (7.5 s at 50,000 sockets; this, 0.7 s).
        lines = [json.dumps(s.to_json()) for table in tables for s in table]
        out.write("[\n  " + ",\n  ".join(lines) + "\n]\n" if lines else "[]\n")
        return 0
    screen = None
    if out.isatty():
        try:
            screen = os.get_terminal_size(out.fileno()).columns
        except (OSError, ValueError):
            screen = None
    for block in render_blocks(tables, options, screen=screen):
        out.write(block)
    return 0


def render_summary(summary: dict[str, int]) -> str:
    """``ss -s``: the kernel's socket counts, laid out as ss 6.1 prints them (its arithmetic included)."""
    g = summary.get
    tcp4, tcp6, tws = g("tcp4_inuse", 0), g("tcp6_inuse", 0), g("tcp_tw", 0)
    raw4, raw6, udp4, udp6 = g("raw4", 0), g("raw6", 0), g("udp4", 0), g("udp6", 0)
    frag4, frag6 = g("frag4", 0), g("frag6", 0)
    lines = [
        f"Total: {g('sockets', 0)}",
        f"TCP:   {g('tcp_alloc', 0) + tws} (estab {g('tcp_estab', 0)}, closed {g('tcp_alloc', 0) - (tcp4 + tcp6 - tws)}, "
        f"orphaned {g('tcp_orphan', 0)}, timewait {tws})",
        "",
        "Transport Total     IP        IPv6",
    ]
    for name, v4, v6 in (("RAW", raw4, raw6), ("UDP", udp4, udp6), ("TCP", tcp4, tcp6),
                         ("INET", raw4 + udp4 + tcp4, raw6 + udp6 + tcp6), ("FRAG", frag4, frag6)):
        lines.append("%s\t  %-9d %-9d %-9d" % (name, v4 + v6, v4, v6))
    return "\n".join(lines) + "\n\n"


class _AddrText(dict[tuple[int, str, "bool | None", "str | None"], str]):
    """(family, ip, v6only, device) -> ss's address field: ``0.0.0.0:``, ``[::1]:``, ``*:``, ``*%lo:``."""

    def __missing__(self, key: tuple[int, str, bool | None, str | None]) -> str:
        family, ip, v6only, device = key
        if family == AF_INET:
            text = ip
        elif not v6only and ip == "::":
            text = "*"
        else:
            text = f"[{ip}]"
        if device:
            text = f"{text}%{device}"
        text += ":"
        self[key] = text
        return text


class _ByIp(dict[str, "str | None"]):
    """ip -> its address field, for sockets bound to no device: an address's text says its family
    (only IPv6's has a colon), and ``v6only`` changes only the IPv6 wildcard's (``*`` or ``[::]``),
    which is left as ``None`` here for :func:`_address_fields` to fill socket by socket."""

    def __init__(self, fields: _AddrText) -> None:
        super().__init__()
        self.fields = fields

    def __missing__(self, ip: str) -> str | None:
        text = self[ip] = None if ip == "::" else self.fields[
            (AF_INET6 if ":" in ip else AF_INET, ip, None, None)]
        return text


def _address_fields(by_ip: _ByIp, families: list[int], ips: list[str], v6only: list[bool | None],
                    devices: list[str | None]) -> list[str]:
    """The address fields of one table's sockets, from ``by_ip.fields``' cache.

    Strategy: a key of (family, ip, v6only, device) a socket is a tuple built and hashed 50,000
    times at that size; with no socket bound to a device (the rule, and a count in C to check)
    one lookup of the ip's text each does, and only IPv6 wildcards look at ``v6only``."""
    fields, n = by_ip.fields, len(ips)
    if devices.count(None) != n:
        return list(map(fields.__getitem__, zip(families, ips, v6only, devices)))
    out: list[str | None] = list(map(by_ip.__getitem__, ips))
    if "::" not in by_ip:
        return out  # type: ignore[return-value]
    # The IPv6 wildcards (None so far), without a Python step each: their v6only values, then a
    # lookup that leaves every other field as it is (d.get(field, field)).
    values = set(compress(v6only, map(is_, out, repeat(None))))
    if len(values) == 1:
        return list(map({None: fields[(AF_INET6, "::", values.pop(), None)]}.get, out, out))  # type: ignore[arg-type]
    wild = {(None, v): fields[(AF_INET6, "::", v, None)] for v in values}
    return list(map(wild.get, zip(out, v6only), out))  # type: ignore[arg-type]


class _ServiceText(dict[int, str]):
    """Port -> service name (or number) for one protocol, looked up once per distinct port."""

    def __init__(self, protocol: str = "udp") -> None:
        super().__init__()
        self.protocol = protocol

    def __missing__(self, port: int) -> str:
        text = self[port] = service_name(port, self.protocol)
        return text


def _port_width(highest: int | None, numeric: bool) -> int | None:
    """The longest numeric port field without measuring every one: the largest port's digits, or 1 for ``*``."""
    if not numeric or highest is None:
        return None
    return len(str(highest)) or 1


def _port_texts(ports: list[int], numeric: bool, protocol: str = "udp") -> list[str | int]:
    """The port fields: service names, or (``-n``) the port numbers themselves, formatted by ``%s``
    as the line is written, with ``*`` for port 0 — no string kept per socket."""
    if not numeric:
        return list(map(_ServiceText(protocol).__getitem__, ports))
    zeros = ports.count(0)  # (in C: none, as a rule, for local ports; all, for unconnected peers)
    if not zeros:
        return list(ports)
    if zeros == len(ports):
        return ["*"] * zeros
    return list(map({0: "*"}.get, ports, ports))


class _StateText(dict[int, str]):
    def __missing__(self, state: int) -> str:
        text = self[state] = _S.state_label(state)
        return text


class _QueueText(dict[int, str]):
    """Queue length -> ss's ``%-6d`` field; nearly all queues are empty, so this is a lookup."""

    def __missing__(self, value: int) -> str:
        text = self[value] = "%-6d" % value
        return text


def render_text(
    tables: SocketTable[Any] | Sequence[SocketTable[Any]], options: SsOptions, *, screen: int | None = None
) -> str:
    """The ss table for ``tables`` (one listing, or several in ss's order), as one string."""
    return "".join(render_blocks(tables, options, screen=screen))


def render_blocks(
    tables: SocketTable[Any] | Sequence[SocketTable[Any]], options: SsOptions, *, screen: int | None = None
) -> Iterator[str]:
    """The ss table for ``tables``, in blocks of lines; every socket of every table is measured
    together, as ss lays out its whole output at once.

    Strategy: one ``map`` per column over cached conversions, and each column's longest field taken
    from its few distinct values, so 50,000 sockets render without a Python-level step per socket
    unless the Process column (``-p``/``-e``/``-m``/``-o``/``-i``) needs one.
    """
    from udpkit.cli._sstable import NETID_COLUMN, SS_COLUMNS, render_blocks as layout

    if isinstance(tables, SocketTable):
        tables = [tables]
    labels, local, peer = _StateText(), _AddrText(), _AddrText()
    local_ips, peer_ips = _ByIp(local), _ByIp(peer)
    tails = False  # whether any socket has a Process field (a column of "" is not measured)
    recv_q, send_q = _QueueText(), _QueueText()
    columns: list[list[Any]] = [[] for _ in range(9)]
    # The columns that may hold one value (Netid, State, the queues, the peer port, Process) are
    # kept as each table's part, and joined only if they do not: a column of one value goes to
    # the layout as that value alone (it is written into the line format), not 50,000 references.
    parts: list[list[Iterable[Any]]] = [[] for _ in range(9)]
    top: list[int | None] = [None, None]  # the largest local and peer port, for their widths
    peer_ports: set[int] = set()  # the peer port of each table whose sockets share one
    peer_ports_vary = False
    tail = options.processes or options.extended or options.memory or options.cgroup
    for table in tables:
        n = len(table)
        col = table.column
        families, v6only = table.numbers("family"), col("ipv6only")
        parts[0].append(repeat(table.netid, n))
        for at, cache, name in ((1, labels, "state"), (2, recv_q, "recv_q"), (3, send_q, "send_q")):
            numbers = table.numbers(name) if name == "state" else col(name)
            if n and numbers.count(numbers[0]) == n:  # one value (UNCONN, 0, 0 as a rule): one lookup
                parts[at].append(repeat(cache[numbers[0]], n))
            else:
                # (made now: it fills the cache the widths read)
                parts[at].append(list(map(cache.__getitem__, numbers)))
        columns[4].extend(_address_fields(local_ips, families, col("local_ip"), v6only, col("interface")))
        columns[5].extend(_port_texts(col("local_port"), options.numeric, table.netid))
        columns[6].extend(_address_fields(peer_ips, families, col("peer_ip"), v6only, [None] * n))
        peer_port = col("peer_port")
        parts[7].append(_port_texts(peer_port, options.numeric, table.netid))
        for at, values in ((0, col("local_port")), (1, peer_port)):
            if values:
                highest = max(values)
                top[at] = highest if top[at] is None else max(highest, top[at])
        if n and peer_port.count(peer_port[0]) == n:
            peer_ports.add(peer_port[0])
        elif n:
            peer_ports_vary = True
        tcp = table.record is TcpSocket
        if options.processes and not (options.extended or options.memory or options.cgroup
                                      or (tcp and (options.timers or options.info))):
            parts[8].append(map(_users_text, col("processes")))  # -p alone: no record per socket
            tails = True
        elif tail or (tcp and (options.timers or options.info)):
            parts[8].append(_process_field(s, options) for s in table)
            tails = True
        else:
            parts[8].append(repeat("", n))
    caches: list[dict[Any, str] | None] = [None, labels, recv_q, send_q, local, None, peer, None, None]
    max_len: list[int | None] = [
        max(map(len, cache.values()), default=0) if cache is not None else None for cache in caches
    ]
    max_len[0] = max((len(t.netid) for t in tables if len(t)), default=0)
    max_len[5] = _port_width(top[0], options.numeric)
    max_len[7] = _port_width(top[1], options.numeric)
    # Columns whose every field is the same: one table's Netid; a cache of one distinct text.
    constant = [len([t for t in tables if len(t)]) == 1] + [cache is not None and len(cache) == 1 for cache in caches[1:]]
    constant[7] = len(peer_ports) == 1 and not peer_ports_vary  # the peer port: * when unconnected
    constant[8] = not tails  # no Process field: "" written once into the format
    listed = any(len(t) for t in tables)
    for at in (0, 1, 2, 3, 7, 8):
        joined = chain.from_iterable(parts[at])
        columns[at] = [next(joined)] if constant[at] and listed else list(joined)
    # ss measures a field when it moves past it; the last line's Process field is never moved
    # past, so it does not count towards the column's width (a one-line listing is not padded).
    max_len[8] = max(map(len, columns[8][:-1]), default=0) if tails else 0
    header = [NETID_COLUMN, *SS_COLUMNS]
    if not options.netid:
        del header[0], columns[0], max_len[0], constant[0]
    if not options.states & (options.states - 1):
        # ss hides the State column when the state filter selects exactly one state.
        at = 1 if options.netid else 0
        del header[at], columns[at], max_len[at], constant[at]
    return layout(header, columns, header=options.header, screen=screen, max_len=max_len, constant=constant)


def _process_field(sock: UdpSocket | TcpSocket, options: SsOptions) -> str:
    """Everything ss 6.1 prints after the peer (``inet_show_sock``): users, the -o timer, -e details,
    --cgroup, then on a line of its own (unless -O) -m skmem and, for TCP, -i's tcp_info."""
    parts = []
    tcp = isinstance(sock, TcpSocket)
    if options.processes and sock.processes:
        parts.append(_users_text(sock.processes))
    if options.timers and tcp and sock.timer:  # type: ignore[union-attr]
        parts.append(_timer_text(sock))  # type: ignore[arg-type]
    if options.extended:
        if sock.uid:
            parts.append(f" uid:{sock.uid}")
        parts.append(f" ino:{sock.inode}")
        if sock.cookie is not None:
            parts.append(f" sk:{sock.cookie:x}")
        if sock.mark:
            parts.append(f" fwmark:0x{sock.mark:x}")
        if sock.cgroup_id:
            parts.append(f" cgroup:{cgroup_path_for_id(sock.cgroup_id)}")
        if sock.family == AF_INET6 and sock.ipv6only is not None:
            parts.append(f" v6only:{int(sock.ipv6only)}")
        if sock.shutdown is not None:
            parts.append(f" {'-' if sock.shutdown & 1 else '<'}-{'-' if sock.shutdown & 2 else '>'}")
    if options.cgroup and sock.cgroup_id:
        parts.append(f" cgroup:{cgroup_path_for_id(sock.cgroup_id)}")
    if options.memory or (options.info and tcp):
        if not options.oneline:
            parts.append("\n\t")
        m = sock.skmem
        if m is not None:
            text = f" skmem:(r{m.rmem_alloc},rb{m.rcvbuf},t{m.wmem_alloc},tb{m.sndbuf},f{m.fwd_alloc},w{m.wmem_queued},o{m.optmem}"
            if m.backlog is not None:
                text += f",bl{m.backlog}"
            if m.drops is not None:
                text += f",d{m.drops}"
            parts.append(text + ")")
        if tcp and options.info:
            from udpkit.cli._sstcp import tcp_info_text

            parts.append(tcp_info_text(sock, options.numeric, options.timers))  # type: ignore[arg-type]
    return "".join(parts)


def _users_text(processes: tuple[Process, ...]) -> str:
    """``-p``: `` users:(("socat",pid=812,fd=5),…)``, or nothing for a socket no process we can see holds."""
    if not processes:
        return ""
    return " users:(" + ",".join(f'("{p.name}",pid={p.pid},fd={p.fd})' for p in processes) + ")"


_TIMER_NAMES = ("off", "on", "keepalive", "timewait", "persist", "unknown")


def _timer_text(sock: TcpSocket) -> str:
    """``-o``: `` timer:(keepalive,1min57sec,0)``, as ss's ``tcp_timer_print``/``print_ms_timer``."""
    return f" timer:({_TIMER_NAMES[min(sock.timer, 5)]},{ms_timer(sock.expires)},{sock.retrans})"


def ms_timer(timeout: int) -> str:
    """Milliseconds as ss prints a timer: ``1min57sec``, ``15sec``, ``1.200ms``, ``200ms``, ``12min``."""
    secs, msecs = divmod(timeout, 1000)
    minutes, secs = divmod(secs, 60)
    text = ""
    if minutes:
        msecs = 0
        text = f"{minutes}min"
        if minutes > 9:
            secs = 0
    if secs:
        if secs > 9:
            msecs = 0
        text += f"{secs}{'.' if msecs else 'sec'}"
    if msecs:
        text += f"{msecs:03d}ms"
    return text
