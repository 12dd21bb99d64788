"""udpkit: create, examine and test UDP sockets on IPv4 and IPv6 — a library first, and the ``udpkit`` command.

Names are imported on first use (PEP 562) so that ``import udpkit`` and each command start fast.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: see udpkit._typing
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

__all__ = [
    "Endpoint",
    "Process",
    "SocketState",
    "SocketTable",
    "UdpSocket",
    "UdpkitError",
    "UsageError",
    "__version__",
    "list_udp_sockets",
    "probe",
    "scan_udp_sockets",
]

_LAZY = {
    "Endpoint": "udpkit.addr",
    "Process": "udpkit.inventory",
    "SocketState": "udpkit.inventory",
    "SocketTable": "udpkit.inventory",
    "UdpSocket": "udpkit.inventory",
    "UdpkitError": "udpkit.errors",
    "UsageError": "udpkit.errors",
    "list_udp_sockets": "udpkit.inventory",
    "scan_udp_sockets": "udpkit.inventory",
}

if TYPE_CHECKING:
    from udpkit.addr import Endpoint
    from udpkit.errors import UdpkitError, UsageError
    from udpkit.inventory import (
        Process,
        SocketState,
        SocketTable,
        UdpSocket,
        list_udp_sockets,
        scan_udp_sockets,
    )


def __getattr__(name: str) -> Any:
    if name == "probe":  # the package itself, which is callable: udpkit.probe("::1", "123")
        import importlib

        return importlib.import_module("udpkit.probe")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'udpkit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
