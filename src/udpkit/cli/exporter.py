"""``udpkit exporter``: UDP services and sockets for Prometheus — blackbox_exporter's ``/probe`` for UDP,
and the host's UDP counters and sockets on ``/metrics``."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from udpkit.cli._argparse import Parser
from udpkit.errors import UdpkitError, UsageError

__all__ = ["run"]

EPILOG = """\
endpoints:
  /probe?target=HOST:PORT&module=NAME   probe once, answer with that probe's metrics (debug=true: its log)
  /metrics                              the host's UDP counters and sockets, and the exporter's own
  /-/healthy   /-/reload (POST, or SIGHUP)   /   (the modules and the last probes)

The default port, 10123, is outside Prometheus's allocated exporter ports (9100-9999, all taken).
Without --config.file the modules are udp, ntp, dns, echo and snmp with their defaults.
Safety: without 'allow:' in the config any target can be probed by whoever reaches this port
(a server-side request forgery risk, as with blackbox_exporter): set it, or keep the port private.

examples:
  udpkit exporter --config.file /etc/udpkit/exporter.yml
  curl 'http://localhost:10123/probe?target=pool.ntp.example:123&module=ntp'
"""


def build_parser() -> Parser:
    from udpkit.exporter.server import DEFAULT_PORT

    p = Parser("udpkit exporter", "A Prometheus exporter for UDP services and sockets.", EPILOG)
    p.add_argument("--web.listen-address", dest="listen", default=f":{DEFAULT_PORT}", metavar="ADDR:PORT",
                   help=f"where to serve HTTP (default :{DEFAULT_PORT}, every address)")
    p.add_argument("--config.file", dest="config", metavar="FILE", help="the modules (YAML, blackbox's shape)")
    p.add_argument("--max-sockets", type=int, default=250, metavar="N",
                   help="sockets with series of their own on /metrics; the rest are summed (default 250)")
    p.add_argument("--config.check", dest="check", action="store_true", help="check the config file and exit")
    return p


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--web.listen-address {text!r}: expected [HOST]:PORT")
    return host.strip("[]") or "", int(port)


def run(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    args = build_parser().parse_args(list(argv))
    if args.max_sockets < 0:
        raise UsageError("--max-sockets must be 0 or more")
    host, port = _address(args.listen)
    from udpkit.exporter.server import Exporter

    exporter = Exporter(args.config, max_sockets=args.max_sockets)
    if args.check:
        out.write(f"{args.config or 'the built-in config'}: {len(exporter.config.modules)} modules, valid\n")
        return 0
    try:
        server = exporter.server(host if host else "::", port)
    except OSError as exc:
        raise UdpkitError(f"cannot listen on {args.listen}: {exc.strerror or exc}") from None

    def reload(_signum: int, _frame: object) -> None:
        error = exporter.reload()
        err.write("udpkit exporter: config reloaded\n" if error is None else f"udpkit exporter: reload failed: {error}\n")
        err.flush()

    signal.signal(signal.SIGHUP, reload)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    modules = ", ".join(exporter.config.modules)
    err.write(f"udpkit exporter: listening on {args.listen} (modules: {modules})\n")
    err.flush()
    try:
        server.serve_forever(poll_interval=0.5)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
    return 0
