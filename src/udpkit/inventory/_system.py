"""Small lookups in the local system databases that ``ss`` also consults: services, interfaces, cgroups.

Each is cached for the life of the process: a listing asks the same question thousands of times.
"""

from __future__ import annotations

import _socket  # not socket: see _netlink
import os

TYPE_CHECKING = False  # typing is not imported at run time: see udpkit._typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ParamSpec, TypeVar

    P = ParamSpec("P")
    R = TypeVar("R")

__all__ = [
    "cgroup2_mount",
    "cgroup_id_for_path",
    "cgroup_path_for_id",
    "ephemeral_port_range",
    "interface_name",
    "service_name",
]


def _cache(function: Callable[P, R]) -> Callable[P, R]:
    """``functools.cache``, without importing ``functools``: with the ``types`` it pulls in, that is
    ~2 ms of ``udpkit ss``'s start, and these lookups are each asked once per distinct value."""
    results: dict[Any, Any] = {}

    def cached(*args: P.args, **kwargs: P.kwargs) -> R:
        key = (args, *kwargs.items()) if kwargs else args
        try:
            return results[key]  # type: ignore[no-any-return]
        except KeyError:
            value = results[key] = function(*args, **kwargs)
            return value

    cached.__name__, cached.__qualname__, cached.__doc__ = function.__name__, function.__qualname__, function.__doc__
    cached.__module__, cached.__wrapped__ = function.__module__, function  # type: ignore[attr-defined]
    return cached


@_cache
def ephemeral_port_range(proc: str = "/proc") -> tuple[int, int]:
    """``/proc/sys/net/ipv4/ip_local_port_range`` as ``(low, high)``; ``ss`` never names ports in it."""
    try:
        with open(f"{proc}/sys/net/ipv4/ip_local_port_range", encoding="ascii") as fh:
            low, high = (int(x) for x in fh.read().split()[:2])
            return low, high
    except (OSError, ValueError):
        return 1024, 65535


@_cache
def service_name(port: int, protocol: str = "udp") -> str:
    """``123`` -> ``"ntp"`` from the services database, as ``ss`` without ``-n``; else the number.

    Port 0 is ``"*"``; ports in the ephemeral range are never looked up, as in ``ss``. ``protocol``
    is the table being listed (``"udp"`` or ``"tcp"``): ss names a port by its own protocol's entry.
    """
    if port == 0:
        return "*"
    low, high = ephemeral_port_range()
    if low <= port <= high:
        return str(port)
    try:
        return _socket.getservbyport(port, protocol)
    except OSError:
        return str(port)


@_cache
def interface_name(index: int) -> str | None:
    """``1`` -> ``"lo"``; 0 (not bound to a device) -> ``None``; a vanished index -> its number as text."""
    if not index:
        return None
    try:
        return _socket.if_indextoname(index)
    except OSError:
        return str(index)


@_cache
def cgroup2_mount() -> str | None:
    """Where the unified (v2) cgroup hierarchy is mounted, from ``/proc/self/mounts``."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return fields[1].replace("\\040", " ")
    except OSError:
        pass
    return None


@_cache
def _cgroup_index() -> dict[int, str]:
    mount = cgroup2_mount()
    index: dict[int, str] = {}
    if mount is None:
        return index
    for root, _dirs, _files in os.walk(mount):
        rel = os.path.relpath(root, mount)
        try:
            index.setdefault(os.stat(root).st_ino, "/" if rel == "." else "/" + rel)
        except OSError:
            continue
    return index


def cgroup_path_for_id(cgroup_id: int) -> str:
    """A cgroup v2 id -> its path (``"/"``, ``"/system.slice/ssh.service"``); unknown -> ``"unreachable:ID"`` as ss."""
    path = _cgroup_index().get(cgroup_id)
    return path if path is not None else f"unreachable:{cgroup_id:x}"


def cgroup_id_for_path(path: str) -> int | None:
    """``"/system.slice"`` -> the cgroup id (the directory's inode in the v2 hierarchy), or ``None``."""
    mount = cgroup2_mount()
    if mount is None:
        return None
    try:
        return os.stat(os.path.join(mount, path.lstrip("/"))).st_ino
    except OSError:
        return None
