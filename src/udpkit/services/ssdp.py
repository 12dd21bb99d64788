"""SSDP (UPnP Device Architecture 2.0 §1.3.2) probe: a unicast ``M-SEARCH``; the answer is an HTTP
``200 OK`` over UDP naming the device's description ``LOCATION``, ``SERVER`` and ``ST``."""

from __future__ import annotations

from udpkit.services.base import Evidence

__all__ = ["SsdpProbe"]

_SEARCH = ("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n"
           "MX: 1\r\nST: {st}\r\nUSER-AGENT: udpkit/0.1 UPnP/2.0\r\n\r\n")


class SsdpProbe:
    """``st``: the search target (``ssdp:all``, ``upnp:rootdevice``, a device or service type URN)."""

    name = "ssdp"
    verifies = False  # the answer carries nothing of the request

    def __init__(self, st: str = "ssdp:all") -> None:
        if not st or any(c in st for c in "\r\n") or len(st) > 200:
            raise ValueError("a search target is one line of at most 200 characters")
        self.st = st

    def build(self, now: float) -> bytes:
        return _SEARCH.format(st=self.st).encode()

    def classify(self, reply: bytes, now: float) -> Evidence | None:
        head, _, _ = reply.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if not lines or not lines[0].upper().startswith(b"HTTP/1.1 200"):
            return None
        headers = {}
        for line in lines[1:]:
            key, sep, value = line.partition(b":")
            if sep:
                headers[key.strip().lower().decode("ascii", "replace")] = value.strip().decode("utf-8", "replace")
        if "st" not in headers and "usn" not in headers:
            return None
        return Evidence("ssdp", {k: headers[k] for k in ("server", "location", "st", "usn") if k in headers})
