"""NetBIOS name service (RFC 1002 §4.2.17) probe: a node status request for ``*``; the answer lists
the host's NetBIOS names (computer, workgroup) and its MAC address."""

from __future__ import annotations

import os
import struct

from udpkit.services.base import Evidence
from udpkit.services.outstanding import Outstanding

__all__ = ["NetbiosProbe"]

_STAR = b"\x20" + b"CK" + b"A" * 30 + b"\x00"  # "*" then 15 NULs, first-level encoded


class NetbiosProbe:
    name = "netbios-ns"
    verifies = True  # only an answer to one of our own requests is accepted

    def __init__(self) -> None:
        self._ids: Outstanding[int, None] = Outstanding()

    def build(self, now: float) -> bytes:
        ident = int.from_bytes(os.urandom(2), "big")
        self._ids.remember(ident)
        return struct.pack("!HHHHHH", ident, 0, 1, 0, 0, 0) + _STAR + struct.pack("!HH", 0x21, 1)

    def classify(self, reply: bytes, now: float) -> Evidence | None:
        if len(reply) < 12 + len(_STAR) + 10 + 1:
            return None
        ident, flags, _qd, answers, _ns, _ar = struct.unpack_from("!HHHHHH", reply)
        if ident not in self._ids or not flags & 0x8000 or answers < 1:
            return None
        at = 12 + len(_STAR)
        rtype, _rclass, _ttl, rdlength = struct.unpack_from("!HHIH", reply, at)
        at += 10
        if rtype != 0x21 or at + rdlength > len(reply) or rdlength < 1:
            return None
        count = reply[at]
        names = []
        for i in range(count):
            start = at + 1 + 18 * i
            if start + 18 > at + rdlength:
                return None
            raw, suffix, name_flags = reply[start:start + 15], reply[start + 15], struct.unpack_from("!H", reply, start + 16)[0]
            names.append(f"{raw.decode('ascii', 'replace').rstrip()}<{suffix:02x}>{' group' if name_flags & 0x8000 else ''}")
        mac_at = at + 1 + 18 * count
        mac = reply[mac_at:mac_at + 6].hex(":") if mac_at + 6 <= at + rdlength else None
        return Evidence("netbios-ns", {"names": names, "mac": mac})
