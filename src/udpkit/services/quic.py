"""QUIC (RFC 9000 §6, §17.2.1) probe: a padded Initial-sized long-header packet with a reserved
version (``0x?a?a?a?a`` greasing, RFC 9000 §15); a QUIC server answers with Version Negotiation,
echoing our connection IDs swapped and listing the versions it speaks."""

from __future__ import annotations

import os
import struct

from udpkit.services.base import Evidence
from udpkit.services.outstanding import Outstanding

__all__ = ["QuicProbe"]

_GREASE = 0x1A2A3A4A
_KNOWN = {0x00000001: "v1", 0x6B3343CF: "v2", 0xFF00001D: "draft-29"}


class QuicProbe:
    name = "quic"
    verifies = True  # only an answer to one of our own requests is accepted

    def __init__(self) -> None:
        self._dcids: Outstanding[bytes, None] = Outstanding()

    def build(self, now: float) -> bytes:
        dcid = os.urandom(8)
        self._dcids.remember(dcid)
        head = bytes([0xC0]) + struct.pack("!I", _GREASE) + bytes([len(dcid)]) + dcid + b"\x00"
        return head + b"\x00" * (1200 - len(head))  # servers ignore Initials under 1200 bytes

    def classify(self, reply: bytes, now: float) -> Evidence | None:
        if len(reply) < 7 or not reply[0] & 0x80 or struct.unpack_from("!I", reply, 1)[0] != 0:
            return None
        at = 5
        dcid_len = reply[at]
        at += 1 + dcid_len
        if at >= len(reply):
            return None
        scid_len = reply[at]
        scid = reply[at + 1:at + 1 + scid_len]
        at += 1 + scid_len
        if scid not in self._dcids or at > len(reply) or (len(reply) - at) % 4 or at == len(reply):
            return None
        versions = [struct.unpack_from("!I", reply, i)[0] for i in range(at, len(reply), 4)]
        return Evidence("quic", {"versions": [_KNOWN.get(v, f"0x{v:08x}") for v in versions]})
