"""Application protocols without sockets: responders that turn a datagram into replies.

Every responder is pure (sans-I/O): ``handle(datagram, peer, now)`` returns the bytes to send back —
one datagram, several, or ``None`` for silence — and never touches a socket or reads the clock.
The listener drives them; tests call them directly.
"""

from udpkit.services.base import Reply, Responder
from udpkit.services.registry import RESPONDERS, responder

__all__ = ["RESPONDERS", "Reply", "Responder", "responder"]
