"""SNMP v2c (RFC 3416) probe: ``get sysDescr.0`` with the community ``public``, in hand-rolled BER
(a few bytes of ASN.1; no SNMP library is worth the dependency for one request)."""

from __future__ import annotations

import os

from udpkit.services.base import Evidence
from udpkit.services.outstanding import Outstanding

__all__ = ["SnmpProbe", "ber_items"]

SYS_DESCR = bytes([0x2B, 6, 1, 2, 1, 1, 1, 0])  # 1.3.6.1.2.1.1.1.0


def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    length = bytes([n]) if n < 128 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + value


def ber_items(data: bytes) -> list[tuple[int, bytes]] | None:
    """The TLVs of ``data`` in order (definite lengths only); ``None`` unless they cover it exactly."""
    items, at = [], 0
    while at < len(data):
        if at + 2 > len(data):
            return None
        tag, first = data[at], data[at + 1]
        at += 2
        if first < 128:
            length = first
        else:
            count = first & 0x7F
            if not 0 < count <= 4 or at + count > len(data):
                return None
            length = int.from_bytes(data[at:at + count], "big")
            at += count
        if at + length > len(data):
            return None
        items.append((tag, data[at:at + length]))
        at += length
    return items


class SnmpProbe:
    name = "snmp"
    verifies = True  # only an answer to one of our own requests is accepted

    def __init__(self, community: bytes = b"public") -> None:
        self.community = community
        self._ids: Outstanding[int, None] = Outstanding()

    def build(self, now: float) -> bytes:
        request_id = int.from_bytes(os.urandom(3), "big")
        self._ids.remember(request_id)
        varbind = _tlv(0x30, _tlv(0x06, SYS_DESCR) + b"\x05\x00")
        pdu = _tlv(0xA0, _tlv(0x02, request_id.to_bytes(4, "big")) + b"\x02\x01\x00\x02\x01\x00" + _tlv(0x30, varbind))
        return _tlv(0x30, b"\x02\x01\x01" + _tlv(0x04, self.community) + pdu)

    def classify(self, reply: bytes, now: float) -> Evidence | None:
        outer = ber_items(reply)
        if not outer or len(outer) != 1 or outer[0][0] != 0x30:
            return None
        fields = ber_items(outer[0][1])
        if not fields or len(fields) != 3 or fields[0][0] != 0x02 or fields[1][0] != 0x04 or fields[2][0] != 0xA2:
            return None
        pdu = ber_items(fields[2][1])
        if not pdu or len(pdu) != 4 or pdu[0][0] != 0x02 or int.from_bytes(pdu[0][1], "big") not in self._ids:
            return None
        detail: dict[str, object] = {"version": "2c" if fields[0][1] == b"\x01" else fields[0][1].hex(),
                                     "error_status": int.from_bytes(pdu[1][1], "big")}
        binds = ber_items(pdu[3][1]) or []
        for _tag, bind in binds:
            pair = ber_items(bind)
            if pair and len(pair) == 2 and pair[0][1] == SYS_DESCR and pair[1][0] == 0x04:
                detail["sysDescr"] = pair[1][1].decode("utf-8", "replace")
        return Evidence("snmp", detail)
