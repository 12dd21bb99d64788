"""``SocketState``: the kernel's socket states as an ``IntEnum``, the typed view of the numbers in
:mod:`udpkit.inventory._records`.

Its own module, imported on first use (``udpkit.inventory`` names it lazily): ``enum`` and the class
cost ~5 ms of a start, and ``udpkit ss`` never needs them — it works on the numbers.
"""

from __future__ import annotations

from enum import IntEnum
from udpkit.inventory import _records as _r

__all__ = ["SocketState"]


class SocketState(IntEnum):
    """The kernel's ``sk_state`` (``include/net/tcp_states.h``); UDP uses only ESTABLISHED and CLOSE."""

    UNKNOWN = _r.UNKNOWN
    ESTABLISHED = _r.ESTABLISHED
    SYN_SENT = _r.SYN_SENT
    SYN_RECV = _r.SYN_RECV
    FIN_WAIT1 = _r.FIN_WAIT1
    FIN_WAIT2 = _r.FIN_WAIT2
    TIME_WAIT = _r.TIME_WAIT
    CLOSE = _r.CLOSE
    CLOSE_WAIT = _r.CLOSE_WAIT
    LAST_ACK = _r.LAST_ACK
    LISTEN = _r.LISTEN
    CLOSING = _r.CLOSING

    @property
    def label(self) -> str:
        """The name ``ss`` prints: ``ESTAB`` for a connected UDP socket, ``UNCONN`` for an unconnected one."""
        return _r.STATE_LABELS[self]
