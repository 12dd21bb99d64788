"""Per-client response rate limiting for the responders, without clocks: ``now`` is passed in.

Two accounts per client address, each table remembering at most 16,384 clients (the least recently
seen is forgotten first) so a spoofed flood cannot grow it without bound:

- :class:`ClientLimiter`, a token bucket (``rate`` answers a second, a burst of twice that): the
  reply budget of the classic services and NTP's kiss-o'-death trigger. Every answer spends a token,
  so a ping-pong between two services (one forged datagram bouncing as fast as both can answer)
  runs out of tokens within milliseconds, one datagram goes unanswered, and the loop is over.
- :class:`ResponseRateLimiter`, in the manner of BIND's RRL: every request is debited, answered
  or not, and the account may fall to ``-window × rate``, so a client that keeps asking faster
  than ``rate`` gets nothing but, every ``slip``-th time, a small truncated answer (a real client
  then retries over TCP; a spoofed victim gets no more bytes than the attacker sent).
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["ClientLimiter", "ResponseRateLimiter", "Verdict"]

_MAX_CLIENTS = 16384  # at ~250 bytes each, about 4 MiB at most


class _Table:
    """The per-client accounts, least recently seen first, at most ``_MAX_CLIENTS`` of them."""

    def __init__(self, fresh: float, extra: float) -> None:
        self._fresh, self._extra = fresh, extra
        # ip -> [balance, last time, one more number: the limiter's own (last notice, or limited count)]
        self._clients: OrderedDict[str, list[float]] = OrderedDict()

    def account(self, ip: str, now: float) -> list[float]:
        account = self._clients.get(ip)
        if account is None:
            account = self._clients[ip] = [self._fresh, now, self._extra]
            if len(self._clients) > _MAX_CLIENTS:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(ip)
        return account

    def __len__(self) -> int:
        return len(self._clients)


class ClientLimiter:
    """``admit(ip, now)``: may this client be answered now? ``notice(ip, now)``: when it may not, may
    it be told so (at most once a second, as NTP's kiss-o'-death should be)?"""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, 2 * rate)
        self._table = _Table(self.burst, float("-inf"))  # the third number: when the client was last told

    def admit(self, ip: str, now: float) -> bool:
        bucket = self._table.account(ip, now)
        bucket[0] = min(self.burst, bucket[0] + max(0.0, now - bucket[1]) * self.rate)
        bucket[1] = now
        if bucket[0] >= 1:
            bucket[0] -= 1
            return True
        return False

    def notice(self, ip: str, now: float) -> bool:
        bucket = self._table.account(ip, now)
        if now - bucket[2] >= 1.0:
            bucket[2] = now
            return True
        return False


#: What :meth:`ResponseRateLimiter.decide` says of one request.
Verdict = str  # "answer", "slip" (a truncated answer) or "drop"


class ResponseRateLimiter:
    """BIND's response rate limiting, per client address: ``rate`` answers a second (a client at or
    below it is never limited; a burst of ``rate / 4``, at least 2, absorbs its jitter), every
    request debited, the debt capped at ``window`` seconds' worth, and every ``slip``-th limited
    request answered truncated (``slip=0``: never)."""

    def __init__(self, rate: float, *, slip: int = 2, window: float = 15.0) -> None:
        self.rate, self.slip = rate, slip
        self.burst = max(2.0, rate / 4)
        self.floor = -window * rate
        self._table = _Table(self.burst, 0.0)  # the third number: the client's limited requests

    def decide(self, ip: str, now: float) -> Verdict:
        account = self._table.account(ip, now)
        balance = min(self.burst, account[0] + max(0.0, now - account[1]) * self.rate) - 1
        account[0], account[1] = max(self.floor, balance), now
        if balance >= 0:
            return "answer"
        account[2] += 1
        return "slip" if self.slip and account[2] % self.slip == 0 else "drop"
