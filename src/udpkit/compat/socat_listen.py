"""A socat listener plan (:func:`~udpkit.compat.socat.parse_socat`) made into a :class:`Listener`.

The file a plan writes to is opened separately (:func:`open_target`), after the caller has dropped
privileges if the plan says ``su=``, and without following symbolic links.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, BinaryIO

from udpkit.compat.socat import SocatPlan, Target
from udpkit.errors import UdpkitError, UsageError
from udpkit.files import open_output
from udpkit.listen import Listener, Sink
from udpkit.listen.streams import StreamTarget
from udpkit.net import BindOptions

__all__ = ["listener_for", "open_target"]


def listener_for(plan: SocatPlan, idle: float | None, stdout: BinaryIO | None,
                 stdin_fd: int | None = None, tap: Callable[[bytes, bool, object], None] | None = None,
                 stderr: BinaryIO | None = None) -> Listener:
    """The Listener a plan describes; a file target's sink is attached by the caller (``open_target``).

    Groups the plan joins are answered (socat answers whatever it receives); broadcasts too when
    the plan says ``broadcast``. ``tap``: socat's ``-v``/``-x`` (see :class:`Listener`)."""
    target = plan.target
    respond = "echo" if target.kind == "echo" else "discard"
    if plan.mode == "recv" and target.kind in ("echo", "relay", "exec", "tcp"):
        raise UsageError("UDP-RECV only receives; use UDP-RECVFROM or UDP-LISTEN to answer")
    stream = None
    if target.kind == "exec":
        assert target.argv is not None
        stream = StreamTarget(argv=target.argv)
    elif target.kind == "tcp":
        family, address = _resolve(target, socket.SOCK_STREAM)
        stream = StreamTarget(family=family, address=address)
    relay = None
    if target.kind == "relay":
        family, address = _resolve(target, socket.SOCK_DGRAM)
        relay = (family, (str(address[0]), int(address[1])))
    sink = None
    if target.kind in ("stdout", "stdio", "stderr"):
        output = stderr if target.kind == "stderr" else stdout
        if output is None:
            raise UdpkitError(f"standard {'error' if target.kind == 'stderr' else 'output'} does not take bytes here")
        sink = Sink(output, "raw")
    elif target.kind == "file":
        sink = Sink(None, "raw")
    bind = BindOptions(v6only=plan.v6only, reuseaddr=plan.reuseaddr, reuseport=plan.reuseport,
                       device=plan.device, rcvbuf=plan.rcvbuf, memberships=plan.memberships, send=plan.send)
    if any(m.family != plan.endpoint.family for m in plan.memberships):
        raise UsageError(f"a group of the other family cannot be joined on a {plan.endpoint} listener")
    sessions = plan.mode == "listen" and plan.fork
    one_session = stream is not None and not plan.fork
    # PIPE is socat's echo: udpkit's echo responder, with its guards against reflection loops
    return Listener(
        [plan.endpoint], respond=respond, bind=bind, sink=sink,
        count=1 if plan.mode == "recvfrom" and not plan.fork and stream is None else None,
        fork=sessions, idle_timeout=idle if (sessions or relay or stream) else None,
        max_peers=plan.max_children, allow=plan.allow, relay=relay,
        single_peer=plan.mode == "listen" and not plan.fork and relay is None and stream is None,
        input_fd=stdin_fd if target.kind == "stdio" else None,
        answer_multicast=bool(plan.memberships),
        answer_broadcast=plan.send is not None and plan.send.broadcast,
        tap=tap,
        stream=stream,
        stop_after_session=one_session,
    )


def _resolve(target: Target, kind: int) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """The first address of ``target``'s host and port for ``kind`` (a datagram or a stream socket)."""
    assert target.host is not None and target.port is not None
    try:
        info = socket.getaddrinfo(target.host, target.port, target.family or 0, kind)[0]
    except (OSError, UnicodeError) as exc:
        raise UsageError(f"cannot resolve {target.host}: {exc}") from None
    return info[0], tuple(info[4])


def open_target(plan: SocatPlan) -> BinaryIO | None:
    """The file a plan's second address names, opened for appending (``CREATE:`` empties it first,
    ``OPEN:`` must exist); ``None`` when the target is not a file."""
    target = plan.target
    if target.kind != "file":
        return None
    assert target.path is not None
    return open_output(target.path, truncate=target.truncate, must_exist=target.must_exist, append=target.append,
                       exclusive=target.exclusive, **({} if target.perm is None else {"mode": target.perm}))
