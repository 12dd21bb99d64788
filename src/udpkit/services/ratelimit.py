"""Per-client response rate limiting for the responders, without clocks: ``now`` is passed in.

A token bucket per client address (``rate`` answers a second, a burst of twice that), remembering
at most 65,536 clients (the least recently seen is forgotten first) so a spoofed flood cannot grow
it without bound.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["ClientLimiter"]

_MAX_CLIENTS = 65536


class ClientLimiter:
    """``admit(ip, now)``: may this client be answered now? ``notice(ip, now)``: when it may not, may
    it be told so (at most once a second, as NTP's kiss-o'-death should be)?"""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, 2 * rate)
        self._clients: OrderedDict[str, list[float]] = OrderedDict()  # ip -> [tokens, last, last notice]

    def _bucket(self, ip: str, now: float) -> list[float]:
        bucket = self._clients.get(ip)
        if bucket is None:
            bucket = self._clients[ip] = [self.burst, now, float("-inf")]
            if len(self._clients) > _MAX_CLIENTS:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(ip)
        return bucket

    def admit(self, ip: str, now: float) -> bool:
        bucket = self._bucket(ip, now)
        bucket[0] = min(self.burst, bucket[0] + max(0.0, now - bucket[1]) * self.rate)
        bucket[1] = now
        if bucket[0] >= 1:
            bucket[0] -= 1
            return True
        return False

    def notice(self, ip: str, now: float) -> bool:
        bucket = self._bucket(ip, now)
        if now - bucket[2] >= 1.0:
            bucket[2] = now
            return True
        return False
