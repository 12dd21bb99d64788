"""``udpkit probe``: test UDP ports and show the evidence for every verdict."""

from __future__ import annotations

import gc
import json
import os
import socket
import time
import threading
from collections.abc import Sequence
from typing import Any, TextIO

from udpkit.addr import parse_ports, udp_services
from udpkit.cli._argparse import Parser
from udpkit.errors import UdpkitError, UsageError
from udpkit.files import read_bytes
from udpkit.services.registry import PORTS
from udpkit.probe import (DEFAULT_PORTS, OPEN, PortResult, check_options, check_sources, check_targets, probe, resolve,
                          source_addresses, top_ports)

__all__ = ["run"]

EPILOG = """\
verdicts: open (a reply from the port, accepted by the service probe when one was sent), closed
(ICMP port unreachable from the target itself, quoting our datagram), filtered (another ICMP
destination unreachable, e.g. admin-prohibited, or a port unreachable from a router),
open|filtered (silence after every try), conflict (evidence that cannot all be true: a reply after
the port unreachable, a reply the service probe refused, or a bare reply from a host whose answers
are being forged; the reason says which).
Remote Linux hosts send few ICMP errors (a burst of 6, then one a second for IPv4 by default): the
prober measures that rate and keeps to it, and counts a silence only when a known-closed port
answered right after it. Loopback is not limited: every port in about a second.

examples:
  udpkit probe 127.0.0.1 -p 123                  is the NTP port answering, and how do we know
  udpkit probe ::1 127.0.0.1 -p 1-65535 --open         every port of both loopbacks
  udpkit probe 127.0.0.1 -p 7,13,37 --service auto    echo, daytime, time: which protocol answered
  udpkit probe localhost -p 53,123 --payload-hex 00 --json
  udpkit probe 192.0.2.7 -p 1-1000 --source 192.0.2.1,192.0.2.2   two ICMP budgets: half the time
"""


def build_parser() -> Parser:
    p = Parser("udpkit probe", "Probe UDP ports: open only when something answered.", EPILOG)
    p.add_argument("targets", nargs="+", metavar="TARGET", help="host names or addresses")
    which = p.add_mutually_exclusive_group()
    which.add_argument("-p", dest="ports", default=None, metavar="PORTS",
                       help="e.g. 53,123,1000-2000; nmap's forms too: - (every port), -1024, 60000-, U:53,161"
                            " (T: and S: are refused: UDP only); default: " + DEFAULT_PORTS)
    which.add_argument("--top-ports", type=int, metavar="N",
                       help="the N most likely open UDP ports, by udpkit's own ranking (the default ports, the"
                            " probe catalogue's, other common UDP services, then /etc/services)")
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="family", action="store_const", const=socket.AF_INET, help="IPv4 only")
    fam.add_argument("-6", dest="family", action="store_const", const=socket.AF_INET6, help="IPv6 only")
    p.add_argument("--timeout", type=float, default=1.0, metavar="S", help="wait for the first try (default 1)")
    p.add_argument("--retries", type=int, default=2, metavar="N", help="tries after the first (default 2)")
    p.add_argument("--rate", type=float, metavar="PPS", help="at most PPS datagrams a second")
    p.add_argument("--source", action="append", default=[], metavar="ADDR",
                   help="send from these local addresses (comma-separated, repeatable, or a prefix such as"
                        " 2001:db8::/120 routed to this host); the ports are shared among them. A remote kernel"
                        " limits its ICMP errors per source address, so N sources scan a limited host N times"
                        " faster: a way around the target's limit, off by default")
    p.add_argument("--service", default=None, metavar="NAME",
                   help="application probe: auto (the default without --payload: a real request to the ports whose"
                        " service the catalogue knows, e.g. DNS on 53, NTP on 123, and an 8-byte random nonce to the"
                        " others, which their ICMP errors quote back), all (identify silent ports: every"
                        " probe), none (the default with --payload: it goes everywhere; else an empty datagram), or one of ntp dns snmp"
                        " ssdp stun memcached netbios-ns mdns quic echo daytime time")
    p.add_argument("--query", metavar="NAME[/TYPE]", help="the DNS probe's question (default: . SOA)")
    payload = p.add_mutually_exclusive_group()
    payload.add_argument("--payload", metavar="TEXT", help="send TEXT to every port (implies --service none unless given)")
    payload.add_argument("--payload-hex", metavar="HEX", help="send these bytes")
    payload.add_argument("--payload-file", metavar="FILE", help="send the contents of FILE")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON document")
    out.add_argument("--jsonl", action="store_true", help="one JSON object per port, as verdicts arrive (a verdict"
                     " that later evidence of forgery changes is written again: the last line for a port counts)")
    p.add_argument("--open", action="store_true", help="list only open ports")
    return p


def _payload(args: Any) -> bytes:
    if args.payload is not None:
        return str(args.payload).encode()
    if args.payload_hex is not None:
        try:
            return bytes.fromhex(args.payload_hex)
        except ValueError:
            raise UsageError(f"bad --payload-hex {args.payload_hex!r}: expected hex digits") from None
    if args.payload_file is not None:
        return read_bytes(args.payload_file, "--payload-file", limit=65527)
    return b""


def to_json(result: PortResult) -> dict[str, Any]:
    t = result.target
    return {
        "host": t.ip, "family": "inet6" if t.family == socket.AF_INET6 else "inet", "port": t.port,
        "state": result.state, "service": _service(t.port), "reason": result.reason,
        "rtt_ms": None if result.rtt is None else int(result.rtt * 1e6 + 0.5) / 1000, "tries": result.tries,
        "icmp": None if result.icmp is None else {"type": result.icmp[0], "code": result.icmp[1], "from": result.icmp[2]},
        "reply": None if result.reply is None else {
            "bytes": len(result.reply),
            "protocol": None if result.evidence is None else result.evidence.protocol,
            "detail": None if result.evidence is None else result.evidence.detail,
        },
    }


_text = json.encoder.encode_basestring_ascii  # C-accelerated, and escapes as json.dumps does


def json_line(result: PortResult) -> str:
    """``json.dumps(to_json(result))``, written by hand for a port without a reply (all but a few of
    a full-range scan): the generic encoder costs more than the scan itself. What a line shares with
    the others of its host and verdict (address, state, reason, the ICMP evidence) is made once."""
    if result.reply is not None:
        return json.dumps(to_json(result))
    t = result.target
    key = (t.ip, t.family, result.state, result.reason, result.icmp)
    parts = _parts.get(key)
    if parts is None:
        if len(_parts) >= 4096:
            _parts.clear()  # a long-lived caller (a library user) does not grow it for ever
        parts = _parts[key] = _line_parts(result)
    head, middle, after, tail = parts
    service = _service_texts.get(t.port)
    if service is None:
        name = _service(t.port)
        service = _service_texts[t.port] = "null" if name is None else _text(name)
    rtt = result.rtt
    rtt_text = "null"
    if rtt is not None:  # milliseconds to the microsecond, as to_json has it; a scan meets few values
        micros = int(rtt * 1e6 + 0.5)
        known = _rtt_texts.get(micros)
        if known is None:
            if len(_rtt_texts) >= 65536:
                _rtt_texts.clear()
            known = _rtt_texts[micros] = repr(micros / 1000)
        rtt_text = known
    return f"{head}{t.port}{middle}{service}{after}{rtt_text}{_TRIES}{result.tries}{tail}"


def _line_parts(result: PortResult) -> tuple[str, str, str, str]:
    """A line's constant pieces: before the port, between port and service, between service and
    round trip, and after the tries."""
    t, icmp = result.target, result.icmp
    icmp_text = "null" if icmp is None else (
        f'{{"type": {icmp[0]}, "code": {icmp[1]}, "from": {"null" if icmp[2] is None else _text(icmp[2])}}}')
    return (f'{{"host": {_text(t.ip)}, "family": "{"inet6" if t.family == socket.AF_INET6 else "inet"}", "port": ',
            f', "state": {_text(result.state)}, "service": ',
            f', "reason": {_text(result.reason)}, "rtt_ms": ',
            f', "icmp": {icmp_text}, "reply": null}}')


_TRIES = ', "tries": '
_parts: dict[tuple[object, ...], tuple[str, str, str, str]] = {}
_service_texts: dict[int, str] = {}
_rtt_texts: dict[int, str] = {}


def _service(port: int) -> str | None:
    return udp_services().get(port)


def run(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    args = build_parser().parse_args(list(argv))
    # A full-range scan makes hundreds of thousands of small objects and no reference cycles: the
    # cyclic collector would walk them over and over (75 ms of a 0.5 s scan with --json).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _scan(args, out, err)
    finally:
        if collecting:
            gc.enable()


def _scan(args: Any, out: TextIO, err: TextIO) -> int:
    check_options(timeout=args.timeout, retries=args.retries, rate=args.rate)
    ports = top_ports(args.top_ports) if args.top_ports is not None else parse_ports(args.ports or DEFAULT_PORTS)
    hosts = resolve(args.targets, args.family)
    data = _payload(args)
    check_targets(hosts, data)
    sources = source_addresses(args.source)
    check_sources(sources)
    progress = _Progress(err, len(ports) * len(hosts))
    pending: list[str] = []
    flushed = [time.monotonic()]

    made: dict[object, str] = {}  # --json: each verdict's line, made while the scan waits on the network

    def stream(result: PortResult) -> None:
        progress.advance()
        if args.json:
            made[result.target] = json_line(result)
        elif args.jsonl and (result.state == OPEN or not args.open):
            pending.append(json_line(result))
            now = time.monotonic()
            if now - flushed[0] >= 0.05:  # a reader sees verdicts as they come, at most 50 ms late,
                write_lines()  # in a few large writes rather than one per verdict of a 65,535-port scan
                flushed[0] = now

    def write_lines() -> None:
        if pending:
            out.write("\n".join(pending) + "\n")
            out.flush()
            pending.clear()

    try:
        given = args.payload is not None or args.payload_hex is not None or args.payload_file is not None
        service = args.service or ("none" if given else "auto")
        forged: dict[str, int] = {}
        results = probe(hosts, ports, service=service, payload=data, query=args.query, retries=args.retries,
                        timeout=args.timeout, rate=args.rate, on_result=stream, forged=forged, sources=sources,
                        freebind=any("/" in item for item in args.source))
    except OSError as exc:
        raise UdpkitError(f"cannot probe: {exc.strerror or exc}") from None
    finally:
        progress.close()
    if args.jsonl:
        write_lines()  # the verdicts since the last write
    elif args.json:
        # One object a line, in one write: json.dump with indent uses the pure-Python encoder and
        # writes chunk by chunk (3.8 million writes for a full-range scan).
        lines = [made.get(r.target) or json_line(r) for r in results if r.state == OPEN or not args.open]
        out.write("[\n  " + ",\n  ".join(lines) + "\n]\n" if lines else "[]\n")
    else:
        out.write(render_table(results, hosts, only_open=args.open))
    for ip, count in forged.items():
        err.write(f"udpkit probe: warning: {ip}: {count} datagram(s) or ICMP error(s) we never asked for — someone"
                  " may be forging its answers; only answers carrying our nonce count there\n")
    return 0 if results and all(r.state == OPEN for r in results) else 1


class _Progress:
    """A rich progress bar on a terminal's stderr, shown once a scan has run for a second (a timer
    starts it, so a scan waiting on silent ports shows it too)."""

    def __init__(self, err: TextIO, total: int) -> None:
        self.err, self.total, self.done = err, total, 0
        self.bar: Any = None
        self.task: Any = None
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None
        if _is_terminal(err):
            self.timer = threading.Timer(1.0, self._start)
            self.timer.daemon = True
            self.timer.start()

    def _start(self) -> None:
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        except ImportError:
            return
        with self.lock:
            if self.timer is None or self.done >= self.total:
                return
            console = Console(file=self.err, no_color=bool(os.environ.get("NO_COLOR")))
            self.bar = Progress(TextColumn("probing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                console=console, transient=True)
            self.task = self.bar.add_task("probe", total=self.total, completed=self.done)
            self.bar.start()

    def advance(self) -> None:
        self.done = min(self.total, self.done + 1)  # a verdict that evidence changed is reported twice
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)

    def close(self) -> None:
        with self.lock:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if self.bar is not None:
                self.bar.stop()
                self.bar = None


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def render_table(results: Sequence[PortResult], hosts: Sequence[tuple[str, int]], *, only_open: bool) -> str:
    """nmap's layout: a block per host, ``PORT STATE SERVICE REASON``, closed ports summed up when many."""
    lines = []
    for ip, family in hosts:
        mine = [r for r in results if r.target.ip == ip and r.target.family == family]
        lines.append(f"udpkit probe report for {ip}")
        closed = [r for r in mine if r.state == "closed"]
        hide_closed = only_open or len(closed) > 25
        shown = [r for r in mine if (r.state == OPEN or not only_open) and not (hide_closed and r.state == "closed")]
        hidden = [r for r in mine if r.state != OPEN] if only_open else closed if hide_closed else []
        if hidden:
            lines.append("Not shown: " + _not_shown(hidden))
        if shown:
            rows = [("PORT", "STATE", "SERVICE", "REASON")]
            for r in shown:
                reason = r.reason
                if r.icmp is not None and r.icmp[2]:
                    reason += f" from {r.icmp[2]}"
                if r.rtt is not None:
                    reason += f" ({r.rtt * 1000:.2f} ms)"
                if r.evidence is not None and r.evidence.detail:
                    reason += " " + _detail_text(r.evidence.detail)
                rows.append((f"{r.target.port}/udp", r.state, _service_shown(r), reason))
            widths = [max(len(row[i]) for row in rows) for i in range(3)]
            lines.extend(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows)
        lines.append("")
    return "\n".join(lines)


def _service_shown(result: PortResult) -> str:
    """The SERVICE column: the services database's name, unless the reply proved another protocol
    than the one registered there (an echo service on 7007 is ``echo``, as ``nmap -sV`` says)."""
    registered = _service(result.target.port)
    found = None if result.evidence is None else result.evidence.protocol
    if found is not None and PORTS.get(found) != result.target.port:
        return found
    return registered or found or "unknown"


def _not_shown(hidden: Sequence[PortResult]) -> str:
    """nmap's summary of the ports a table leaves out, by state with the reason when they share one:
    ``65533 closed udp ports (port-unreachable), 1 open|filtered udp port (no-response)``."""
    parts = []
    for state in dict.fromkeys(r.state for r in sorted(hidden, key=lambda r: _HIDDEN_ORDER.get(r.state, 9))):
        group = [r for r in hidden if r.state == state]
        reasons = {r.reason for r in group}
        reason = f" ({reasons.pop()})" if len(reasons) == 1 else ""
        parts.append(f"{len(group)} {state} udp port{'' if len(group) == 1 else 's'}{reason}")
    return ", ".join(parts)


_HIDDEN_ORDER = {"closed": 0, "open|filtered": 1, "filtered": 2, "conflict": 3}


def _detail_text(detail: dict[str, Any]) -> str:
    """A probe's reading in one table cell: ``stratum=2 offset_ms=0.03``."""
    return " ".join(f"{key}={value}" for key, value in detail.items() if value is not None and value != "")
