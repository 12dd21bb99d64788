"""STUN (RFC 8489) probe: a Binding request; a success response with our transaction ID carries
the address the server saw us at (``XOR-MAPPED-ADDRESS``) and often its ``SOFTWARE``."""

from __future__ import annotations

import ipaddress
import os
import struct

from udpkit.services.base import Evidence
from udpkit.services.outstanding import Outstanding

__all__ = ["StunProbe"]

COOKIE = 0x2112A442


class StunProbe:
    name = "stun"
    verifies = True  # only an answer to one of our own requests is accepted

    def __init__(self) -> None:
        self._ids: Outstanding[bytes, None] = Outstanding()

    def build(self, now: float) -> bytes:
        transaction = os.urandom(12)
        self._ids.remember(transaction)
        return struct.pack("!HHI", 0x0001, 0, COOKIE) + transaction

    def classify(self, reply: bytes, now: float) -> Evidence | None:
        if len(reply) < 20:
            return None
        kind, length, cookie = struct.unpack_from("!HHI", reply)
        transaction = reply[8:20]
        if cookie != COOKIE or transaction not in self._ids or kind not in (0x0101, 0x0111) or 20 + length > len(reply):
            return None
        detail: dict[str, object] = {"success": kind == 0x0101}
        at = 20
        while at + 4 <= 20 + length:
            attr, size = struct.unpack_from("!HH", reply, at)
            value = reply[at + 4:at + 4 + size]
            if len(value) < size:
                return None
            if attr == 0x0020 and size >= 8:  # XOR-MAPPED-ADDRESS
                family, xport = value[1], struct.unpack_from("!H", value, 2)[0] ^ (COOKIE >> 16)
                key = struct.pack("!I", COOKIE) + transaction
                raw = bytes(a ^ b for a, b in zip(value[4:], key))
                if family == 1 and size >= 8:
                    detail["mapped"] = f"{ipaddress.IPv4Address(raw[:4])}:{xport}"
                elif family == 2 and size >= 20:
                    detail["mapped"] = f"[{ipaddress.IPv6Address(raw[:16])}]:{xport}"
            elif attr == 0x8022:  # SOFTWARE
                detail["software"] = value.decode("utf-8", "replace")
            at += 4 + size + (-size % 4)
        return Evidence("stun", detail)
