"""The exceptions udpkit raises, and what each one means for the caller.

The library never prints and never exits: a failure the caller can act on is raised as one of these,
and the command line maps them to exit codes (``UsageError`` → 2, the rest → 1). Expected network
outcomes — a closed port, a timeout, an ICMP error — are results, never exceptions.

    UdpkitError
    ├── UsageError            the caller's fault: a bad address, flag, filter or port
    ├── ParseError            a peer's or the kernel's bytes were malformed
    ├── PermissionDenied      the kernel refused for lack of privilege (e.g. port < 1024)
    └── BackendUnavailable    a data source cannot be used here (e.g. netlink refused)
"""

from __future__ import annotations

__all__ = ["BackendUnavailable", "ParseError", "PermissionDenied", "UdpkitError", "UsageError"]


class UdpkitError(Exception):
    """Base of every error udpkit raises on purpose; its message is one line meant for a person."""


class UsageError(UdpkitError):
    """The caller asked for something malformed: an unknown flag, a bad address, a port out of range."""


class ParseError(UdpkitError):
    """Bytes that came from outside (a datagram, a kernel message, a /proc file) did not parse."""


class PermissionDenied(UdpkitError):
    """The operation needs a privilege this process does not have."""


class BackendUnavailable(UdpkitError):
    """A way of reading kernel state is not available here (refused, missing, or unsupported)."""
