"""OpenBSD netcat's UDP mode as Debian's ``netcat-openbsd`` 1.219 behaves: its flags, its port lists,
its messages and its way of deciding, without sockets.

nc's UDP "scan" (``-v``) is ``udptest``: write ``X`` twice, then once a second for three seconds
(or ``-w`` seconds); the port "succeeded" unless a write fails with ``ECONNREFUSED`` — the ICMP port
unreachable of an earlier ``X``. Silence is success, which is why the tutorial warns that only a
reply proves a port open (``udpkit probe`` gives that proof). Without ``-v`` nothing is tested and
every port "succeeds". The exit status is that of the last port tried, as in nc's loop.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from udpkit.addr import udp_service_port
from udpkit.errors import UsageError

__all__ = ["NC_OPTIONS", "NcPlan", "UDP_SCAN_TIMEOUT", "bound_line", "parse_nc", "received_line", "succeeded_line",
           "udptest"]

#: Seconds ``udptest`` keeps writing when no ``-w`` is given (nc's ``UDP_SCAN_TIMEOUT``).
UDP_SCAN_TIMEOUT = 3

#: nc's getopt string: every option it knows, so that the unsupported ones get a clear refusal.
NC_OPTIONS = "46CDdFhklNnrStUuvZzI:i:M:m:O:P:p:q:s:T:V:W:w:X:x:"
_SUPPORTED = set("46dhklnuvzpsqw")
_NAMES = {"C": "CRLF line endings", "D": "socket debugging", "F": "descriptor passing", "I": "-I length",
          "i": "interval", "k": "keep listening", "M": "TTL", "m": "minimum TTL", "N": "shutdown on EOF", "O": "-O length",
          "P": "proxy user", "r": "random ports", "S": "TCP MD5", "t": "telnet", "T": "TOS", "U": "Unix sockets",
          "V": "routing table", "W": "receive limit", "X": "proxy protocol", "x": "proxy", "Z": "DCCP"}


@dataclass(frozen=True)
class NcPlan:
    """What an ``nc -u`` command line asks for."""

    family: int  # AF_UNSPEC, AF_INET or AF_INET6
    verbose: int
    scan: bool  # -z
    numeric: bool  # -n
    listen: bool  # -l
    detach: bool  # -d: do not read stdin
    timeout: int | None  # -w seconds
    quit_after: int | None  # -q seconds after EOF on stdin
    source: str | None  # -s
    source_port: int | None  # -p
    host: str | None
    ports: tuple[str, ...]  # as nc prints them
    keep: bool = False  # -k with -l: every sender's datagrams, not only the first's


def parse_nc(options: Sequence[tuple[str, str | None]], operands: Sequence[str]) -> NcPlan:
    """nc's options (as getopt splits them with ``NC_OPTIONS``) and operands -> ``NcPlan``; anything nc
    would refuse, or udpkit does not do, is a UsageError."""
    flags: dict[str, str | None] = {}
    verbose = 0
    for name, value in options:
        ch = name[1:]
        if ch not in _SUPPORTED:
            raise UsageError(f"-{ch} ({_NAMES.get(ch, 'this option')}) is not supported by udpkit nc")
        if ch == "v":
            verbose += 1
        flags[ch] = value
    if "h" in flags:
        raise UsageError("usage: udpkit nc [-46dklnuvz] [-p source_port] [-q seconds] [-s sourceaddr] "
                         "[-w timeout] [destination] [port]")
    if "u" not in flags:
        raise UsageError("only UDP is supported: add -u (udpkit nc is netcat's UDP mode)")
    if "4" in flags and "6" in flags:
        raise UsageError("cannot use -4 and -6 together")
    family = socket.AF_INET if "4" in flags else socket.AF_INET6 if "6" in flags else socket.AF_UNSPEC
    timeout = _seconds(flags, "w", "timeout")
    quit_after = _seconds(flags, "q", "quit")
    source_port = None if flags.get("p") is None else int(_port_text(str(flags["p"])))
    listen = "l" in flags
    if "k" in flags and not listen:
        raise UsageError("must use -l with -k")
    host: str | None
    if listen:
        if len(operands) > 2:
            raise UsageError("too many arguments for -l: [address] port")
        if not operands and source_port is None:
            raise UsageError("missing port number")
        host = operands[0] if len(operands) == 2 else flags.get("s")
        ports: tuple[str, ...] = (_port_text(operands[-1]),) if operands and (len(operands) == 2 or operands[-1].isdigit()) else ()
        if not ports:
            ports = (str(source_port),)
        return NcPlan(family, verbose, "z" in flags, "n" in flags, True, "d" in flags, timeout,
                      quit_after, flags.get("s"), None, host, ports, keep="k" in flags)
    if not operands:
        raise UsageError("missing destination")
    if len(operands) < 2:
        raise UsageError("missing port number")
    host = operands[0]
    ports = tuple(port for text in operands[1:] for port in _expand(text))
    return NcPlan(family, verbose, "z" in flags, "n" in flags, False, "d" in flags, timeout,
                  quit_after, flags.get("s"), source_port, host, ports)


def _seconds(flags: dict[str, str | None], ch: str, what: str) -> int | None:
    value = flags.get(ch)
    if value is None:
        return None
    try:
        seconds = int(value)
    except ValueError:
        raise UsageError(f"{what} invalid: {value}") from None
    if seconds < 0 or seconds > 100_000_000:
        raise UsageError(f"{what} {'too small' if seconds < 0 else 'too large'}: {value}")
    return seconds


def _port_text(text: str) -> str:
    """nc's ``strtoport``: a number 1..65535 or a UDP service name, as the number's text."""
    try:
        number = int(text, 10)
    except ValueError:
        port = udp_service_port(text)
        if port is None:
            raise UsageError(f'service "{text}" unknown') from None
        return str(port)
    if number < 1:
        raise UsageError(f"port number too small: {text}")
    if number > 65535:
        raise UsageError(f"port number too large: {text}")
    return str(number)


def _expand(text: str) -> list[str]:
    """``"22-25"`` -> ports 22..25 (either order, as nc); ``"53"`` or ``"ntp"`` -> one port."""
    low, sep, high = text.partition("-")
    if sep and low[:1].isdigit():
        first, last = int(_port_text(low)), int(_port_text(high))
        first, last = min(first, last), max(first, last)
        return [str(port) for port in range(first, last + 1)]
    return [_port_text(text)]


def udptest(write: Callable[[], bool], sleep: Callable[[float], None], timeout: int | None) -> bool:
    """nc's ``udptest``: ``write()`` sends one ``X`` and returns ``False`` on ``ECONNREFUSED``.

    Two writes at once, then one a second for ``timeout`` seconds (default ``UDP_SCAN_TIMEOUT``);
    ``False`` as soon as a write is refused, ``True`` (nc: "succeeded") if none was.
    """
    if not write() or not write():
        return False
    for _ in range(UDP_SCAN_TIMEOUT if timeout is None else timeout):
        sleep(1.0)
        if not write():
            return False
    return True


def succeeded_line(host: str, port: str, address: str, *, numeric: bool) -> str:
    """nc's ``connection_info``: ``Connection to localhost (127.0.0.1) 123 port [udp/ntp] succeeded!``."""
    service = "*"
    if not numeric:
        try:
            service = socket.getservbyport(int(port), "udp")
        except OSError:
            pass
    shown = f"{host} ({address})" if not numeric and host != address else host
    return f"Connection to {shown} {port} port [udp/{service}] succeeded!\n"


def bound_line(address: str, port: int) -> str:
    """``nc -ulv``'s first line: ``Bound on 0.0.0.0 22140``."""
    return f"Bound on {address} {port}\n"


def received_line(host: str, port: int) -> str:
    """``nc -ulv`` when the first datagram arrives: ``Connection received on localhost 44559``."""
    return f"Connection received on {host} {port}\n"
