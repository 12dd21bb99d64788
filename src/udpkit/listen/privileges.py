"""Dropping root after binding: to a named user, keeping at most the one capability sessions need.

A session (``--fork``) binds a new socket to the listening port for each peer, so on a port below
``ip_unprivileged_port_start`` it needs ``CAP_NET_BIND_SERVICE`` after the drop too. Rather than
run as root or open no sessions at all, :func:`drop_privileges` can keep exactly that capability
(``PR_SET_KEEPCAPS`` across ``setuid``, then ``capset`` to it alone) and nothing else.
"""

from __future__ import annotations

import ctypes
import os
import pwd

from udpkit.errors import PermissionDenied, UdpkitError, UsageError

__all__ = ["CAP_NET_BIND_SERVICE", "drop_privileges", "resolve_user"]

CAP_NET_BIND_SERVICE = 10  # linux/capability.h
_PR_SET_KEEPCAPS = 8  # linux/prctl.h
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def resolve_user(name: str) -> pwd.struct_passwd:
    """The account ``--user`` names — checked before anything is bound: an empty or unknown name is
    a usage error, and so is asking while not root."""
    if not name:
        raise UsageError("--user needs a user name (an empty one would stay root)")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UsageError(f"--user {name}: no such user") from None
    if os.geteuid() != 0:
        raise PermissionDenied(f"--user {name}: only root can change user")
    return entry


def drop_privileges(entry: pwd.struct_passwd, *, keep_bind: bool = False) -> None:
    """Become ``entry``'s user and group, with no supplementary groups; ``keep_bind``: keep
    ``CAP_NET_BIND_SERVICE`` (and only it). Everything the caller still needs must be imported
    already: a Python installed where the user may not read (e.g. under /root) could not import it."""
    libc = ctypes.CDLL(None, use_errno=True) if keep_bind else None
    if libc is not None and libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
        raise UdpkitError(f"cannot keep CAP_NET_BIND_SERVICE: {os.strerror(ctypes.get_errno())}")
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    if libc is not None:
        header = _CapHeader(_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        data[0].effective = data[0].permitted = 1 << CAP_NET_BIND_SERVICE
        failed = libc.capset(ctypes.byref(header), data) != 0
        libc.prctl(_PR_SET_KEEPCAPS, 0, 0, 0, 0)
        if failed:
            raise UdpkitError(f"cannot keep CAP_NET_BIND_SERVICE: {os.strerror(ctypes.get_errno())}")
    if os.getuid() == 0 or os.geteuid() == 0:
        raise UdpkitError(f"still root after changing to {entry.pw_name}")
