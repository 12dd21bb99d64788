"""memcached over UDP (protocol.txt, "UDP protocol") probe: ``stats`` in one frame; the answer
frames carry our request ID and ``STAT`` lines (version, pid, uptime)."""

from __future__ import annotations

import os
import struct

from udpkit.services.base import Evidence
from udpkit.services.outstanding import Outstanding

__all__ = ["MemcachedProbe"]

_FRAME = struct.Struct("!HHHH")  # request id, sequence, datagrams in all, reserved


class MemcachedProbe:
    name = "memcached"
    verifies = True  # only an answer to one of our own requests is accepted

    def __init__(self) -> None:
        self._ids: Outstanding[int, None] = Outstanding()

    def build(self, now: float) -> bytes:
        request = int.from_bytes(os.urandom(2), "big")
        self._ids.remember(request)
        return _FRAME.pack(request, 0, 1, 0) + b"stats\r\n"

    def classify(self, reply: bytes, now: float) -> Evidence | None:
        if len(reply) < _FRAME.size + 5:
            return None
        request, _seq, _total, _reserved = _FRAME.unpack_from(reply)
        body = reply[_FRAME.size:]
        if request not in self._ids or not body.startswith(b"STAT "):
            return None
        stats = {}
        for line in body.split(b"\r\n"):
            parts = line.split(b" ", 2)
            if len(parts) == 3 and parts[0] == b"STAT" and parts[1] in (b"version", b"pid", b"uptime"):
                stats[parts[1].decode()] = parts[2].decode("utf-8", "replace")
        return Evidence("memcached", stats)
