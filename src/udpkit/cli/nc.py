"""``udpkit nc``: OpenBSD netcat's UDP mode, message for message and exit status for exit status.

nc calls a port "succeeded" when no ICMP error came back within three seconds, so a silent port
passes; that is nc's behaviour and it is kept. ``udpkit probe`` is the command that asks for proof.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import BinaryIO, TextIO

from udpkit.cli._getopt import getopt
from udpkit.cli._stdio import stdin_fd
from udpkit.compat.nc import NC_OPTIONS, NcPlan, bound_line, parse_nc, received_line, succeeded_line, udptest
from udpkit.errors import UdpkitError
from udpkit.net import HostNotFound, accept_first, bind_passive, connect_udp, pump

__all__ = ["run"]


HELP = """\
usage: udpkit nc [-46dlnuvz] [-p source_port] [-q seconds] [-s sourceaddr] [-w timeout]
                 [destination] [port[-port]...]

OpenBSD netcat's UDP mode (-u is required), message for message and exit status for exit status.
With -v, a port "succeeded" when no ICMP port unreachable came back within 3 seconds (-w): silence
passes, as in nc. 'udpkit probe' asks for a reply instead.

examples:
  udpkit nc -4 -u -vz 127.0.0.1 123          the tutorial's test
  udpkit nc -u -vz -w 1 ::1 120-125          a range, one second each
  echo hello | udpkit nc -u -w 1 127.0.0.1 7  send a datagram, print the answer
  udpkit nc -u -l 9999                       print what the first sender sends
"""


def run(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    options, operands = getopt(argv, NC_OPTIONS, {})
    if any(name == "-h" for name, _value in options):
        out.write(HELP)
        return 0
    plan = parse_nc(options, operands)
    if plan.listen:
        return _listen(plan, out, err)
    assert plan.host is not None
    ret = 1
    for port in plan.ports:
        try:
            sock, address = connect_udp(plan.host, port, plan.family, numeric=plan.numeric, source=plan.source,
                                        source_port=plan.source_port)
        except HostNotFound as exc:
            raise UdpkitError(str(exc)) from None
        except OSError as exc:
            err.write(f"udpkit nc: connect to {plan.host} port {port} (udp) failed: {exc.strerror or exc}\n")
            continue
        with sock:
            ret = 0
            if plan.verbose:
                if not udptest(lambda: _write_x(sock), time.sleep, plan.timeout):
                    ret = 1
                    continue
                err.write(succeeded_line(plan.host, port, address, numeric=plan.numeric))
                err.flush()
            if not plan.scan:
                _converse(sock, plan, out)
    return ret


def _write_x(sock: socket.socket) -> bool:
    """One of udptest's ``X``: ``False`` only when the kernel reports an ICMP port unreachable."""
    try:
        sock.send(b"X")
    except ConnectionRefusedError:
        return False
    except OSError:
        pass
    return True


def _converse(sock: socket.socket, plan: NcPlan, out: TextIO) -> None:
    """nc's readwrite: standard input out as datagrams, datagrams in to standard output."""
    sink: BinaryIO | None = getattr(out, "buffer", None)
    if sink is None:
        raise UdpkitError("standard output does not take bytes here")
    source = None if plan.detach else stdin_fd()
    linger = None if plan.quit_after is None else float(plan.quit_after)
    idle = None if plan.timeout is None else float(plan.timeout)
    try:
        pump(sock, source, sink, linger=linger, idle=idle, until_refused=True, deaf_after_eof=linger is not None)
    except ConnectionRefusedError:
        pass  # nc's readwrite ends at the peer's port unreachable, silently and at once (not after -w)


def _every_sender(sock: socket.socket, out: TextIO) -> None:
    """``nc -ulk``: every sender's datagrams to standard output, until stopped; nothing is sent, as
    nc, never connected to one peer, sends nothing either."""
    sink: BinaryIO | None = getattr(out, "buffer", None)
    if sink is None:
        raise UdpkitError("standard output does not take bytes here")
    sock.settimeout(None)
    while True:
        try:
            data = sock.recv(65535)
        except InterruptedError:
            continue
        except ConnectionRefusedError:
            continue  # nothing of ours was sent: a stray error, not the end
        sink.write(data)
        sink.flush()


def _listen(plan: NcPlan, out: TextIO, err: TextIO) -> int:
    """``nc -ul [address] port``: bind, take the first sender as the peer, then converse with it."""
    try:
        sock = bind_passive(plan.host, plan.ports[0], plan.family, numeric=plan.numeric)
    except HostNotFound as exc:
        raise UdpkitError(str(exc)) from None
    except OSError as exc:
        raise UdpkitError(exc.strerror or str(exc)) from None
    with sock:
        if plan.verbose:
            host, port = sock.getsockname()[:2]
            err.write(bound_line(host, port))
            err.flush()
        if plan.keep:
            _every_sender(sock, out)
            return 0
        peer = accept_first(sock)  # nc waits for its first sender however long -w is (nc(1): no effect on -l)
        if peer is None:
            return 1
        if plan.verbose:
            name = peer[0]
            if not plan.numeric:
                try:
                    name = socket.getnameinfo(peer, socket.NI_NUMERICSERV)[0]
                except OSError:
                    pass
            err.write(received_line(name, peer[1]))
            err.flush()
        _converse(sock, plan, out)
    return 0
