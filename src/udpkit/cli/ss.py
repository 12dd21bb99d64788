"""``udpkit ss``: iproute2's ``ss`` for UDP sockets — same flags, same selection, same columns.

Parsing follows ``ss``'s getopt string and its ``state``/``exclude`` words; the listing comes from
:func:`udpkit.inventory.list_udp_sockets`; the table is laid out by :mod:`udpkit.cli._sstable`.
"""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import Any, NamedTuple, TextIO

from udpkit.errors import UsageError
from udpkit.inventory import Backend, SocketState, SocketTable, UdpSocket, scan_udp_sockets
from udpkit.inventory import cgroup_path_for_id, service_name

__all__ = ["SsOptions", "parse_args", "render_text", "run"]

HELP = """\
usage: udpkit ss [OPTIONS] [FILTER]

List UDP sockets as iproute2's 'ss -u' does, from the kernel's sock_diag netlink interface
(or /proc/net/udp where netlink is refused).

  -h, --help          this message
  -V, --version       output version information
  -n, --numeric       don't resolve service names
  -a, --all           display connected and unconnected sockets
  -l, --listening     display unconnected (listening) sockets only
  -e, --extended      show uid, inode, cookie, cgroup, v6only, shutdown
  -m, --memory        show socket memory usage (skmem, with the drop count)
  -p, --processes     show the processes using each socket
  -o, --options       show timer information (UDP sockets have none)
  -i, --info          show internal information (nothing more for UDP)
      --cgroup        show cgroup information
  -4, --ipv4          display only IPv4 sockets
  -6, --ipv6          display only IPv6 sockets
  -u, --udp           display UDP sockets (always: udpkit ss lists nothing else)
  -f, --family=FAMILY inet or inet6
  -A, --query=QUERY   udp
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
_OTHER_PROTOCOLS = {"-t", "--tcp", "-S", "--sctp", "-x", "--unix", "-w", "--raw", "-d", "--dccp",
                    "-M", "--mptcp", "-0", "--packet", "--tipc", "--vsock", "--xdp"}
_UNSUPPORTED = {
    "-r": "resolving host names", "--resolve": "resolving host names",
    "-s": "the summary", "--summary": "the summary", "-T": "threads", "--threads": "threads",
    "-K": "killing sockets", "--kill": "killing sockets", "-E": "events", "--events": "events",
    "-b": "BPF filters", "--bpf": "BPF filters", "-Z": "SELinux contexts", "--context": "SELinux contexts",
    "-z": "SELinux contexts", "--contexts": "SELinux contexts", "-D": "raw diag dumps", "--diag": "raw diag dumps",
    "-N": "switching network namespace (use 'ip netns exec NAME udpkit ss')", "--net": "switching network namespace",
    "--tos": "TOS information", "--inet-sockopt": "socket options", "--tipcinfo": "TIPC information",
    "-y": "this option",
}

# ss's state-filter words (misc/ss.c scan_state) as bit masks over SocketState values.
_ALL = (1 << 12) - 1
_S = SocketState
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


class SsOptions(NamedTuple):
    numeric: bool = False
    extended: bool = False
    memory: bool = False
    processes: bool = False
    header: bool = True
    oneline: bool = False
    cgroup: bool = False
    json: bool = False
    families: frozenset[int] = frozenset((socket.AF_INET, socket.AF_INET6))
    states: int = 1 << SocketState.ESTABLISHED
    filter_words: tuple[str, ...] = ()
    backend: Backend = "auto"
    action: str = "list"  # or "help", "version"


def parse_args(argv: Sequence[str]) -> SsOptions:
    """ss's command line -> options; raises UsageError for anything ss would refuse or we do not support."""
    opts, operands = getopt_ss(argv)
    o: dict[str, Any] = {}
    families: set[int] = set()
    state_filter = 0
    for flag, value in opts:
        if flag in ("-h", "--help"):
            return SsOptions(action="help")
        if flag in ("-V", "--version"):
            return SsOptions(action="version")
        if flag in _OTHER_PROTOCOLS:
            raise UsageError(f"{flag}: udpkit ss lists UDP sockets only")
        if flag in _UNSUPPORTED:
            raise UsageError(f"{flag}: {_UNSUPPORTED[flag]} is not supported by udpkit ss")
        if flag in ("-n", "--numeric"):
            o["numeric"] = True
        elif flag in ("-a", "--all"):
            state_filter = _ALL
        elif flag in ("-l", "--listening"):
            state_filter = (1 << SocketState.LISTEN) | (1 << SocketState.CLOSE)
        elif flag in ("-e", "--extended"):
            o["extended"] = True
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
        elif flag in ("-4", "--ipv4"):
            families.add(socket.AF_INET)
        elif flag in ("-6", "--ipv6"):
            families.add(socket.AF_INET6)
        elif flag in ("-f", "--family"):
            if value == "inet":
                families.add(socket.AF_INET)
            elif value == "inet6":
                families.add(socket.AF_INET6)
            else:
                raise UsageError(f"-f {value}: udpkit ss knows the families inet and inet6 only")
        elif flag in ("-A", "--query", "--socket"):
            for query in (value or "").split(","):
                if query != "udp":
                    raise UsageError(f"-A {query}: udpkit ss lists UDP sockets only (use -A udp)")
        elif flag in ("-F", "--filter"):
            operands.extend(_read_filter_file(value or ""))
        elif flag == "--backend":
            if value not in ("netlink", "proc", "auto"):
                raise UsageError(f"--backend {value}: expected netlink, proc or auto")
            o["backend"] = value
        # -u, -o, -i: accepted; for UDP sockets ss prints nothing more for -o and -i.
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
        states=state_filter or SsOptions().states,
        filter_words=tuple(words),
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
    families = set(options.families)
    predicate = None
    if options.filter_words:
        from udpkit.inventory.filter import parse_filter

        parsed = parse_filter(options.filter_words)
        if parsed.families:
            families = set(parsed.families)
        predicate = parsed.matches
    states = {s for s in SocketState if options.states & (1 << s)}
    table = scan_udp_sockets(
        families=families,
        states=states,
        processes=options.processes,
        memory=options.memory or options.json,
        where=predicate,
        backend=options.backend,
    )
    if options.json:
        import json

        json.dump([s.to_json() for s in table], out, indent=2)
        out.write("\n")
        return 0
    screen = None
    if out.isatty():
        try:
            screen = os.get_terminal_size(out.fileno()).columns
        except (OSError, ValueError):
            screen = None
    for block in render_blocks(table, options, screen=screen):
        out.write(block)
    return 0


class _AddrText(dict[tuple[int, str, "bool | None", "str | None"], str]):
    """(family, ip, v6only, device) -> ss's address field: ``0.0.0.0:``, ``[::1]:``, ``*:``, ``*%lo:``."""

    def __missing__(self, key: tuple[int, str, bool | None, str | None]) -> str:
        family, ip, v6only, device = key
        if family == socket.AF_INET:
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


class _ServiceText(dict[int, str]):
    """Port -> service name (or number), looked up once per distinct port."""

    def __missing__(self, port: int) -> str:
        text = self[port] = service_name(port)
        return text


def _port_width(ports: list[int], numeric: bool) -> int | None:
    """The longest numeric port field without measuring every one: the largest port's digits, or 1 for ``*``."""
    if not numeric or not ports:
        return None
    return len(str(max(ports))) or 1


def _port_texts(ports: list[int], numeric: bool) -> list[str | int]:
    """The port fields: service names, or (``-n``) the port numbers themselves, formatted by ``%s``
    as the line is written, with ``*`` for port 0 — no string kept per socket."""
    if not numeric:
        return list(map(_ServiceText().__getitem__, ports))
    return list(map({0: "*"}.get, ports, ports))


class _StateText(dict[SocketState, str]):
    def __missing__(self, state: SocketState) -> str:
        text = self[state] = state.label
        return text


class _QueueText(dict[int, str]):
    """Queue length -> ss's ``%-6d`` field; nearly all queues are empty, so this is a lookup."""

    def __missing__(self, value: int) -> str:
        text = self[value] = "%-6d" % value
        return text


def render_text(table: SocketTable, options: SsOptions, *, screen: int | None = None) -> str:
    """The ss table for ``table``, as one string."""
    return "".join(render_blocks(table, options, screen=screen))


def render_blocks(table: SocketTable, options: SsOptions, *, screen: int | None = None) -> Iterator[str]:
    """The ss table for ``table``, in blocks of lines.

    Strategy: one ``map`` per column over cached conversions, and each column's longest field taken
    from its few distinct values, so 50,000 sockets render without a Python-level step per socket
    unless the Process column (``-p``/``-e``/``-m``) needs one.
    """
    from udpkit.cli._sstable import SS_COLUMNS, render_blocks as layout

    n = len(table)
    col = table.column
    families, v6only = col("family"), col("ipv6only")
    fields: list[list[Any]] = []
    max_len: list[int | None] = []

    def add(values: list[Any], cache: dict[Any, str] | None) -> None:
        fields.append(values)
        max_len.append(max(map(len, cache.values()), default=0) if cache is not None else None)

    labels = _StateText()
    add(list(map(labels.__getitem__, col("state"))), labels)
    for name in ("recv_q", "send_q"):
        queues = _QueueText()
        add(list(map(queues.__getitem__, col(name))), queues)
    local, peer = _AddrText(), _AddrText()
    local_texts = list(map(local.__getitem__, zip(families, col("local_ip"), v6only, col("interface"))))
    add(local_texts, local)
    fields.append(_port_texts(col("local_port"), options.numeric))
    max_len.append(_port_width(col("local_port"), options.numeric))
    add(list(map(peer.__getitem__, zip(families, col("peer_ip"), v6only, repeat(None, n)))), peer)
    fields.append(_port_texts(col("peer_port"), options.numeric))
    max_len.append(_port_width(col("peer_port"), options.numeric))
    if options.processes or options.extended or options.memory or options.cgroup:
        process = [_process_field(s, options) for s in table]
        fields.append(process)
        # ss measures a field when it moves past it; the last line's Process field is never moved
        # past, so it does not count towards the column's width (a one-line listing is not padded).
        max_len.append(max(map(len, process[:-1]), default=0))
    else:
        fields.append([""] * n)
        max_len.append(0)
    columns = list(SS_COLUMNS)
    if not options.states & (options.states - 1):
        # ss hides the State column when the state filter selects exactly one state.
        del columns[0], fields[0], max_len[0]
    return layout(columns, fields, header=options.header, screen=screen, max_len=max_len)


def _process_field(sock: UdpSocket, options: SsOptions) -> str:
    """Everything ss 6.1 prints after the peer: users, -e details, --cgroup, -m skmem."""
    parts = []
    if options.processes and sock.processes:
        users = ",".join(f'("{p.name}",pid={p.pid},fd={p.fd})' for p in sock.processes)
        parts.append(f" users:({users})")
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
        if sock.family == socket.AF_INET6 and sock.ipv6only is not None:
            parts.append(f" v6only:{int(sock.ipv6only)}")
        if sock.shutdown is not None:
            parts.append(f" {'-' if sock.shutdown & 1 else '<'}-{'-' if sock.shutdown & 2 else '>'}")
    if options.cgroup and sock.cgroup_id:
        parts.append(f" cgroup:{cgroup_path_for_id(sock.cgroup_id)}")
    if options.memory and sock.skmem is not None:
        m = sock.skmem
        text = f" skmem:(r{m.rmem_alloc},rb{m.rcvbuf},t{m.wmem_alloc},tb{m.sndbuf},f{m.fwd_alloc},w{m.wmem_queued},o{m.optmem}"
        if m.backlog is not None:
            text += f",bl{m.backlog}"
        if m.drops is not None:
            text += f",d{m.drops}"
        parts.append(("" if options.oneline else "\n\t") + text + ")")
    return "".join(parts)
