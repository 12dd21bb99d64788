"""Service names and well-known ports -> responders (``--respond NAME``)."""

from __future__ import annotations

from collections.abc import Callable

from udpkit.errors import UsageError
from udpkit.services.base import Responder, ServiceProbe
from udpkit.services.classic import Daytime, DaytimeProbe, Discard, Echo, EchoProbe, Time, TimeProbe

__all__ = ["PORTS", "PROBES", "RESPONDERS", "probe_for", "responder"]

RESPONDERS: dict[str, Callable[[], Responder]] = {
    "discard": Discard,
    "echo": Echo,
    "daytime": Daytime,
    "time": Time,
}

#: The well-known port of each service (``/etc/services``).
PORTS = {"echo": 7, "discard": 9, "daytime": 13, "time": 37}


def responder(name: str) -> Responder:
    """A fresh responder for ``name``; an unknown name is a UsageError listing the known ones."""
    factory = RESPONDERS.get(name)
    if factory is None:
        raise UsageError(f"unknown service {name!r} (known: {', '.join(sorted(RESPONDERS))})")
    return factory()


#: Application probes by name (``udpkit probe --service NAME``); discard has none, as it never answers.
PROBES: dict[str, Callable[[], ServiceProbe]] = {
    "echo": EchoProbe,
    "daytime": DaytimeProbe,
    "time": TimeProbe,
}


def probe_for(service: str, port: int) -> ServiceProbe | None:
    """The probe ``--service`` asks for at ``port``: ``none`` -> ``None``; ``auto`` -> the probe of the
    service whose well-known port this is (``None`` if there is none); a name -> that probe."""
    if service == "none":
        return None
    if service == "auto":
        for name, known in PORTS.items():
            if known == port and name in PROBES:
                return PROBES[name]()
        return None
    factory = PROBES.get(service)
    if factory is None:
        raise UsageError(f"unknown service {service!r} (known: auto, none, {', '.join(sorted(PROBES))})")
    return factory()
