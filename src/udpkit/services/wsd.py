"""WS-Discovery (OASIS WS-Discovery 1.1, the 2005/04 draft Windows speaks) probe: a SOAP ``Probe`` for
devices (``wsdp:Device``) with a fresh ``MessageID``; a ``ProbeMatches`` answer ``RelatesTo`` it,
so an answer to someone else's probe is refused. It reports the endpoint's address (a ``urn:uuid``),
its types (``pub:Computer``: a Windows or Samba host) and its transport addresses when given.

The answer is XML from the network: it is read with bounded regular expressions over at most 64 KiB,
never handed to an XML parser (no entity expansion, no DTD to fetch).
"""

from __future__ import annotations

import re
import uuid

from udpkit.services.base import Evidence
from udpkit.services.outstanding import Outstanding

__all__ = ["WsdProbe"]

_PROBE = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"'
    ' xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing"'
    ' xmlns:wsd="http://schemas.xmlsoap.org/ws/2005/04/discovery"'
    ' xmlns:wsdp="http://schemas.xmlsoap.org/ws/2006/02/devprof">'
    "<soap:Header><wsa:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</wsa:To>"
    "<wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</wsa:Action>"
    "<wsa:MessageID>{message_id}</wsa:MessageID></soap:Header>"
    "<soap:Body><wsd:Probe><wsd:Types>wsdp:Device</wsd:Types></wsd:Probe></soap:Body></soap:Envelope>"
)
_LIMIT = 1 << 16


def _element(name: str) -> re.Pattern[bytes]:
    """The text of the first ``<prefix:name …>text</prefix:name>``, whatever the prefix."""
    return re.compile(rb"<(?:[A-Za-z_][\w.-]{0,31}:)?" + name.encode() + rb"(?:\s[^>]{0,512})?>([^<]{0,2048})</", re.S)


_RELATES_TO = _element("RelatesTo")
_ACTION = _element("Action")
_ADDRESS = _element("Address")
_TYPES = _element("Types")
_XADDRS = _element("XAddrs")


class WsdProbe:
    name = "wsd"
    verifies = True  # RelatesTo must name one of our own MessageIDs

    def __init__(self) -> None:
        self._ids: Outstanding[str, None] = Outstanding()

    def build(self, now: float) -> bytes:
        message_id = f"urn:uuid:{uuid.uuid4()}"
        self._ids.remember(message_id)
        return _PROBE.format(message_id=message_id).encode()

    def classify(self, reply: bytes, now: float) -> Evidence | None:
        if len(reply) > _LIMIT or b"<!" in reply:  # no DTDs, no entities: a device never sends them
            return None
        relates = _RELATES_TO.search(reply)
        action = _ACTION.search(reply)
        if relates is None or action is None or not action.group(1).strip().endswith(b"/ProbeMatches"):
            return None
        if relates.group(1).strip().decode("ascii", "replace") not in self._ids:
            return None
        detail: dict[str, object] = {}
        for key, pattern in (("endpoint", _ADDRESS), ("types", _TYPES), ("xaddrs", _XADDRS)):
            found = pattern.search(reply)
            if found is not None:
                detail[key] = found.group(1).strip().decode("utf-8", "replace")
        return Evidence("wsd", detail)
