"""Creating UDP services: what ``socat UDP4-LISTEN:123,fork /dev/null`` does, as a library.

A :class:`Listener` binds one socket per endpoint (both families for a bare port, as the tutorial's
two socat commands do), hands each datagram to a ``services`` responder and records it to a sink.
"""

from udpkit.listen.config import DEFAULT_BUSY_POLL_US, DEFAULT_IDLE_TIMEOUT, ListenerConfig, session_cap
from udpkit.listen.control import Workers, install_signals
from udpkit.listen.listener import Listener, ListenerStats
from udpkit.listen.privileges import drop_privileges, resolve_user
from udpkit.listen.sinks import FORMATS, Sink

__all__ = ["DEFAULT_BUSY_POLL_US", "DEFAULT_IDLE_TIMEOUT", "FORMATS", "Listener", "ListenerConfig", "ListenerStats",
           "Sink", "Workers", "drop_privileges", "install_signals", "resolve_user", "session_cap"]
