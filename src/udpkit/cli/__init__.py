"""The ``udpkit`` command: parse, call the library, render, and map errors to exit codes.

Exit status: 0 success, 1 runtime failure (permission, a backend refused), 2 usage error (a bad flag,
address or filter), 130 interrupted. Errors are one line on stderr; ``--debug`` adds the traceback.
Each subcommand lives in its own module, imported only when it runs, so ``udpkit ss`` pays for no
other command's imports.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
TYPE_CHECKING = False  # typing is not imported at run time: see udpkit._typing
if TYPE_CHECKING:
    from typing import TextIO

__all__ = ["console", "debugging", "main"]

_DEBUG = False


def debugging() -> bool:
    """Whether ``--debug`` was given: commands may then say more (the listener's receive paths)."""
    return _DEBUG

COMMANDS = {
    "tour": ("udpkit.cli.tour", "the datagram-socket walkthrough, live: create, examine, test, clean up"),
    "ss": ("udpkit.cli.ss", "examine UDP and TCP sockets, like iproute2's ss"),
    "listen": ("udpkit.cli.listen", "create UDP services on IPv4 and IPv6 (discard, echo, daytime, time, ntp, dns)"),
    "nc": ("udpkit.cli.nc", "OpenBSD netcat's UDP mode (nc -u -vz HOST PORT), message for message"),
    "completion": ("udpkit.cli.completion", "shell completion: udpkit completion bash|zsh"),
    "socat": ("udpkit.cli.socat", "socat's UDP addresses (UDP4-LISTEN:123,fork /dev/null ...) on the listener"),
    "probe": ("udpkit.cli.probe", "test UDP ports: open only when something answered, with the evidence"),
    "discover": ("udpkit.cli.discover", "ask a link who is there: SSDP, mDNS, WS-Discovery, NetBIOS, SNMP, NTP"),
    "exporter": ("udpkit.cli.exporter", "UDP services and sockets for Prometheus (/probe, /metrics)"),
}

USAGE = """\
usage: udpkit [--debug] COMMAND [ARGS...]
       udpkit --version

udpkit creates, examines and tests UDP sockets on IPv4 and IPv6.

commands:
{commands}

Run 'udpkit COMMAND --help' for a command's options.

examples:
  udpkit tour                                  the walkthrough, live: create, examine, test, clean up
  udpkit ss -ulnp 'sport = :123'               who listens on port 123
  udpkit listen 7007 --respond echo            an echo service on 0.0.0.0:7007 and [::]:7007
  udpkit probe 127.0.0.1 -p 123 --service ntp  is NTP answering there, with the proof
  udpkit nc -4 -u -vz 127.0.0.1 123            what nc would say
  udpkit discover -i eth0                      every SSDP, mDNS, WS-Discovery… device on a link
  udpkit socat UDP4-LISTEN:123,fork /dev/null  the tutorial's socat command, as written
  source <(udpkit completion bash)             tab completion for bash (or: zsh)
"""


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = "\n".join(f"  {name.ljust(width)}  {summary}" for name, (_mod, summary) in COMMANDS.items())
    return USAGE.format(commands=lines)


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    global _DEBUG
    debug = False
    while args and args[0] == "--debug":
        debug = True
        args.pop(0)
    _DEBUG = debug
    if not args or args[0] in ("-h", "--help", "help"):
        out.write(_usage())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        from udpkit import __version__

        out.write(f"udpkit {__version__}\n")
        return 0
    name = args.pop(0)
    if name not in COMMANDS:
        err.write(f"udpkit: unknown command {name!r} (commands: {', '.join(COMMANDS)})\n")
        return 2
    from udpkit.errors import UdpkitError, UsageError

    path = COMMANDS[name][0]
    __import__(path)  # (not importlib: it brings warnings, ~0.5 ms of every start)
    module = sys.modules[path]
    try:
        status: int = module.run(args, out, err)
        out.flush()
        return status
    except UsageError as exc:
        if debug:
            raise
        err.write(f"udpkit {name}: {exc}\n")
        return 2
    except UdpkitError as exc:
        if debug:
            raise
        err.write(f"udpkit {name}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        err.write(f"udpkit {name}: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (``udpkit ss | head``): not an error; keep Python from complaining at exit.
        import os

        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except OSError as exc:
        if debug:
            raise
        err.write(f"udpkit {name}: {exc.strerror or exc}\n")
        return 1


def console() -> None:
    """The ``udpkit`` console script: run :func:`main`, flush, and leave without interpreter teardown.

    A listing of 50,000 sockets leaves about a million objects behind; freeing them one by one at
    exit costs ~15 ms (10 % of ``udpkit ss -uln``) for memory the kernel reclaims anyway. Every
    command has closed its files and flushed its output by the time ``main`` returns.
    """
    import os

    status = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # the reader went away, or the stream was closed: nothing left to deliver
    os._exit(status)
