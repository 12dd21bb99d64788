"""``udpkit discover``: who answers on this link — SSDP, mDNS, WS-Discovery, NetBIOS, SNMP and NTP asked
at once, each host listed with what it said.

A command of its own rather than ``udpkit probe --discover``: probe answers "what is this port of
this host", with a verdict for every port asked; discovery has no targets and no verdicts, only the
hosts that chose to answer a question put to a whole link, so its options and output differ.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from typing import TextIO

from udpkit.cli._argparse import Parser
from udpkit.errors import UsageError
from udpkit.probe.discover import DEFAULT_TIMEOUT, SERVICES, Found, discover

__all__ = ["run"]

EPILOG = f"""\
what is asked (each over IPv4 and, where the protocol has a group, IPv6):
  ssdp        M-SEARCH ssdp:all to 239.255.255.250:1900 and [ff02::c]:1900
  mdns        _services._dns-sd._udp.local PTR to 224.0.0.251:5353 and [ff02::fb]:5353
  wsd         WS-Discovery Probe for devices to 239.255.255.250:3702 and [ff02::c]:3702
  netbios-ns  node status for * to the link's broadcast address, port 137
  snmp        get sysDescr (community public) to the broadcast address, port 161
  ntp         an NTP client request (mode 3) to the broadcast address, port 123

VERIFIED: the answer carries something of our own request (an id, a stamp), so a host that never
saw the request could not have made it up; SSDP answers carry nothing of it.

examples:
  udpkit discover                      every interface that is up, {DEFAULT_TIMEOUT:g} s
  udpkit discover -i eth0 --json       one link, as JSON
  udpkit discover --service mdns,ssdp -4 --timeout 5
"""


def build_parser() -> Parser:
    p = Parser("udpkit discover", "Ask a link who is there and list every host that answered.", EPILOG)
    p.add_argument("-i", "--interface", action="append", metavar="IFACE",
                   help="ask this interface (repeatable; default: every one that is up, not loopback)")
    p.add_argument("--service", metavar="NAME[,NAME]", help=f"only these ({', '.join(SERVICES)})")
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="only", action="store_const", const=socket.AF_INET, help="IPv4 only")
    fam.add_argument("-6", dest="only", action="store_const", const=socket.AF_INET6, help="IPv6 only")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"listen for answers this long (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--json", action="store_true", help="print a JSON list of the hosts that answered")
    return p


def render_table(found: Sequence[Found]) -> str:
    """The hosts as an aligned table, one line per (host, service)."""
    rows = [("HOST", "SERVICE", "PORT", "VERIFIED", "IDENTITY")]
    rows += [(f.host, f.service, str(f.port), "yes" if f.verified else "no", f.identity) for f in found]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "".join(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]:<{widths[3]}}"
                   f"  {row[4]}".rstrip() + "\n" for row in rows)


def run(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    args = build_parser().parse_args(list(argv))
    services = SERVICES
    if args.service:
        services = tuple(name.strip() for name in args.service.split(",") if name.strip())
        unknown = [name for name in services if name not in SERVICES]
        if unknown or not services:
            raise UsageError(f"--service {args.service}: known services are {', '.join(SERVICES)}")
    families = (args.only,) if args.only else (socket.AF_INET, socket.AF_INET6)
    if not (args.timeout > 0 and args.timeout <= 3600):
        raise UsageError("--timeout must be more than 0 and at most 3600 seconds")
    started = time.monotonic()
    found = discover(args.interface, services=services, families=families, timeout=args.timeout)
    took = time.monotonic() - started
    if args.json:
        json.dump([f.to_json() for f in found], out, indent=2)
        out.write("\n")
    elif found:
        out.write(render_table(found))
    hosts = len({f.host.partition("%")[0] for f in found})
    err.write(f"udpkit discover: {len(found)} answer{'s' if len(found) != 1 else ''} from {hosts}"
              f" host{'s' if hosts != 1 else ''} in {took:.1f} s\n")
    return 0
