"""``udpkit tour``: the datagram-socket walkthrough, live on this machine, in a few seconds.

Create (an NTP responder on 0.0.0.0 and [::], v6-only, as the tutorial's two socat commands),
examine (``udpkit ss``), test (``udpkit nc`` as the tutorial does, then ``udpkit probe`` with the
proof nc cannot give), clean up. Everything runs in this process through the library and the
other commands' own functions; the listeners are stopped on every exit path, Ctrl-C included.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from udpkit.addr import Endpoint
from udpkit.cli._argparse import Parser
from udpkit.errors import UsageError
from udpkit.listen import Listener
from udpkit.net import BindOptions, free_port_pair
from udpkit.probe import probe as probe_ports

__all__ = ["run"]

EPILOG = """\
examples:
  udpkit tour                  the whole walkthrough (port 123 as root, a free port otherwise)
  udpkit tour --step           wait for Enter between steps
  udpkit tour --json | jq .    the steps and their results as data
"""


def build_parser() -> Parser:
    p = Parser("udpkit tour", "The datagram-socket walkthrough: create, examine and test UDP sockets, live.", EPILOG)
    p.add_argument("--port", type=int, metavar="N", help="the service port (default: 123 as root, else a free one)")
    p.add_argument("--no-color", action="store_true", help="plain text (also when NO_COLOR is set)")
    p.add_argument("--json", action="store_true", help="print the steps and their results as one JSON document")
    p.add_argument("--step", action="store_true", help="wait for Enter between steps")
    return p


class _Guide:
    """Where the tour writes: headings, sentences and command transcripts, or a JSON record."""

    def __init__(self, out: TextIO, *, color: bool, as_json: bool, step: bool) -> None:
        self.out, self.color, self.as_json, self.step = out, color, as_json, step
        self.steps: list[dict[str, Any]] = []

    def _style(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def heading(self, number: int, title: str) -> None:
        self.steps.append({"step": number, "title": title, "notes": [], "commands": []})
        if not self.as_json:
            if number > 1 and self.step:
                self.out.write(self._style("(press Enter for the next step)", "2"))
                self.out.flush()
                sys.stdin.readline()
            self.out.write("\n" + self._style(f"{number}. {title}", "1;36") + "\n\n")

    def say(self, text: str) -> None:
        self.steps[-1]["notes"].append(text)
        if not self.as_json:
            self.out.write(text + "\n")

    def command(self, argv: Sequence[str], output: str, status: int, **data: Any) -> None:
        self.steps[-1]["commands"].append({"argv": list(argv), "output": output, "status": status, **data})
        if not self.as_json:
            self.out.write(self._style("$ " + " ".join(argv), "1") + "\n" + output)
            if output and not output.endswith("\n"):
                self.out.write("\n")
            self.out.write("\n")
        self.out.flush()


def _capture(run: Callable[[Sequence[str], TextIO, TextIO], int], argv: Sequence[str]) -> tuple[str, int]:
    """Run another command's ``run`` in this process; its stdout and stderr, interleaved as a user sees them."""
    buffer = io.StringIO()
    status = run(argv, buffer, buffer)
    return buffer.getvalue(), status


def _free_port() -> int:
    """A port free on both 0.0.0.0 and [::]."""
    port = free_port_pair()
    if port is None:
        raise UsageError("no free UDP port on both families")
    return port


def run(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    args = build_parser().parse_args(list(argv))
    if args.port is not None and not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: must be 1..65535")
    color = not args.no_color and not os.environ.get("NO_COLOR") and out.isatty() and not args.json
    guide = _Guide(out, color=color, as_json=args.json, step=args.step)
    listeners: list[Listener] = []
    try:
        _tour(guide, args, listeners)
    finally:
        for listener in listeners:  # every exit path, Ctrl-C included, leaves nothing listening
            listener.stop()
        for listener in listeners:
            try:
                listener.join(5.0)
            finally:
                listener.close()
    if args.json:
        json.dump({"steps": guide.steps}, out, indent=2)
        out.write("\n")
    return 0


def _tour(guide: _Guide, args: Any, listeners: list[Listener]) -> None:
    from udpkit.cli import nc, probe, ss
    from udpkit.net.clock import measure_precision
    from udpkit.services.classic import Discard
    from udpkit.services.ntp import NtpResponder

    root = os.geteuid() == 0
    port = args.port or (123 if root else _free_port())
    guide.heading(1, "Create: an NTP service on IPv4 and IPv6")
    if args.port is None and not root:
        guide.say(f"Port 123 is privileged (below 1024) and this is not root, so the tour uses port {port}.")
    guide.say("The tutorial emulates an NTP server with two socat listeners: one on 0.0.0.0 (every IPv4\n"
              "address) and one on [::] with ipv6only=1 (every IPv6 address, and IPv6 only). udpkit does\n"
              "the same, and answers real NTP instead of throwing the datagrams away:")
    ntp = Listener([Endpoint("0.0.0.0", port, socket.AF_INET), Endpoint("::", port, socket.AF_INET6)],
                   respond=NtpResponder(precision=measure_precision()), bind=BindOptions(v6only=True))
    listeners.append(ntp)
    ntp.start()
    guide.command(["udpkit", "listen", str(port), "--respond", "ntp"],
                  f"udpkit listen: ntp on udp 0.0.0.0:{port}, udp [::]:{port} (v6only)\n", 0,
                  equivalent=[f"socat UDP4-LISTEN:{port},fork /dev/null",
                              f"socat UDP6-LISTEN:{port},ipv6only=1,fork /dev/null",
                              f"udpkit socat UDP4-LISTEN:{port},fork /dev/null"])
    guide.say(f"(the tutorial's way: socat UDP4-LISTEN:{port},fork /dev/null and\n"
              f" socat UDP6-LISTEN:{port},ipv6only=1,fork /dev/null — udpkit socat takes the same words)")

    guide.heading(2, "Examine: the sockets, as ss shows them")
    guide.say("UDP has no connections, so a listening UDP socket is UNCONN; 0.0.0.0 and [::] are the\n"
              "wildcard addresses, and two sockets share the port because one is IPv4 and one IPv6-only.")
    for family in ("-4", "-6"):
        argv = [family, "-uln", "sport", "=", f":{port}"]
        output, status = _capture(ss.run, argv)
        guide.command(["udpkit", "ss", *argv], output, status)
    argv = ["-ulnp", "sport", "=", f":{port}"]
    output, status = _capture(ss.run, argv)
    guide.say("With -p, the process that owns them (this one):")
    guide.command(["udpkit", "ss", *argv], output, status)

    guide.heading(3, "Test: nc's answer, then the evidence")
    guide.say("nc calls a UDP port open when no ICMP port-unreachable came back within its wait\n"
              "(-w 1: one second instead of nc's three, to keep the tour short):")
    for family, host in (("-4", "127.0.0.1"), ("-6", "::1")):
        argv = [family, "-u", "-vz", "-w", "1", host, str(port)]
        output, status = _capture(nc.run, argv)
        guide.command(["udpkit", "nc", *argv], output, status)
    guide.say("Silence proves nothing. udpkit probe sends a real NTP request and opens the reply:")
    argv = ["127.0.0.1", "::1", "-p", str(port), "--service", "ntp", "--timeout", "0.5", "--retries", "1"]
    output, status = _capture(probe.run, argv)
    guide.command(["udpkit", "probe", *argv], output, status)
    closed = _free_port()
    guide.say("A closed port: the kernel answers with ICMP port unreachable (IPv4 type 3 code 3, IPv6\n"
              "type 1 code 4), and udpkit shows it and who sent it:")
    argv = ["127.0.0.1", "::1", "-p", str(closed), "--timeout", "0.5", "--retries", "1"]
    output, status = _capture(probe.run, argv)  # every command shown is followed by what it printed
    found = probe_ports(["127.0.0.1", "::1"], [closed], timeout=0.5, retries=1)
    icmp = [(r.target.ip, None if r.icmp is None else {"type": r.icmp[0], "code": r.icmp[1], "from": r.icmp[2]})
            for r in found]
    guide.command(["udpkit", "probe", *argv], output, status, icmp=icmp)
    guide.say("The evidence, as the JSON output (--json) has it:\n" + "".join(
        f"  {host}: ICMP type {i['type']} code {i['code']} from {i['from']}\n" for host, i in icmp if i).rstrip("\n"))
    silent_port = _free_port()
    silent = Listener([Endpoint("127.0.0.1", silent_port, socket.AF_INET)], respond=Discard())
    listeners.append(silent)
    silent.start()
    guide.say(f"And a listener that never answers (discard, like the tutorial's /dev/null) on {silent_port}:\n"
              "nc says it succeeded; udpkit says open|filtered — something may be there, or a firewall\n"
              "may be dropping the datagrams; without a reply nobody can tell.")
    argv = ["-u", "-vz", "-w", "1", "127.0.0.1", str(silent_port)]
    output, status = _capture(nc.run, argv)
    guide.command(["udpkit", "nc", *argv], output, status)
    argv = ["127.0.0.1", "-p", str(silent_port), "--timeout", "0.3", "--retries", "1"]
    output, status = _capture(probe.run, argv)
    guide.command(["udpkit", "probe", *argv], output, status)

    guide.heading(4, "Clean up")
    for listener in listeners:
        listener.stop()
    for listener in listeners:
        listener.join(5.0)
        listener.close()
    listeners.clear()
    argv = ["-uln", "sport", "=", f":{port}", "or", "sport", "=", f":{silent_port}"]
    output, status = _capture(ss.run, argv)
    guide.say("The listeners are stopped; ss lists nothing on their ports any more:")
    guide.command(["udpkit", "ss", *argv], output, status)
    guide.say("Next: udpkit listen --help, udpkit probe --help, udpkit ss --help.")
